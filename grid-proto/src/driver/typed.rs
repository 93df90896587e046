//! Typed handlers and calls: serde types encoded with rmp-serde as Go's msgp
//! encodes structs (maps keyed by field name), so a Rust typed handler and a
//! Go typed handler interoperate.
//!
//! Field names must match the Go struct's msgp names (use
//! `#[serde(rename = "...")]`), and byte fields must be serialized as msgpack
//! `bin` (use [`bytes::Bytes`] or `serde_bytes`), as Go's `[]byte` is.
//! Integers may be encoded in a different width than msgp picks; both
//! decoders accept every width.
//!
//! ```
//! # fn demo<R: grid_proto::driver::Runtime>(manager: &grid_proto::driver::Manager<R>) {
//! use grid_proto::HandlerId;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct DiskInfoReq {
//!     #[serde(rename = "DiskID")]
//!     disk_id: String,
//! }
//! #[derive(Serialize, Deserialize)]
//! struct DiskInfo {
//!     #[serde(rename = "Total")]
//!     total: u64,
//! }
//! manager
//!     .register_typed(HandlerId(9), Some("/data1"), |req: DiskInfoReq| async move {
//!         let _ = req.disk_id;
//!         Ok(DiskInfo { total: 1 << 40 })
//!     })
//!     .unwrap();
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Capacities;
use crate::driver::conn::{Connection, StreamOptions};
use crate::driver::manager::Manager;
use crate::driver::registry::{RegisterError, RemoteError};
use crate::driver::runtime::Runtime;
use crate::driver::stream::{StreamReceiver, StreamSender};
use crate::error::{CallError, SendError};
use crate::handler::HandlerId;

/// Go's `MSS`: a map of strings (nil encodes as msgpack nil: use
/// `Option<Mss>` where Go may send nil).
pub type Mss = HashMap<String, String>;

/// Why a typed call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypedError {
    /// The call itself failed (locally or remotely).
    Call(CallError),
    /// The request could not be encoded.
    Encode(String),
    /// The response could not be decoded.
    Decode(String),
}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedError::Call(e) => e.fmt(f),
            TypedError::Encode(e) => write!(f, "encoding the request: {e}"),
            TypedError::Decode(e) => write!(f, "decoding the response: {e}"),
        }
    }
}

impl std::error::Error for TypedError {}

impl From<CallError> for TypedError {
    fn from(e: CallError) -> Self {
        TypedError::Call(e)
    }
}

/// Encodes `value` as msgp does (structs as maps keyed by field name).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, String> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// Decodes a msgpack value (maps or arrays for structs).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

impl<R: Runtime> Manager<R> {
    /// Registers a typed single-request handler. A request that does not
    /// decode is answered with a remote error carrying the decode error, as
    /// in Go.
    pub fn register_typed<Req, Resp, F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<&str>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RemoteError>> + Send + 'static,
    {
        let f = std::sync::Arc::new(f);
        let wrapped = move |payload: Bytes| {
            let f = std::sync::Arc::clone(&f);
            async move {
                let req: Req = decode(&payload).map_err(RemoteError)?;
                let resp = f(req).await?;
                encode(&resp).map_err(RemoteError)
            }
        };
        match subroute {
            Some(s) => self.register_single_subroute(handler, s, wrapped),
            None => self.register_single(handler, wrapped),
        }
    }

    /// Registers a typed stream handler: `P` is the initial payload, `In`
    /// the caller's messages (none when `capacities.in_capacity` is 0),
    /// `Out` the handler's.
    pub fn register_typed_stream<P, In, Out, F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<&str>,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        P: DeserializeOwned + Send + 'static,
        In: DeserializeOwned + Send + 'static,
        Out: Serialize + Send + 'static,
        F: Fn(P, Option<TypedReceiver<In>>, TypedSender<Out>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let f = std::sync::Arc::new(f);
        let wrapped = move |call: crate::driver::registry::StreamCall| {
            let f = std::sync::Arc::clone(&f);
            async move {
                let payload = call.payload.unwrap_or_default();
                let p: P = decode(&payload).map_err(RemoteError)?;
                let input = call.input.map(TypedReceiver::new);
                f(p, input, TypedSender::new(call.output)).await
            }
        };
        match subroute {
            Some(s) => self.register_stream_subroute(handler, s, capacities, wrapped),
            None => self.register_stream(handler, capacities, wrapped),
        }
    }
}

impl Connection {
    /// A typed single request.
    pub async fn call<Req, Resp>(
        &self,
        handler: HandlerId,
        request: &Req,
    ) -> Result<Resp, TypedError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = encode(request).map_err(TypedError::Encode)?;
        let answer = self.request(handler, payload).await?;
        decode(&answer).map_err(TypedError::Decode)
    }

    /// Opens a typed stream.
    pub async fn open_typed_stream<P, In, Out>(
        &self,
        handler: HandlerId,
        payload: &P,
        options: StreamOptions,
    ) -> Result<(TypedSender<In>, TypedReceiver<Out>), TypedError>
    where
        P: Serialize + ?Sized,
        In: Serialize,
        Out: DeserializeOwned,
    {
        let payload = encode(payload).map_err(TypedError::Encode)?;
        let (tx, rx) = self
            .open_stream_with(handler, Some(payload), options)
            .await?;
        Ok((TypedSender::new(tx), TypedReceiver::new(rx)))
    }
}

/// A [`StreamSender`] of msgpack-encoded `T`.
#[derive(Debug)]
pub struct TypedSender<T> {
    inner: StreamSender,
    _type: PhantomData<fn(T)>,
}

impl<T: Serialize> TypedSender<T> {
    /// Wraps a raw sender.
    pub fn new(inner: StreamSender) -> Self {
        TypedSender {
            inner,
            _type: PhantomData,
        }
    }

    /// Encodes and sends one message, waiting for room.
    pub async fn send(&mut self, value: &T) -> Result<(), TypedError> {
        let bytes = encode(value).map_err(TypedError::Encode)?;
        self.inner.send(bytes).await.map_err(|e| match e {
            SendError::TooLarge { size, max } => {
                TypedError::Call(CallError::TooLarge { size, max })
            }
            _ => TypedError::Call(CallError::Disconnected),
        })
    }

    /// Ends this direction.
    pub fn close(self) {
        self.inner.close();
    }

    /// The raw sender.
    pub fn into_inner(self) -> StreamSender {
        self.inner
    }
}

/// A [`StreamReceiver`] of msgpack-encoded `T`.
#[derive(Debug)]
pub struct TypedReceiver<T> {
    inner: StreamReceiver,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> TypedReceiver<T> {
    /// Wraps a raw receiver.
    pub fn new(inner: StreamReceiver) -> Self {
        TypedReceiver {
            inner,
            _type: PhantomData,
        }
    }

    /// The next decoded message; `None` after the end.
    pub async fn recv(&mut self) -> Option<Result<T, TypedError>> {
        let item = self.inner.recv().await?;
        Some(match item {
            Ok(bytes) => decode(&bytes).map_err(TypedError::Decode),
            Err(e) => Err(TypedError::Call(e)),
        })
    }

    /// The raw receiver.
    pub fn into_inner(self) -> StreamReceiver {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Req {
        #[serde(rename = "Bucket")]
        bucket: String,
        #[serde(rename = "N")]
        n: u32,
    }

    #[test]
    fn structs_encode_as_maps_keyed_by_field_name() {
        let bytes = encode(&Req {
            bucket: "b1".into(),
            n: 5,
        })
        .unwrap();
        // 82 a6 "Bucket" a2 "b1" a1 "N" 05: what msgp writes for the same struct.
        assert_eq!(&bytes[..], b"\x82\xa6Bucket\xa2b1\xa1N\x05");
        assert_eq!(
            decode::<Req>(&bytes).unwrap(),
            Req {
                bucket: "b1".into(),
                n: 5
            }
        );
    }

    #[test]
    fn mss_matches_the_transcript_request() {
        // typed-mss.jsonl: the Go caller's payload {"bucket":"b1","object":"o/1"}.
        let go = b"\x82\xa6bucket\xa2b1\xa6object\xa3o/1";
        let m: Mss = decode(go).unwrap();
        assert_eq!(m["bucket"], "b1");
        assert_eq!(m["object"], "o/1");
        let nil: Option<Mss> = decode(b"\xc0").unwrap();
        assert_eq!(nil, None);
    }
}
