//! Handler descriptors: a handler id bound once to the types it carries
//! ([`SingleHandler`], [`StreamHandler`]).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::capacities::Capacities;
use crate::driver::conn::{Connection, StreamOptions};
use crate::driver::context::HandlerContext;
use crate::driver::manager::Manager;
use crate::driver::message::{GridMessage, NoInput};
use crate::driver::registry::{RegisterError, RemoteError, StreamCall};
use crate::driver::runtime::Runtime;
use crate::driver::typed::{TypedError, TypedReceiver, TypedSender};
use crate::handler::HandlerId;
use crate::subroute::Subroute;

/// A single-request handler: id `id` takes a `Req` and answers a `Resp`,
/// like Go's `SingleHandler[Req, Resp]`.
///
/// A descriptor binds a handler id once to the types it carries (Go's
/// `SingleHandler[Req, Resp]` and `StreamTypeHandler[Payload, Req, Resp]`).
/// Declare one as a constant, next to the types, and use it on both sides:
/// [`register`](Self::register) on the serving node, [`call`](Self::call) on
/// the calling one. The types travel as [`GridMessage`]s (any serde type,
/// encoded as Go's msgp does, or [`NoPayload`](crate::driver::NoPayload)),
/// so a Rust node serves and calls Go's typed handlers.
///
/// ```
/// use std::collections::HashMap;
///
/// use grid_proto::HandlerId;
/// use grid_proto::driver::{
///     Connection, Manager, Mss, NoInput, NoPayload, RemoteError, Runtime, SingleHandler,
///     StreamHandler, TypedError,
/// };
/// use serde::{Deserialize, Serialize};
///
/// /// A msgp struct: field names are Go's `msg:"..."` tags.
/// #[derive(Serialize, Deserialize)]
/// pub struct DiskInfoReq {
///     #[serde(rename = "id")]
///     pub disk_id: String,
/// }
/// #[derive(Serialize, Deserialize)]
/// pub struct DiskInfo {
///     #[serde(rename = "t")]
///     pub total: u64,
/// }
///
/// pub const DISK_INFO: SingleHandler<DiskInfoReq, DiskInfo> =
///     SingleHandler::new(HandlerId::DISK_INFO);
/// /// Go's `NoPayload` response: zero bytes on the wire.
/// pub const WRITE_ALL: SingleHandler<Mss, NoPayload> = SingleHandler::new(HandlerId::WRITE_ALL);
/// /// A stream without input: the handler only answers.
/// pub const LISTEN: StreamHandler<Mss, NoInput, Mss> = StreamHandler::new(HandlerId::LISTEN);
///
/// fn serve<R: Runtime>(manager: &Manager<R>) -> Result<(), grid_proto::driver::RegisterError> {
///     // Registered per drive, as MinIO does.
///     DISK_INFO.register_subroute(manager, "/data1", |ctx, req| async move {
///         let _asked_by = ctx.caller();
///         let _ = req.disk_id;
///         Ok(DiskInfo { total: 1 << 40 })
///     })?;
///     WRITE_ALL.register(manager, |_ctx, req| async move {
///         if req.contains_key("k") {
///             Ok(NoPayload)
///         } else {
///             Err(RemoteError::new("missing k"))
///         }
///     })?;
///     LISTEN.register(manager, |_ctx, filter, mut out| async move {
///         for event in ["created", "deleted"] {
///             let mut m = filter.clone();
///             m.insert("event".into(), event.into());
///             out.send(&m).await?;
///         }
///         Ok(())
///     })
/// }
///
/// async fn use_them(peer: &Connection) -> Result<(), TypedError> {
///     let info = DISK_INFO
///         .call(&peer.subroute("/data1"), &DiskInfoReq { disk_id: "d1".into() })
///         .await?;
///     let _ = info.total;
///     WRITE_ALL.call(peer, &HashMap::from([("k".into(), "v".into())])).await?;
///     let mut events = LISTEN.call(peer, &Mss::new()).await?;
///     while let Some(event) = events.recv().await {
///         let _ = event?;
///     }
///     Ok(())
/// }
/// ```
///
/// Types are checked where the descriptor is used. A request of another
/// type does not compile:
///
/// ```compile_fail
/// # use grid_proto::HandlerId;
/// # use grid_proto::driver::{Connection, Mss, NoPayload, SingleHandler, TypedError};
/// const WRITE_ALL: SingleHandler<Mss, NoPayload> = SingleHandler::new(HandlerId::WRITE_ALL);
/// async fn wrong(peer: &Connection) -> Result<(), TypedError> {
///     WRITE_ALL.call(peer, &String::from("k")).await?;
///     Ok(())
/// }
/// ```
///
/// nor does expecting another response type:
///
/// ```compile_fail
/// # use grid_proto::HandlerId;
/// # use grid_proto::driver::{Connection, Mss, NoPayload, SingleHandler, TypedError};
/// const WRITE_ALL: SingleHandler<Mss, NoPayload> = SingleHandler::new(HandlerId::WRITE_ALL);
/// async fn wrong(peer: &Connection) -> Result<(), TypedError> {
///     let answer: Mss = WRITE_ALL.call(peer, &Mss::new()).await?;
///     Ok(())
/// }
/// ```
///
/// nor a handler that answers with another type:
///
/// ```compile_fail
/// # use grid_proto::HandlerId;
/// # use grid_proto::driver::{Manager, Mss, NoPayload, Runtime, SingleHandler};
/// const WRITE_ALL: SingleHandler<Mss, NoPayload> = SingleHandler::new(HandlerId::WRITE_ALL);
/// fn wrong<R: Runtime>(manager: &Manager<R>) {
///     let _ = WRITE_ALL.register(manager, |_ctx, req| async move { Ok(req) });
/// }
/// ```
///
/// nor sending input to a stream that takes none:
///
/// ```compile_fail
/// # use grid_proto::HandlerId;
/// # use grid_proto::driver::{Connection, Mss, NoInput, StreamHandler, TypedError};
/// const LISTEN: StreamHandler<Mss, NoInput, Mss> = StreamHandler::new(HandlerId::LISTEN);
/// async fn wrong(peer: &Connection) -> Result<(), TypedError> {
///     let (mut tx, _rx) = LISTEN.call(peer, &Mss::new()).await?;
///     tx.send(&Mss::new()).await?;
///     Ok(())
/// }
/// ```
pub struct SingleHandler<Req, Resp> {
    id: HandlerId,
    _types: PhantomData<fn(Req) -> Resp>,
}

/// A stream handler: id `id` opened with a `P` payload takes `In` messages
/// and answers `Out` messages (Go's `StreamTypeHandler[Payload, Req,
/// Resp]`), with its capacities. With [`NoInput`] as `In` the stream takes
/// no input (`InCapacity` 0, Go's `RegisterNoInput`); with
/// [`NoPayload`](crate::driver::NoPayload) as `P` it has no initial payload
/// (Go's `RegisterNoPayload`). The
/// [`SingleHandler`] docs show both kinds of descriptor at work.
///
/// ```
/// # fn demo<R: grid_proto::driver::Runtime>(manager: &grid_proto::driver::Manager<R>) {
/// use grid_proto::HandlerId;
/// use grid_proto::driver::{Connection, Mss, StreamHandler, TypedError};
///
/// /// Two-way: each message comes back with the payload's keys added.
/// const MERGE: StreamHandler<Mss, Mss, Mss> = StreamHandler::new(HandlerId::TEST)
///     .with_in_capacity(4)
///     .with_out_capacity(4);
///
/// MERGE
///     .register(manager, |_ctx, payload, mut input, mut output| async move {
///         while let Some(message) = input.recv().await {
///             let mut merged = message?;
///             merged.extend(payload.clone());
///             output.send(&merged).await?;
///         }
///         Ok(())
///     })
///     .unwrap();
///
/// async fn call(peer: &Connection) -> Result<(), TypedError> {
///     let payload = Mss::from([("bucket".to_owned(), "b1".to_owned())]);
///     let (mut tx, mut rx) = MERGE.call(peer, &payload).await?;
///     tx.send(&Mss::from([("object".to_owned(), "o1".to_owned())])).await?;
///     let merged = rx.recv().await.expect("an answer")?;
///     assert_eq!(merged["bucket"], "b1");
///     tx.close(); // the end of the input ends the stream
///     Ok(())
/// }
/// # }
/// ```
pub struct StreamHandler<P, In, Out> {
    id: HandlerId,
    capacities: Capacities,
    _types: PhantomData<fn(P, In) -> Out>,
}

impl<Req, Resp> SingleHandler<Req, Resp> {
    /// The descriptor of handler `id`.
    pub const fn new(id: HandlerId) -> Self {
        SingleHandler {
            id,
            _types: PhantomData,
        }
    }

    /// The handler id.
    pub const fn id(&self) -> HandlerId {
        self.id
    }
}

impl<Req: GridMessage, Resp: GridMessage> SingleHandler<Req, Resp> {
    /// Registers `f` as this handler on `manager`. `f` gets the call's
    /// [`HandlerContext`] and the decoded request; a request that does not
    /// decode is answered with a remote error carrying the decode error, as
    /// in Go, without calling `f`.
    pub fn register<R, F, Fut>(&self, manager: &Manager<R>, f: F) -> Result<(), RegisterError>
    where
        R: Runtime,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(HandlerContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RemoteError>> + Send + 'static,
    {
        self.register_on(manager, None, f)
    }

    /// [`register`](Self::register) on a subroute: a route string such as
    /// a drive path, or a [`SubrouteId`](crate::SubrouteId).
    pub fn register_subroute<R, F, Fut>(
        &self,
        manager: &Manager<R>,
        subroute: impl Into<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        R: Runtime,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(HandlerContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RemoteError>> + Send + 'static,
    {
        self.register_on(manager, Some(subroute.into()), f)
    }

    pub(crate) fn register_on<R, F, Fut>(
        &self,
        manager: &Manager<R>,
        subroute: Option<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        R: Runtime,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(HandlerContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RemoteError>> + Send + 'static,
    {
        let f = Arc::new(f);
        manager
            .registry()
            .add_single(self.id, subroute, move |ctx, payload: Bytes| {
                let f = Arc::clone(&f);
                async move {
                    let req = Req::decode(&payload).map_err(|e| RemoteError(e.0))?;
                    let resp = f(ctx, req).await?;
                    resp.encode().map_err(|e| RemoteError(e.0))
                }
            })
    }

    /// Calls the handler on `conn` (scope `conn` to a subroute with
    /// [`Connection::subroute`]), with Go's default deadline of 60 s.
    /// Dropping the future cancels the call.
    pub async fn call(&self, conn: &Connection, request: &Req) -> Result<Resp, TypedError> {
        let payload = encode_request(request)?;
        decode_response(conn.request(self.id, payload).await?)
    }

    /// [`call`](Self::call) with a deadline, sent to the callee too.
    pub async fn call_with_deadline(
        &self,
        conn: &Connection,
        request: &Req,
        deadline: Instant,
    ) -> Result<Resp, TypedError> {
        let payload = encode_request(request)?;
        decode_response(
            conn.request_with_deadline(self.id, payload, deadline)
                .await?,
        )
    }

    /// [`call`](Self::call) giving up `timeout` after the connection takes
    /// the call (the callee is sent exactly this as its deadline).
    pub async fn call_with_timeout(
        &self,
        conn: &Connection,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, TypedError> {
        let payload = encode_request(request)?;
        decode_response(conn.request_with_timeout(self.id, payload, timeout).await?)
    }
}

fn encode_request<T: GridMessage>(value: &T) -> Result<Bytes, TypedError> {
    value.encode().map_err(|e| TypedError::Encode(e.0))
}

fn decode_response<T: GridMessage>(payload: Bytes) -> Result<T, TypedError> {
    T::decode(&payload).map_err(|e| TypedError::Decode(e.0))
}

impl<P, In, Out> StreamHandler<P, In, Out> {
    /// The descriptor of stream handler `id`, with the capacities MinIO
    /// registers it with if it is one of MinIO's streams (the catalogue's),
    /// else Go's defaults for typed streams (one message in flight each
    /// way).
    pub const fn new(id: HandlerId) -> Self {
        let capacities = match id.stream_capacities() {
            Some(caps) => caps,
            None => Capacities::DEFAULT,
        };
        StreamHandler {
            id,
            capacities,
            _types: PhantomData,
        }
    }

    /// The same handler with `n` input messages in flight (Go's
    /// `WithInCapacity`). The input type decides whether there is input at
    /// all: with [`NoInput`] there is none whatever this says, with any
    /// other type at least one message.
    pub const fn with_in_capacity(mut self, n: u32) -> Self {
        self.capacities.in_capacity = n;
        self
    }

    /// The same handler with `n` output messages in flight (Go's
    /// `WithOutCapacity`; 0 counts as 1).
    pub const fn with_out_capacity(mut self, n: u32) -> Self {
        self.capacities.out_capacity = n;
        self
    }

    /// The handler id.
    pub const fn id(&self) -> HandlerId {
        self.id
    }

    /// The capacities as configured (see
    /// [`with_in_capacity`](Self::with_in_capacity) for how the input type
    /// adjusts the input's).
    pub const fn capacities(&self) -> Capacities {
        self.capacities
    }

    fn capacities_with(&self, input: bool) -> Capacities {
        let mut caps = self.capacities;
        caps.in_capacity = if input { caps.in_capacity.max(1) } else { 0 };
        caps
    }
}

impl<P: GridMessage, In, Out: GridMessage> StreamHandler<P, In, Out> {
    fn register_raw<R, F, Fut>(
        &self,
        manager: &Manager<R>,
        subroute: Option<Subroute>,
        input: bool,
        f: F,
    ) -> Result<(), RegisterError>
    where
        R: Runtime,
        P: Send + 'static,
        Out: Send + 'static,
        F: Fn(HandlerContext, P, Option<crate::driver::StreamReceiver>, TypedSender<Out>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler = move |call: StreamCall| {
            let f = Arc::clone(&f);
            async move {
                let payload = call.payload.unwrap_or_default();
                let p = P::decode(&payload).map_err(|e| RemoteError(e.0))?;
                f(call.context, p, call.input, TypedSender::new(call.output)).await
            }
        };
        manager
            .registry()
            .add_stream(self.id, subroute, self.capacities_with(input), handler)
    }

    async fn open(
        &self,
        conn: &Connection,
        payload: &P,
        input: bool,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<(crate::driver::StreamSender, TypedReceiver<Out>), TypedError> {
        let payload = encode_request(payload)?;
        // Go sends no payload at all for a stream without one.
        let payload = (!payload.is_empty()).then_some(payload);
        let options = StreamOptions {
            deadline,
            timeout,
            capacities: Some(self.capacities_with(input)),
        };
        let (tx, rx) = conn.open_stream_with(self.id, payload, options).await?;
        Ok((tx, TypedReceiver::new(rx)))
    }
}

/// Two-way streams.
impl<P: GridMessage, In: GridMessage, Out: GridMessage> StreamHandler<P, In, Out> {
    /// Registers `f` as this stream handler on `manager`. `f` gets the
    /// call's context, the decoded payload (a payload that does not decode
    /// fails the stream with a remote error, without calling `f`), the
    /// caller's messages and where its own go. The stream ends when `f`
    /// returns: cleanly on `Ok`, with the error's text on `Err`.
    pub fn register<R, F, Fut>(&self, manager: &Manager<R>, f: F) -> Result<(), RegisterError>
    where
        R: Runtime,
        P: Send + 'static,
        In: Send + 'static,
        Out: Send + 'static,
        F: Fn(HandlerContext, P, TypedReceiver<In>, TypedSender<Out>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_two_way(manager, None, f)
    }

    /// [`register`](Self::register) on a subroute.
    pub fn register_subroute<R, F, Fut>(
        &self,
        manager: &Manager<R>,
        subroute: impl Into<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        R: Runtime,
        P: Send + 'static,
        In: Send + 'static,
        Out: Send + 'static,
        F: Fn(HandlerContext, P, TypedReceiver<In>, TypedSender<Out>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_two_way(manager, Some(subroute.into()), f)
    }

    fn register_two_way<R, F, Fut>(
        &self,
        manager: &Manager<R>,
        subroute: Option<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        R: Runtime,
        P: Send + 'static,
        In: Send + 'static,
        Out: Send + 'static,
        F: Fn(HandlerContext, P, TypedReceiver<In>, TypedSender<Out>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.register_raw(manager, subroute, true, move |ctx, p, input, out| {
            let f = Arc::clone(&f);
            async move {
                // Registered with an input capacity of at least one.
                let input = input.ok_or_else(|| RemoteError::new("stream without input"))?;
                f(ctx, p, TypedReceiver::new(input), out).await
            }
        })
    }

    /// Opens the stream on `conn`: the sender of this side's messages
    /// (dropping or closing it ends the input) and the receiver of the
    /// handler's. Dropping both cancels the stream.
    pub async fn call(
        &self,
        conn: &Connection,
        payload: &P,
    ) -> Result<(TypedSender<In>, TypedReceiver<Out>), TypedError> {
        let (tx, rx) = self.open(conn, payload, true, None, None).await?;
        Ok((TypedSender::new(tx), rx))
    }

    /// [`call`](Self::call) with a deadline for the whole stream, sent to
    /// the callee too.
    pub async fn call_with_deadline(
        &self,
        conn: &Connection,
        payload: &P,
        deadline: Instant,
    ) -> Result<(TypedSender<In>, TypedReceiver<Out>), TypedError> {
        let (tx, rx) = self.open(conn, payload, true, Some(deadline), None).await?;
        Ok((TypedSender::new(tx), rx))
    }

    /// [`call`](Self::call) giving up `timeout` after the connection takes
    /// the stream.
    pub async fn call_with_timeout(
        &self,
        conn: &Connection,
        payload: &P,
        timeout: Duration,
    ) -> Result<(TypedSender<In>, TypedReceiver<Out>), TypedError> {
        let (tx, rx) = self.open(conn, payload, true, None, Some(timeout)).await?;
        Ok((TypedSender::new(tx), rx))
    }
}

/// Streams without input.
impl<P: GridMessage, Out: GridMessage> StreamHandler<P, NoInput, Out> {
    /// Registers `f` as this stream handler on `manager`: like the two-way
    /// form, without input.
    pub fn register<R, F, Fut>(&self, manager: &Manager<R>, f: F) -> Result<(), RegisterError>
    where
        R: Runtime,
        P: Send + 'static,
        Out: Send + 'static,
        F: Fn(HandlerContext, P, TypedSender<Out>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_output_only(manager, None, f)
    }

    /// [`register`](Self::register) on a subroute.
    pub fn register_subroute<R, F, Fut>(
        &self,
        manager: &Manager<R>,
        subroute: impl Into<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        R: Runtime,
        P: Send + 'static,
        Out: Send + 'static,
        F: Fn(HandlerContext, P, TypedSender<Out>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_output_only(manager, Some(subroute.into()), f)
    }

    fn register_output_only<R, F, Fut>(
        &self,
        manager: &Manager<R>,
        subroute: Option<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        R: Runtime,
        P: Send + 'static,
        Out: Send + 'static,
        F: Fn(HandlerContext, P, TypedSender<Out>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_raw(manager, subroute, false, move |ctx, p, _, out| {
            f(ctx, p, out)
        })
    }

    /// Opens the stream on `conn`: the receiver of the handler's messages.
    /// Dropping it cancels the stream.
    pub async fn call(
        &self,
        conn: &Connection,
        payload: &P,
    ) -> Result<TypedReceiver<Out>, TypedError> {
        Ok(self.open(conn, payload, false, None, None).await?.1)
    }

    /// [`call`](Self::call) with a deadline for the whole stream, sent to
    /// the callee too.
    pub async fn call_with_deadline(
        &self,
        conn: &Connection,
        payload: &P,
        deadline: Instant,
    ) -> Result<TypedReceiver<Out>, TypedError> {
        Ok(self
            .open(conn, payload, false, Some(deadline), None)
            .await?
            .1)
    }

    /// [`call`](Self::call) giving up `timeout` after the connection takes
    /// the stream.
    pub async fn call_with_timeout(
        &self,
        conn: &Connection,
        payload: &P,
        timeout: Duration,
    ) -> Result<TypedReceiver<Out>, TypedError> {
        Ok(self
            .open(conn, payload, false, None, Some(timeout))
            .await?
            .1)
    }
}

// Descriptors are plain data: copyable and printable whatever their types.

impl<Req, Resp> Clone for SingleHandler<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for SingleHandler<Req, Resp> {}

impl<Req, Resp> fmt::Debug for SingleHandler<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleHandler")
            .field("id", &self.id)
            .field("request", &std::any::type_name::<Req>())
            .field("response", &std::any::type_name::<Resp>())
            .finish()
    }
}

impl<P, In, Out> Clone for StreamHandler<P, In, Out> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P, In, Out> Copy for StreamHandler<P, In, Out> {}

impl<P, In, Out> fmt::Debug for StreamHandler<P, In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamHandler")
            .field("id", &self.id)
            .field("capacities", &self.capacities)
            .field("payload", &std::any::type_name::<P>())
            .field("input", &std::any::type_name::<In>())
            .field("output", &std::any::type_name::<Out>())
            .finish()
    }
}
