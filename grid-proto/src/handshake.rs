//! The handshake (docs/protocol.md#handshake): the dialer's `Connect`, the acceptor's
//! checks and its `ConnectResponse`.
//!
//! An acceptor does not know which peer a new transport belongs to until it
//! has read the `Connect` message, so the acceptor side is a free function,
//! [`check_connect`], run before the [`crate::Connection`] for that host is
//! chosen; the accepted request is then handed to
//! [`crate::Connection::accept_handshake`]. A refused peer gets
//! [`rejection_frame`] and the transport is closed.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::dial::should_dial;
use crate::error::DecodeError;
use crate::flags::Flags;
use crate::message::Message;
use crate::op::Op;
use crate::payload::{ConnectRequest, ConnectResponse, InstanceId};
use crate::time::Timestamp;

/// Most clock difference the acceptor tolerates in `Connect.Time`.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why an acceptor refused a `Connect`. `Display` gives Go's reject text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first frame did not decode.
    Parse(DecodeError),
    /// The first message was not `Connect`.
    UnexpectedOp(u8),
    /// The `Connect` payload did not decode.
    Payload(DecodeError),
    /// The dialer's host is not one of this node's peers.
    UnknownHost(String),
    /// The dialer's clock is too far from ours.
    ClockSkew(Duration),
    /// The application's token check failed; the text is its reason.
    Auth(String),
    /// This node should be the dialer of the pair (host strings differ
    /// between the nodes' configurations).
    WrongSide,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Parse(e) => write!(f, "error parsing grid connect: {e}"),
            HandshakeError::UnexpectedOp(op) => write!(f, "unexpected connect op: {op}"),
            HandshakeError::Payload(e) => write!(f, "error parsing connectReq: {e}"),
            HandshakeError::UnknownHost(h) => write!(f, "unknown incoming host: {h}"),
            HandshakeError::ClockSkew(d) => {
                let d = go_duration(*d);
                write!(f, "time difference too large between servers: {d}")
            }
            HandshakeError::Auth(e) => write!(f, "auth token: {e}"),
            HandshakeError::WrongSide => {
                f.write_str("grid: expected to be client side, not server side")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

impl HandshakeError {
    /// The reason told to the refused peer: Go's text, except that a
    /// refused token is only said to be refused (MinIO's token check
    /// answers every failure with one generic error), so a prober learns
    /// nothing about the check. The full reason is `Display`, for the log.
    pub fn peer_reason(&self) -> String {
        match self {
            HandshakeError::Auth(_) => format!("auth token: {AUTH_FAILED}"),
            other => other.to_string(),
        }
    }
}

/// The generic text of a refused token: MinIO's `errAuthentication`.
const AUTH_FAILED: &str = "Authentication failed, check your access credentials";

/// `d` as Go's `time.Duration.String()` prints it (`5m59.99995s`, `1h0m0s`,
/// `1.5ms`), so reject texts read exactly like Go's.
fn go_duration(d: Duration) -> String {
    // Go's Duration is an int64 of nanoseconds.
    let ns = u64::try_from(d.as_nanos()).map_or(i64::MAX as u64, |n| n.min(i64::MAX as u64));
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        let (scale, unit) = match ns {
            0..1_000 => (1, "ns"),
            1_000..1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{}{unit}", ns / scale, fraction(ns % scale, scale));
    }
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = fraction(ns % 1_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}{frac}s"),
        (0, _) => format!("{m}m{s}{frac}s"),
        _ => format!("{h}h{m}m{s}{frac}s"),
    }
}

/// `rem / scale` (`scale` a power of ten) as Go writes a fraction: `.5`,
/// `.00001`; empty when zero.
fn fraction(rem: u64, scale: u64) -> String {
    if rem == 0 {
        return String::new();
    }
    let digits = scale.ilog10() as usize;
    let padded = format!("{rem:0digits$}");
    format!(".{}", padded.trim_end_matches('0'))
}

/// The acceptor's checks on the first frame of a new transport, in Go's
/// order: envelope, op, payload, known host, clock skew, token, dial rule.
///
/// `is_known_host` says whether a host string is one of this node's
/// peers; `validate_token` is the application's token check; `wall` is the
/// acceptor's wall clock.
pub fn check_connect(
    frame: &Bytes,
    local_host: &str,
    wall: Timestamp,
    is_known_host: impl FnOnce(&str) -> bool,
    validate_token: impl FnOnce(&str) -> Result<(), String>,
) -> Result<ConnectRequest, HandshakeError> {
    let msg = match Message::decode(frame) {
        Ok(m) => m,
        Err(DecodeError::UnknownOp { op }) => return Err(HandshakeError::UnexpectedOp(op)),
        Err(e) => return Err(HandshakeError::Parse(e)),
    };
    if msg.op != Op::Connect {
        return Err(HandshakeError::UnexpectedOp(msg.op as u8));
    }
    let req = ConnectRequest::decode(&msg.payload).map_err(HandshakeError::Payload)?;
    if req.host == local_host || !is_known_host(&req.host) {
        return Err(HandshakeError::UnknownHost(req.host));
    }
    let skew = wall.abs_diff(req.time);
    if skew > MAX_CLOCK_SKEW {
        return Err(HandshakeError::ClockSkew(skew));
    }
    validate_token(&req.token).map_err(HandshakeError::Auth)?;
    if should_dial(local_host, &req.host) {
        return Err(HandshakeError::WrongSide);
    }
    Ok(req)
}

/// The `ConnectResponse` frame refusing a peer (sent alone, then the
/// transport is closed), with [`HandshakeError::peer_reason`].
pub fn rejection_frame(local_id: InstanceId, error: &HandshakeError) -> Bytes {
    response_message(local_id, Some(error.peer_reason())).to_bytes()
}

/// The dialer's `Connect` message.
pub(crate) fn connect_message(req: &ConnectRequest) -> Message {
    let mut m = Message::new(Op::Connect, 0);
    m.payload = req.to_bytes();
    m
}

/// A `ConnectResponse`: accepted when `rejected` is `None`. Never has a CRC.
pub(crate) fn response_message(local_id: InstanceId, rejected: Option<String>) -> Message {
    let resp = ConnectResponse {
        id: local_id,
        accepted: rejected.is_none(),
        rejected_reason: rejected.unwrap_or_default(),
    };
    let mut m = Message::new(Op::ConnectResponse, 0);
    m.flags = Flags::NONE;
    m.payload = resp.to_bytes();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPTOR: &str = "http://127.0.0.1:19001";
    const DIALER: &str = "http://127.0.0.1:19002";

    fn connect(host: &str, time: Timestamp, token: &str) -> Bytes {
        connect_message(&ConnectRequest {
            id: InstanceId([1; 16]),
            host: host.into(),
            time,
            token: token.into(),
        })
        .to_bytes()
    }

    fn check(frame: &Bytes, wall: Timestamp) -> Result<ConnectRequest, HandshakeError> {
        check_connect(
            frame,
            ACCEPTOR,
            wall,
            |h| h == DIALER,
            |t| {
                if t == "debug" {
                    Ok(())
                } else {
                    Err("invalid token".into())
                }
            },
        )
    }

    #[test]
    fn accepts_a_good_connect() {
        let t = Timestamp::from_unix_nanos(1_795_349_118_223_372_618);
        let req = check(&connect(DIALER, t, "debug"), t + Duration::from_secs(299)).unwrap();
        assert_eq!(req.host, DIALER);
    }

    #[test]
    fn refuses_in_go_order_with_go_texts() {
        let t = Timestamp::from_unix_nanos(1_795_349_118_223_372_618);
        let e = check(&connect("http://evil:1", t, "debug"), t).unwrap_err();
        assert_eq!(e.to_string(), "unknown incoming host: http://evil:1");
        let e = check(&connect(DIALER, t, "debug"), t + Duration::from_secs(301)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("time difference too large between servers")
        );
        let e = check(&connect(DIALER, t, "nope"), t).unwrap_err();
        assert_eq!(e.to_string(), "auth token: invalid token");
        let mut ping = Message::new(Op::Ping, 0);
        ping.payload = Bytes::from_static(&[0x80]);
        let e = check(&ping.to_bytes(), t).unwrap_err();
        assert_eq!(e.to_string(), "unexpected connect op: 3");
        let e = check(&Bytes::from_static(&[0x96]), t).unwrap_err();
        assert!(matches!(e, HandshakeError::Parse(_)));
        // The acceptor of this pair must not be the one dialing.
        let e = check_connect(
            &connect(ACCEPTOR, t, "debug"),
            DIALER,
            t,
            |_| true,
            |_| Ok(()),
        )
        .unwrap_err();
        assert_eq!(e, HandshakeError::WrongSide);
    }

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(1_250), "1.25ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_nanos(359_999_950_000), "5m59.99995s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_nanos(3_723_000_000_001), "1h2m3.000000001s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn rejection_matches_c2_layout() {
        let frame = rejection_frame(
            InstanceId([
                0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22,
                0x11, 0x00,
            ]),
            &HandshakeError::UnknownHost("http://10.0.0.9:9000".into()),
        );
        assert_eq!(
            &frame[..9],
            &[0x97, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0xc4, 0x5c]
        );
        assert_eq!(frame.len(), 9 + 0x5c);
        let resp = ConnectResponse::decode(&Message::decode(&frame).unwrap().payload).unwrap();
        assert!(!resp.accepted);
        assert_eq!(
            resp.rejected_reason,
            "unknown incoming host: http://10.0.0.9:9000"
        );
    }
}
