//! The semantic comparison of one expected (recorded) grid message with one
//! the subject produced.
//!
//! What varies between runs is compared by form only: instance ids (16
//! bytes, enforced by decoding), timestamps (`Time` in `Connect`, `T` in
//! connection ping/pong), the CRC (its presence is a flag bit, compared
//! exactly, and its value was checked when the frame was decoded) and the
//! order of entries in msgpack maps (Go writes maps in random order). Mux
//! ids are not compared here at all: the replay maps recorded ids to the
//! subject's. Everything else must be equal: op, flags, seq, deadline,
//! handler, subroute and payload bytes. Control payloads the subject sends
//! must also be encoded exactly as Go encodes their decoded fields.
//!
//! Which recorded message a sent one is compared with, and with which
//! sequence number, is [`crate::expected`]'s business (it documents every
//! freedom Go's timing allows).

use std::fmt;

use bytes::Bytes;
use grid_proto::{
    ConnectRequest, ConnectResponse, Message, MuxConnectError, Op, PingPayload, PongPayload,
};

use crate::msgpack;

/// One way the subject's message differs from the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The field (`"flags"`, `"payload.Host"`, ...).
    pub field: &'static str,
    /// The recorded value.
    pub expected: String,
    /// The subject's value.
    pub got: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} differs: expected {}, got {}",
            self.field, self.expected, self.got
        )
    }
}

/// Compares everything but the mux id. Returns every difference found
/// (empty: the messages match).
pub fn compare(expected: &Message, got: &Message) -> Vec<Difference> {
    let mut diffs = Vec::new();
    let mut field = |field: &'static str, e: String, g: String| {
        if e != g {
            diffs.push(Difference {
                field,
                expected: e,
                got: g,
            });
        }
    };
    field("op", expected.op.to_string(), got.op.to_string());
    field(
        "flags",
        format!("{:?}", expected.flags),
        format!("{:?}", got.flags),
    );
    field("seq", expected.seq.to_string(), got.seq.to_string());
    field(
        "deadline_ms",
        expected.deadline_ms.to_string(),
        got.deadline_ms.to_string(),
    );
    field(
        "handler",
        expected.handler.0.to_string(),
        got.handler.0.to_string(),
    );
    field(
        "subroute",
        format!("{:?}", expected.subroute),
        format!("{:?}", got.subroute),
    );
    if expected.op == got.op {
        compare_payload(expected, got, &mut diffs);
    }
    diffs
}

/// A message for humans: its `Debug`, plus the decoded payload of a control
/// message (whose `Debug` only shows the payload length).
pub fn render(msg: &Message) -> String {
    let payload = match msg.op {
        Op::Connect => ConnectRequest::decode(&msg.payload).map(|p| format!("{p:?}")),
        Op::ConnectResponse => ConnectResponse::decode(&msg.payload).map(|p| format!("{p:?}")),
        Op::Ping if msg.mux_id == 0 => PingPayload::decode(&msg.payload).map(|p| format!("{p:?}")),
        Op::Pong => PongPayload::decode(&msg.payload).map(|p| format!("{p:?}")),
        Op::MuxConnectError => MuxConnectError::decode(&msg.payload).map(|p| format!("{p:?}")),
        _ => return format!("{msg:?}"),
    };
    match payload {
        Ok(p) => format!("{msg:?} with {p}"),
        Err(e) => format!("{msg:?} with an undecodable payload ({e})"),
    }
}

/// Formats a list of differences on one line.
pub fn describe(diffs: &[Difference]) -> String {
    diffs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn compare_payload(expected: &Message, got: &Message, diffs: &mut Vec<Difference>) {
    let decoded = match expected.op {
        Op::Connect => compare_decoded(expected, got, ConnectRequest::decode, |e, g, d| {
            same(d, "payload.Host", &e.host, &g.host);
            same(d, "payload.Token", &e.token, &g.token);
            g.to_bytes()
        }),
        Op::ConnectResponse => {
            compare_decoded(expected, got, ConnectResponse::decode, |e, g, d| {
                same(d, "payload.Accepted", &e.accepted, &g.accepted);
                same(
                    d,
                    "payload.RejectedReason",
                    &e.rejected_reason,
                    &g.rejected_reason,
                );
                g.to_bytes()
            })
        }
        Op::Ping if expected.mux_id == 0 => {
            compare_decoded(expected, got, PingPayload::decode, |_, g, _| g.to_bytes())
        }
        Op::Pong => {
            let conn = expected.mux_id == 0;
            compare_decoded(expected, got, PongPayload::decode, |e, g, d| {
                same(d, "payload.nf", &e.not_found, &g.not_found);
                same(d, "payload.e", &e.error, &g.error);
                if !conn {
                    // A stream pong copies the ping's (zero) time: no run-to-run variation.
                    same(d, "payload.t", &e.t, &g.t);
                }
                g.to_bytes()
            })
        }
        _ => None,
    };
    match decoded {
        Some(result) => diffs.extend(result),
        None => {
            if expected.payload != got.payload
                && !msgpack::same_map(&expected.payload, &got.payload)
            {
                diffs.push(Difference {
                    field: "payload",
                    expected: show(&expected.payload),
                    got: show(&got.payload),
                });
            }
        }
    }
}

/// Compares a control payload field by field (`fields` pushes differences
/// and returns the canonical encoding of the subject's decoded payload).
/// `None` when the recorded payload itself does not decode: then the bytes
/// are compared instead.
fn compare_decoded<T: fmt::Debug>(
    expected: &Message,
    got: &Message,
    decode: impl Fn(&Bytes) -> Result<T, grid_proto::DecodeError>,
    fields: impl FnOnce(&T, &T, &mut Vec<Difference>) -> Bytes,
) -> Option<Vec<Difference>> {
    let e = decode(&expected.payload).ok()?;
    let mut diffs = Vec::new();
    match decode(&got.payload) {
        Err(err) => diffs.push(Difference {
            field: "payload",
            expected: format!("{e:?}"),
            got: format!("undecodable ({err}): {}", show(&got.payload)),
        }),
        Ok(g) => {
            let canonical = fields(&e, &g, &mut diffs);
            if diffs.is_empty() && canonical != got.payload {
                diffs.push(Difference {
                    field: "payload encoding",
                    expected: show(&canonical),
                    got: show(&got.payload),
                });
            }
        }
    }
    Some(diffs)
}

fn same<T: PartialEq + fmt::Debug>(
    diffs: &mut Vec<Difference>,
    field: &'static str,
    expected: &T,
    got: &T,
) {
    if expected != got {
        diffs.push(Difference {
            field,
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        });
    }
}

/// A payload for messages: printable text as a string, else hex.
fn show(p: &Bytes) -> String {
    if !p.is_empty() && p.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(p))
    } else {
        format!("0x{}", hex::encode(p))
    }
}

#[cfg(test)]
mod tests {
    use grid_proto::{Flags, HandlerId, InstanceId, Timestamp};

    use super::*;

    fn response(payload: &'static [u8]) -> Message {
        let mut m = Message::new(Op::Response, 1);
        m.flags = Flags::CRC | Flags::EOF;
        m.payload = Bytes::from_static(payload);
        m
    }

    #[test]
    fn equal_messages_have_no_difference() {
        assert!(compare(&response(b"hi"), &response(b"hi")).is_empty());
    }

    #[test]
    fn reports_each_field() {
        let e = response(b"hi");
        let mut g = response(b"ho");
        g.seq = 2;
        g.flags = Flags::EOF;
        g.handler = HandlerId(9);
        g.mux_id = 77; // not compared
        let d = compare(&e, &g);
        let fields: Vec<_> = d.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["flags", "seq", "handler", "payload"]);
        assert_eq!(
            d[3].to_string(),
            "payload differs: expected \"hi\", got \"ho\""
        );
    }

    #[test]
    fn maps_may_be_reordered() {
        let e = response(&[0x82, 0xa1, b'a', 0xa1, b'1', 0xa1, b'b', 0xa1, b'2']);
        let g = response(&[0x82, 0xa1, b'b', 0xa1, b'2', 0xa1, b'a', 0xa1, b'1']);
        assert!(compare(&e, &g).is_empty());
    }

    #[test]
    fn connect_compares_host_and_token_not_id_or_time() {
        let req = |id: u8, secs: i64, host: &str| {
            let mut m = Message::new(Op::Connect, 0);
            m.payload = ConnectRequest {
                id: InstanceId([id; 16]),
                host: host.into(),
                time: Timestamp { secs, nanos: 5 },
                token: "debug".into(),
            }
            .to_bytes();
            m
        };
        assert!(compare(&req(1, 10, "http://a:1"), &req(2, 99, "http://a:1")).is_empty());
        let d = compare(&req(1, 10, "http://a:1"), &req(1, 10, "http://b:1"));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].field, "payload.Host");
    }

    #[test]
    fn connection_pong_time_is_form_only() {
        let pong = |secs: i64, nf: bool| {
            let mut m = Message::new(Op::Pong, 0);
            m.flags = Flags::CRC;
            m.payload = PongPayload {
                not_found: nf,
                error: None,
                t: Timestamp { secs, nanos: 0 },
            }
            .to_bytes();
            m
        };
        assert!(compare(&pong(1, false), &pong(2, false)).is_empty());
        assert_eq!(
            compare(&pong(1, false), &pong(1, true))[0].field,
            "payload.nf"
        );
        let mut garbage = pong(1, false);
        garbage.payload = Bytes::from_static(b"\x01");
        assert_eq!(compare(&pong(1, false), &garbage)[0].field, "payload");
    }
}
