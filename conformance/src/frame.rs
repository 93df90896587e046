//! Frames to messages: how messages are grouped into `OpMerged` frames
//! varies between runs, so both sides are flattened before comparing.

use bytes::Bytes;
use grid_proto::{DEFAULT_MAX_MESSAGE_SIZE, Flags, FrameBuilder, FrameDecoder, Message, Op};

/// The messages of one WebSocket binary frame.
#[derive(Debug, Clone)]
pub struct Flattened {
    /// The messages, in frame order.
    pub messages: Vec<Message>,
    /// Whether they came in an `OpMerged` container.
    pub merged: bool,
}

/// Splits a frame into its messages. Fails on anything Go would not send: an
/// undecodable or CRC-failing message, a malformed container, or a merged
/// frame inside a merged frame.
pub fn flatten(frame: &Bytes) -> Result<Flattened, String> {
    let decoder = FrameDecoder::new(frame.clone(), DEFAULT_MAX_MESSAGE_SIZE)
        .map_err(|e| format!("undecodable frame: {e}"))?;
    let merged = decoder.is_merged();
    let mut messages = Vec::new();
    for (i, item) in decoder.enumerate() {
        let msg = item.map_err(|e| format!("undecodable message #{i} of the frame: {e}"))?;
        if msg.op == Op::Merged {
            return Err("a merged frame inside a merged frame".into());
        }
        messages.push(msg);
    }
    if merged {
        check_container(frame, messages.len())?;
    }
    Ok(Flattened { messages, merged })
}

/// The container of a merged frame must be what Go writes:
/// `{0, count, 0, 0, Merged, 0, nil}` with at least one message.
fn check_container(frame: &Bytes, count: usize) -> Result<(), String> {
    let c = Message::decode(frame).map_err(|e| format!("undecodable container: {e}"))?;
    let count_ok = usize::try_from(c.seq).is_ok_and(|n| n == count) && count > 0;
    if c.mux_id != 0
        || !count_ok
        || c.deadline_ms != 0
        || c.handler.0 != 0
        || c.flags != Flags::NONE
        || !c.payload.is_empty()
        || c.subroute.is_some()
    {
        return Err(format!(
            "malformed merged container {c:?} holding {count} messages"
        ));
    }
    Ok(())
}

/// Packs messages into one frame: the message itself when there is one,
/// else a merged container (CRCs are recomputed).
pub fn pack(messages: &[Message]) -> Option<Bytes> {
    let mut b = FrameBuilder::new();
    for m in messages {
        b.push(m);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_merged_and_plain_frames() {
        let mut a = Message::new(Op::UnblockClMux, 1);
        a.flags = Flags::CRC;
        a.seq = 1;
        let mut b = Message::new(Op::MuxServerMsg, 1);
        b.flags = Flags::CRC;
        b.seq = 2;
        b.payload = Bytes::from_static(b"x");
        let f = flatten(&pack(&[a.clone(), b.clone()]).unwrap()).unwrap();
        assert!(f.merged);
        assert_eq!(f.messages, [a.clone(), b]);
        let f = flatten(&pack(&[a.clone()]).unwrap()).unwrap();
        assert!(!f.merged);
        assert_eq!(f.messages, [a]);
    }

    #[test]
    fn rejects_a_bad_crc() {
        let mut m = Message::new(Op::AckMux, 1);
        m.flags = Flags::CRC;
        let mut bytes = m.to_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let e = flatten(&Bytes::from(bytes)).unwrap_err();
        assert!(e.contains("CRC") || e.contains("crc"), "{e}");
    }
}
