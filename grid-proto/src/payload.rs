//! The msgpack payloads of control messages (docs/protocol.md#payloads): maps keyed
//! by field name, written in Go's field order with every field present.
//!
//! Decoding is as lenient as Go's msgp: keys in any order, `str` or `bin`
//! keys, unknown keys skipped, missing fields left at their zero value.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::msgpack::{self, Reader};
use crate::time::Timestamp;

/// A grid manager's random instance id (a v4 UUID, raw bytes), new on every
/// start. Sent in the handshake; Go never compares it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InstanceId(pub [u8; 16]);

impl InstanceId {
    /// A v4 UUID drawn from a seeded generator: deterministic per seed.
    pub fn from_seed(seed: u64) -> InstanceId {
        InstanceId::from_random(crate::rng::Rng::new(seed ^ 0x6772_6964).bytes16())
    }

    /// A v4 UUID from 16 random bytes (sets the version and variant bits).
    pub fn from_random(mut bytes: [u8; 16]) -> InstanceId {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        InstanceId(bytes)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for InstanceId {
    /// The canonical UUID form, e.g. `00112233-4455-6677-8899-aabbccddeeff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Payload of `Connect`: who is dialing, when, and with what token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The dialer's instance id.
    pub id: InstanceId,
    /// The dialer's own host string.
    pub host: String,
    /// The dialer's wall clock.
    pub time: Timestamp,
    /// The auth token.
    pub token: String,
}

/// Payload of `ConnectResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    /// The acceptor's instance id.
    pub id: InstanceId,
    /// Whether the connection was accepted.
    pub accepted: bool,
    /// Why not (empty when accepted).
    pub rejected_reason: String,
}

/// Payload of `MuxConnectError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxConnectError {
    /// The error text.
    pub error: String,
}

/// Payload of `Ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPayload {
    /// The sender's clock at send time.
    pub t: Timestamp,
}

/// Payload of `Pong`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PongPayload {
    /// The pinged mux does not exist on the callee.
    pub not_found: bool,
    /// The mux exists but is failing.
    pub error: Option<String>,
    /// Copied from the ping.
    pub t: Timestamp,
}

fn finish(out: BytesMut) -> Bytes {
    out.freeze()
}

fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<Timestamp, DecodeError> {
    let (ty, data) = r.ext(field)?;
    Timestamp::decode(ty, data, field)
}

/// Reads a map, calling `field` for every key; `field` returns false for
/// keys it does not know, which are then skipped.
fn read_map(
    buf: &Bytes,
    what: &'static str,
    mut field: impl FnMut(&[u8], &mut Reader<'_>) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    let n = r.map_len(what)?;
    for _ in 0..n {
        let key = r.str_or_bin(what)?;
        if !field(&key, &mut r)? {
            r.skip_value(what)?;
        }
    }
    Ok(())
}

fn read_instance_id(r: &mut Reader<'_>) -> Result<InstanceId, DecodeError> {
    let raw = r.bin("ID")?;
    let arr: [u8; 16] = raw[..].try_into().map_err(|_| DecodeError::InvalidValue {
        field: "ID",
        reason: "instance id is not 16 bytes",
    })?;
    Ok(InstanceId(arr))
}

impl ConnectRequest {
    /// Encodes as Go does (`84 a2 "ID" … a5 "Token" …`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.host.len() + self.token.len());
        msgpack::write_map_len(&mut out, 4);
        msgpack::write_str(&mut out, "ID");
        msgpack::write_bin(&mut out, &self.id.0);
        msgpack::write_str(&mut out, "Host");
        msgpack::write_str(&mut out, &self.host);
        msgpack::write_str(&mut out, "Time");
        self.time.encode(&mut out);
        msgpack::write_str(&mut out, "Token");
        msgpack::write_str(&mut out, &self.token);
        finish(out)
    }

    /// Decodes a `Connect` payload.
    pub fn decode(buf: &Bytes) -> Result<ConnectRequest, DecodeError> {
        let mut req = ConnectRequest {
            id: InstanceId::default(),
            host: String::new(),
            time: Timestamp::GO_ZERO,
            token: String::new(),
        };
        read_map(buf, "connectReq", |key, r| {
            match key {
                b"ID" => req.id = read_instance_id(r)?,
                b"Host" => req.host = r.string("Host")?,
                b"Time" => req.time = read_time(r, "Time")?,
                b"Token" => req.token = r.string("Token")?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(req)
    }
}

impl ConnectResponse {
    /// Encodes as Go does (`83 a2 "ID" … a8 "Accepted" … ae "RejectedReason" …`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(48 + self.rejected_reason.len());
        msgpack::write_map_len(&mut out, 3);
        msgpack::write_str(&mut out, "ID");
        msgpack::write_bin(&mut out, &self.id.0);
        msgpack::write_str(&mut out, "Accepted");
        msgpack::write_bool(&mut out, self.accepted);
        msgpack::write_str(&mut out, "RejectedReason");
        msgpack::write_str(&mut out, &self.rejected_reason);
        finish(out)
    }

    /// Decodes a `ConnectResponse` payload.
    pub fn decode(buf: &Bytes) -> Result<ConnectResponse, DecodeError> {
        let mut resp = ConnectResponse {
            id: InstanceId::default(),
            accepted: false,
            rejected_reason: String::new(),
        };
        read_map(buf, "connectResp", |key, r| {
            match key {
                b"ID" => resp.id = read_instance_id(r)?,
                b"Accepted" => resp.accepted = r.bool("Accepted")?,
                b"RejectedReason" => resp.rejected_reason = r.string("RejectedReason")?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(resp)
    }
}

impl MuxConnectError {
    /// Encodes as Go does (`81 a5 "Error" <str>`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(16 + self.error.len());
        msgpack::write_map_len(&mut out, 1);
        msgpack::write_str(&mut out, "Error");
        msgpack::write_str(&mut out, &self.error);
        finish(out)
    }

    /// Decodes a `MuxConnectError` payload.
    pub fn decode(buf: &Bytes) -> Result<MuxConnectError, DecodeError> {
        let mut e = MuxConnectError {
            error: String::new(),
        };
        read_map(buf, "muxConnectError", |key, r| {
            if key != b"Error" {
                return Ok(false);
            }
            e.error = r.string("Error")?;
            Ok(true)
        })?;
        Ok(e)
    }
}

impl PingPayload {
    /// Encodes as Go does (`81 a1 "t" <time>`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(18);
        msgpack::write_map_len(&mut out, 1);
        msgpack::write_str(&mut out, "t");
        self.t.encode(&mut out);
        finish(out)
    }

    /// Decodes a ping payload; an absent or empty payload (Go's mux pings)
    /// gives the zero time.
    pub fn decode(buf: &Bytes) -> Result<PingPayload, DecodeError> {
        let mut p = PingPayload {
            t: Timestamp::GO_ZERO,
        };
        if buf.is_empty() {
            return Ok(p);
        }
        read_map(buf, "pingMsg", |key, r| {
            if key != b"t" {
                return Ok(false);
            }
            p.t = read_time(r, "t")?;
            Ok(true)
        })?;
        Ok(p)
    }
}

impl PongPayload {
    /// Encodes as Go does (`83 a2 "nf" <bool> a1 "e" <nil|str> a1 "t" <time>`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32 + self.error.as_ref().map_or(0, String::len));
        msgpack::write_map_len(&mut out, 3);
        msgpack::write_str(&mut out, "nf");
        msgpack::write_bool(&mut out, self.not_found);
        msgpack::write_str(&mut out, "e");
        match &self.error {
            Some(e) => msgpack::write_str(&mut out, e),
            None => out.extend_from_slice(&[0xc0]),
        }
        msgpack::write_str(&mut out, "t");
        self.t.encode(&mut out);
        finish(out)
    }

    /// Decodes a pong payload.
    pub fn decode(buf: &Bytes) -> Result<PongPayload, DecodeError> {
        let mut p = PongPayload {
            not_found: false,
            error: None,
            t: Timestamp::GO_ZERO,
        };
        read_map(buf, "pongMsg", |key, r| {
            match key {
                b"nf" => p.not_found = r.bool("nf")?,
                b"e" => p.error = r.opt_string("e")?,
                b"t" => p.t = read_time(r, "t")?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_hex as hex;

    const A: InstanceId = InstanceId([
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ]);
    const T: Timestamp = Timestamp {
        secs: 1_704_164_645,
        nanos: 6_007_008,
    };

    #[test]
    fn connect_request_matches_c1() {
        let req = ConnectRequest {
            id: A,
            host: "http://127.0.0.1:9001".into(),
            time: T,
            token: "debug".into(),
        };
        // C.1 minus its 9-byte envelope head (97 00 00 00 00 01 00 c4 51).
        let want = hex("84 a2 49 44 c4 10 00 11 22 33 44 55 66 77 88 99 aa bb
             cc dd ee ff a4 48 6f 73 74 b5 68 74 74 70 3a 2f 2f 31 32 37 2e 30 2e 30 2e 31 3a
             39 30 30 31 a4 54 69 6d 65 c7 0c 05 00 00 00 00 65 93 7d 25 00 5b a8 e0 a5 54 6f
             6b 65 6e a5 64 65 62 75 67");
        assert_eq!(req.to_bytes(), want);
        assert_eq!(ConnectRequest::decode(&want).unwrap(), req);
        assert_eq!(A.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn connect_response_rejected_matches_c2() {
        let resp = ConnectResponse {
            id: InstanceId([
                0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22,
                0x11, 0x00,
            ]),
            accepted: false,
            rejected_reason: "unknown incoming host: http://10.0.0.9:9000".into(),
        };
        let bytes = resp.to_bytes();
        assert_eq!(
            &bytes[..],
            &hex("83 a2 49 44 c4 10 ff ee dd cc bb aa 99 88 77 66 55 44
             33 22 11 00 a8 41 63 63 65 70 74 65 64 c2 ae 52 65 6a 65 63 74 65 64 52 65 61 73
             6f 6e d9 2b 75 6e 6b 6e 6f 77 6e 20 69 6e 63 6f 6d 69 6e 67 20 68 6f 73 74 3a 20
             68 74 74 70 3a 2f 2f 31 30 2e 30 2e 30 2e 39 3a 39 30 30 30")[..]
        );
        assert_eq!(ConnectResponse::decode(&bytes).unwrap(), resp);
    }

    #[test]
    fn pong_matches_c6() {
        let pong = PongPayload {
            not_found: true,
            error: None,
            t: Timestamp::GO_ZERO,
        };
        assert_eq!(
            pong.to_bytes(),
            hex("83 a2 6e 66 c3 a1 65 c0 a1 74 c7 0c 05 ff ff ff f1 88 6e 09 00 00 00 00 00")
        );
        let with_err = PongPayload {
            not_found: false,
            error: Some("boom".into()),
            t: T,
        };
        assert_eq!(PongPayload::decode(&with_err.to_bytes()).unwrap(), with_err);
    }

    #[test]
    fn decoding_is_lenient_like_msgp() {
        // Keys as bin, out of order, an unknown key with a nested value, a
        // missing field (Accepted → false).
        let buf = hex(
            "83 c4 01 78 92 01 a1 61 c4 0e 52 65 6a 65 63 74 65 64 52 65 61 73 6f 6e a2 6e 6f c4 02 49 44 c4 10 00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
        );
        let resp = ConnectResponse::decode(&buf).unwrap();
        assert_eq!(resp.id, A);
        assert!(!resp.accepted);
        assert_eq!(resp.rejected_reason, "no");
        assert_eq!(
            PingPayload::decode(&Bytes::new()).unwrap().t,
            Timestamp::GO_ZERO
        );
    }

    #[test]
    fn strings_need_not_be_utf8_like_in_go() {
        let e = MuxConnectError::decode(&hex("81 a5 45 72 72 6f 72 a3 6f 6b ff")).unwrap();
        assert_eq!(e.error, "ok\u{fffd}");
    }

    #[test]
    fn bad_instance_id_is_an_error() {
        let buf = hex("81 a2 49 44 c4 02 00 11");
        assert!(matches!(
            ConnectRequest::decode(&buf),
            Err(DecodeError::InvalidValue { field: "ID", .. })
        ));
        assert!(MuxConnectError::decode(&hex("81 a5 45 72 72 6f 72 c0")).is_err());
    }
}
