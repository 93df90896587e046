//! What typed handlers carry: [`GridMessage`], the codec between a Rust
//! value and a payload, with MinIO's encodings.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Go's `MSS`: a map of strings (nil encodes as msgpack nil: use
/// `Option<Mss>` where Go may send nil).
pub type Mss = HashMap<String, String>;

/// A value a typed handler takes or returns: how it becomes a payload and
/// back.
///
/// Any serde type is a `GridMessage`, encoded with rmp-serde as Go's msgp
/// encodes structs (a map keyed by field name), so a Rust typed handler and
/// a Go typed handler interoperate. Field names must match the Go struct's
/// msgp names (use `#[serde(rename = "...")]`), and byte fields must be
/// serialized as msgpack `bin` as Go's `[]byte` is (use `serde_bytes`).
/// Integers may be encoded in a different width than msgp picks; both
/// decoders accept every width.
///
/// Two types are not serde types: [`NoPayload`], Go's `NoPayload` (zero
/// bytes on the wire), and [`NoInput`], the input type of a stream without
/// input. A type with a hand-written encoding implements `GridMessage`
/// itself (it must then not implement serde's traits):
///
/// ```
/// use bytes::Bytes;
/// use grid_proto::driver::{CodecError, GridMessage};
///
/// /// A big-endian counter, as some Go handler might send it.
/// struct Counter(u64);
///
/// impl GridMessage for Counter {
///     fn encode(&self) -> Result<Bytes, CodecError> {
///         Ok(Bytes::copy_from_slice(&self.0.to_be_bytes()))
///     }
///     fn decode(payload: &[u8]) -> Result<Self, CodecError> {
///         let bytes: [u8; 8] = payload
///             .try_into()
///             .map_err(|_| CodecError::new(format!("want 8 bytes, got {}", payload.len())))?;
///         Ok(Counter(u64::from_be_bytes(bytes)))
///     }
/// }
///
/// assert_eq!(Counter::decode(&Counter(7).encode().unwrap()).unwrap().0, 7);
/// ```
pub trait GridMessage: Sized {
    /// The payload that carries `self`.
    fn encode(&self) -> Result<Bytes, CodecError>;

    /// The value a payload carries. An absent payload is decoded as an
    /// empty one.
    fn decode(payload: &[u8]) -> Result<Self, CodecError>;
}

impl<T: Serialize + DeserializeOwned> GridMessage for T {
    fn encode(&self) -> Result<Bytes, CodecError> {
        encode(self).map_err(CodecError)
    }

    fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        decode(payload).map_err(CodecError)
    }
}

/// Go's `NoPayload`: zero bytes on the wire, and anything decodes to it.
/// As a single handler's response it travels as a present, empty payload
/// (`FlagPayloadIsZero`), as Go sends it; as a request or a stream's
/// initial payload, as none at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NoPayload;

impl GridMessage for NoPayload {
    fn encode(&self) -> Result<Bytes, CodecError> {
        Ok(Bytes::new())
    }

    /// Go's `NoPayload` ignores whatever it is given; so does this.
    fn decode(_payload: &[u8]) -> Result<Self, CodecError> {
        Ok(NoPayload)
    }
}

/// The input type of a stream handler without input (`InCapacity` 0, Go's
/// `RegisterNoInput`): a [`StreamHandler`](crate::driver::StreamHandler)
/// with this input type has no input receiver in its handler and no sender
/// at its call sites. It has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoInput {}

/// Why a value could not be encoded into a payload or decoded from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl CodecError {
    /// An error with this text.
    pub fn new(text: impl Into<String>) -> CodecError {
        CodecError(text.into())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

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
        let bytes = Req {
            bucket: "b1".into(),
            n: 5,
        }
        .encode()
        .unwrap();
        // 82 a6 "Bucket" a2 "b1" a1 "N" 05: what msgp writes for the same struct.
        assert_eq!(&bytes[..], b"\x82\xa6Bucket\xa2b1\xa1N\x05");
        assert_eq!(
            Req::decode(&bytes).unwrap(),
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
        let m = Mss::decode(go).unwrap();
        assert_eq!(m["bucket"], "b1");
        assert_eq!(m["object"], "o/1");
        let nil = Option::<Mss>::decode(b"\xc0").unwrap();
        assert_eq!(nil, None);
    }

    #[test]
    fn no_payload_is_zero_bytes_and_takes_anything() {
        assert!(NoPayload.encode().unwrap().is_empty());
        // typed.jsonl: Go answers a NoPayload response with `c4 00` (an
        // empty bin) under FlagPayloadIsZero; the payload it carries is empty.
        assert_eq!(NoPayload::decode(b""), Ok(NoPayload));
        assert_eq!(NoPayload::decode(b"\x81\xa1k\xa1v"), Ok(NoPayload));
    }

    #[test]
    fn a_payload_that_does_not_decode_says_why() {
        let err = Mss::decode(b"").unwrap_err();
        assert!(!err.0.is_empty());
        assert!(Req::decode(b"\x81\xa6Bucket\xc0").is_err());
    }
}
