//! One line per message: how `grid-conformance decode` prints a transcript
//! and `grid-conformance tap --print` prints live traffic.
//!
//! A line holds the time, the direction, the op, the mux id, the sequence
//! number, the flags, the handler (id and Go's name), the subroute (the
//! first bytes of its hash), the `DeadlineMS` and the payload size. Each
//! message of an `OpMerged` frame gets its own line, marked `k/n`.

use std::fmt::Write as _;

use grid_proto::{HandlerId, Message};

use crate::frame::flatten;
use crate::transcript::{Dir, MarkerKind, Record, RecordKind, WsKind};

/// `t_us` as milliseconds, right-aligned.
fn time(t_us: u64) -> String {
    format!("{:>10.3}ms", t_us as f64 / 1000.0)
}

/// The line of one message; `part` is its place in a merged frame.
pub fn message_line(t_us: u64, dir: Dir, msg: &Message, part: Option<(usize, usize)>) -> String {
    let mut line = format!(
        "{} {:<3} {:<19}",
        time(t_us),
        dir.to_string(),
        msg.op.to_string()
    );
    let _ = write!(
        line,
        " mux={} seq={} flags={:?}",
        msg.mux_id, msg.seq, msg.flags
    );
    if msg.handler != HandlerId(0) {
        match msg.handler.name() {
            Some(name) => {
                let _ = write!(line, " handler={}:{name}", msg.handler.0);
            }
            None => {
                let _ = write!(line, " handler={}", msg.handler.0);
            }
        }
    }
    if let Some(sub) = &msg.subroute {
        let _ = write!(line, " sub={}…", hex::encode(&sub.0[..6]));
    }
    if msg.deadline_ms != 0 {
        let _ = write!(line, " deadline={}ms", msg.deadline_ms);
    }
    let _ = write!(line, " payload={}", msg.payload.len());
    if let Some((k, n)) = part {
        let _ = write!(line, " merged={k}/{n}");
    }
    line
}

/// The lines of one binary frame: one per message, or why it does not
/// decode.
pub fn frame_lines(t_us: u64, dir: Dir, frame: &bytes::Bytes) -> Vec<String> {
    match flatten(frame) {
        Ok(flat) => {
            let n = flat.messages.len();
            flat.messages
                .iter()
                .enumerate()
                .map(|(i, m)| message_line(t_us, dir, m, flat.merged.then_some((i + 1, n))))
                .collect()
        }
        Err(e) => vec![format!(
            "{} {:<3} undecodable frame of {} bytes: {e}",
            time(t_us),
            dir.to_string(),
            frame.len()
        )],
    }
}

/// The lines of one transcript record.
pub fn record_lines(record: &Record) -> Vec<String> {
    let t = record.t_us;
    match &record.kind {
        RecordKind::Http { dir, text } => {
            let first = text.lines().next().unwrap_or("");
            vec![format!("{} {:<3} HTTP {first}", time(t), dir.to_string())]
        }
        RecordKind::Ws {
            dir,
            kind: WsKind::Binary,
            payload,
            ..
        } => frame_lines(t, *dir, payload),
        RecordKind::Ws {
            dir, kind, payload, ..
        } => vec![format!(
            "{} {:<3} ws {kind:?} payload={}",
            time(t),
            dir.to_string(),
            payload.len()
        )],
        RecordKind::Marker {
            marker,
            scenario,
            result,
        } => {
            let result = result.as_deref().map_or(String::new(), |r| format!(" {r}"));
            let marker = match marker {
                MarkerKind::Begin => "begin",
                MarkerKind::End => "end",
            };
            vec![format!("{}     {marker} {scenario}{result}", time(t))]
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use grid_proto::{Flags, Op, SubrouteId};

    use super::*;

    #[test]
    fn a_line_names_every_field() {
        let mut m = Message::new(Op::ConnectMux, 7);
        m.seq = 3;
        m.flags = Flags::CRC | Flags::EOF;
        m.handler = HandlerId(9);
        m.deadline_ms = 250;
        m.subroute = Some(SubrouteId::new(HandlerId(9), "/data1"));
        m.payload = Bytes::from_static(b"abc");
        let line = message_line(1500, Dir::Out, &m, Some((2, 3)));
        assert_eq!(
            line,
            "     1.500ms out ConnectMux          mux=7 seq=3 flags=[CRC|EOF] \
             handler=9:DiskInfo sub=090091a8ce3a… deadline=250ms payload=3 merged=2/3"
        );
    }

    #[test]
    fn a_merged_frame_gives_a_line_per_message() {
        let a = Message::new(Op::UnblockClMux, 1);
        let b = Message::new(Op::MuxServerMsg, 1);
        let frame = crate::frame::pack(&[a, b]).unwrap();
        let lines = frame_lines(0, Dir::In, &frame);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("UnblockClMux") && lines[0].ends_with("merged=1/2"));
        assert!(lines[1].contains("MuxServerMsg") && lines[1].ends_with("merged=2/2"));
        let bad = frame_lines(0, Dir::In, &Bytes::from_static(b"\x01"));
        assert!(bad[0].contains("undecodable frame of 1 bytes"), "{bad:?}");
    }
}
