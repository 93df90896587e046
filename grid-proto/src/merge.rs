//! OpMerged: several messages in one WebSocket frame (docs/protocol.md#merged).
//!
//! [`FrameDecoder`] splits a received frame into its messages;
//! [`FrameBuilder`] packs outgoing messages into frames within Go's limits,
//! encoding each message once, straight into the frame buffer.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::message::{Message, decode_envelope};
use crate::msgpack::{self, Reader};
use crate::op::Op;

/// Most messages Go puts in one merged frame (50 held back + 1,
/// docs/protocol.md#quirk-q1-merged-51).
pub const MAX_MERGED_MESSAGES: usize = 51;
/// A frame takes no further message once it holds this many bytes (Go's
/// 32 KiB − 1 KiB bound on held-back bytes); the last message may exceed it.
pub const MERGE_BYTE_LIMIT: usize = 31_744;
/// The default maximum size of a received frame (docs/protocol.md#limits).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Splits one received WebSocket binary message into grid messages.
///
/// Iterates the messages in order: one for a plain frame, N for a merged one.
/// A nested merged message is returned as it is (the connection ignores it,
/// as Go does). Payloads are zero-copy slices of the frame.
#[derive(Debug)]
pub struct FrameDecoder {
    frame: Bytes,
    state: DecoderState,
}

#[derive(Debug)]
enum DecoderState {
    Single(Option<Result<Message, DecodeError>>),
    Merged { pos: usize, end: usize, left: u32 },
    Failed,
}

impl FrameDecoder {
    /// Starts decoding `frame`. Fails at once only if the frame is larger
    /// than `max_size`; any other error comes out as the first item. After an
    /// item that is a fatal error ([`DecodeError::is_fatal`]) the caller must
    /// stop: later items of a broken frame mean nothing.
    pub fn new(frame: Bytes, max_size: usize) -> Result<FrameDecoder, DecodeError> {
        if frame.len() > max_size {
            return Err(DecodeError::TooLarge {
                size: frame.len(),
                max: max_size,
            });
        }
        let state = match decode_envelope(&frame, 0..frame.len()) {
            Ok((msg, rest)) if msg.op == Op::Merged => DecoderState::Merged {
                pos: rest.start,
                end: rest.end,
                left: msg.seq,
            },
            Ok((msg, _)) => DecoderState::Single(Some(Ok(msg))),
            Err(e) => DecoderState::Single(Some(Err(e))),
        };
        Ok(FrameDecoder { frame, state })
    }

    /// Whether the frame was an OpMerged container.
    pub fn is_merged(&self) -> bool {
        matches!(self.state, DecoderState::Merged { .. })
    }

    /// The byte range of the entry at `pos`, and where the next begins.
    fn next_entry(&self, pos: usize, end: usize) -> Result<(Range<usize>, usize), DecodeError> {
        let mut r = Reader::within(&self.frame, pos..end);
        let entry = r.bin_range("merged entry")?;
        Ok((entry, r.position()))
    }
}

impl Iterator for FrameDecoder {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.state {
            DecoderState::Single(item) => item.take(),
            DecoderState::Failed => None,
            DecoderState::Merged { left: 0, .. } => None,
            DecoderState::Merged { pos, end, left } => {
                let (pos, end, left) = (*pos, *end, *left);
                match self.next_entry(pos, end) {
                    Ok((entry, next)) => {
                        self.state = DecoderState::Merged {
                            pos: next,
                            end,
                            left: left - 1,
                        };
                        Some(decode_envelope(&self.frame, entry).map(|(msg, _)| msg))
                    }
                    Err(e) => {
                        self.state = DecoderState::Failed;
                        Some(Err(e))
                    }
                }
            }
        }
    }
}

/// Largest container header: `97 00 <seq: up to 5 bytes> 00 00 11 00 c4 00`.
const MAX_HEADER_LEN: usize = 13;

/// Packs encoded messages into one outgoing frame.
///
/// Messages are encoded directly into the frame buffer behind room for the
/// container header. [`FrameBuilder::finish`] returns the lone message
/// unwrapped when there is only one, else the merged container; either way
/// without copying the messages again.
#[derive(Debug)]
pub struct FrameBuilder {
    buf: BytesMut,
    count: usize,
    /// Where the first message's own bytes begin (after its bin header).
    first_body: usize,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBuilder {
    /// An empty frame.
    pub fn new() -> FrameBuilder {
        FrameBuilder::with_capacity(0)
    }

    /// An empty frame with room for `bytes` of messages.
    pub fn with_capacity(bytes: usize) -> FrameBuilder {
        FrameBuilder::in_buffer(&mut BytesMut::new(), bytes)
    }

    /// An empty frame with room for `bytes` of messages, built in the
    /// spare room of `spare` (which it takes, leaving `spare` empty). With
    /// [`finish_into`](Self::finish_into) the room the frame did not use
    /// goes back to `spare`; once the frames cut from it are dropped,
    /// `spare`'s next reserve reuses the same allocation, so a busy
    /// connection does not allocate (and the allocator does not trim and
    /// fault in again) a buffer per frame.
    pub fn in_buffer(spare: &mut BytesMut, bytes: usize) -> FrameBuilder {
        spare.clear();
        spare.reserve(MAX_HEADER_LEN + bytes);
        let mut buf = std::mem::take(spare);
        buf.put_bytes(0, MAX_HEADER_LEN);
        FrameBuilder {
            buf,
            count: 0,
            first_body: 0,
        }
    }

    /// [`finish`](Self::finish), handing the unused room back to `spare`
    /// (see [`in_buffer`](Self::in_buffer)).
    pub fn finish_into(mut self, spare: &mut BytesMut) -> Option<Bytes> {
        *spare = self.buf.split_off(self.buf.len());
        self.finish()
    }

    /// Messages in the frame.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the frame holds no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of messages held (bin headers included).
    pub fn bytes(&self) -> usize {
        self.buf.len() - MAX_HEADER_LEN
    }

    /// Whether Go's merge policy lets one more message into this frame:
    /// fewer than 51 messages and fewer than 31 744 bytes so far.
    pub fn has_room(&self) -> bool {
        self.count < MAX_MERGED_MESSAGES && self.bytes() < MERGE_BYTE_LIMIT
    }

    /// Encodes `msg` into the frame.
    pub fn push(&mut self, msg: &Message) {
        let len = msg.encoded_len();
        self.buf.reserve(msgpack::bin_header_len(len) + len);
        msgpack::write_bin_header(&mut self.buf, len);
        if self.count == 0 {
            self.first_body = self.buf.len();
        }
        msg.encode(&mut self.buf);
        self.count += 1;
    }

    /// Appends an already encoded message (used when re-packing).
    pub fn push_encoded(&mut self, encoded: &[u8]) {
        msgpack::write_bin_header(&mut self.buf, encoded.len());
        if self.count == 0 {
            self.first_body = self.buf.len();
        }
        self.buf.put_slice(encoded);
        self.count += 1;
    }

    /// The frame to send, or `None` if it is empty.
    pub fn finish(self) -> Option<Bytes> {
        let count = self.count;
        let first_body = self.first_body;
        let mut buf = self.buf;
        match count {
            0 => None,
            1 => Some(buf.freeze().slice(first_body..)),
            n => {
                let mut header = Vec::with_capacity(MAX_HEADER_LEN);
                header.put_u8(0x97);
                header.put_u8(0);
                msgpack::write_uint(&mut header, n as u64);
                header.put_slice(&[0x00, 0x00, Op::Merged as u8, 0x00, 0xc4, 0x00]);
                let start = MAX_HEADER_LEN - header.len();
                buf[start..MAX_HEADER_LEN].copy_from_slice(&header);
                Some(buf.freeze().slice(start..))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Flags;

    use crate::test_hex as hex;

    const C8: &str = "97 00 02 00 00 11 00 c4 00
                      c4 0d 97 02 01 00 00 0b 01 c4 00 7c e7 f2 44
                      c4 0d 97 03 04 00 00 0a 11 c4 00 5e 13 1c f0";

    #[test]
    fn splits_and_rebuilds_c8() {
        let frame = hex(C8);
        let dec = FrameDecoder::new(frame.clone(), usize::MAX).unwrap();
        assert!(dec.is_merged());
        let msgs: Vec<Message> = dec.map(|m| m.unwrap()).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].op, Op::UnblockSrvMux);
        assert_eq!(msgs[1].op, Op::MuxServerMsg);
        assert_eq!(msgs[1].payload().map(|p| p.len()), Some(0));

        let mut b = FrameBuilder::new();
        for m in &msgs {
            b.push(m);
        }
        assert_eq!(b.finish().unwrap(), frame);
    }

    #[test]
    fn single_message_is_sent_unwrapped() {
        let mut m = Message::new(Op::AckMux, 5);
        m.flags = Flags::CRC;
        let mut b = FrameBuilder::new();
        b.push(&m);
        assert_eq!(
            b.finish().unwrap(),
            hex("97 05 00 00 00 0d 01 c4 00 14 e5 03 b9")
        );
        assert_eq!(FrameBuilder::new().finish(), None);
    }

    #[test]
    fn large_counts_use_wider_headers() {
        let m = Message::new(Op::UnblockClMux, 1);
        let mut b = FrameBuilder::new();
        for _ in 0..300 {
            b.push(&m);
        }
        let frame = b.finish().unwrap();
        assert_eq!(&frame[..5], &[0x97, 0x00, 0xcd, 0x01, 0x2c]);
        let msgs: Vec<Message> = FrameDecoder::new(frame, usize::MAX)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let n = msgs.len();
        assert_eq!(n, 300);
    }

    #[test]
    fn room_follows_go_limits() {
        let m = Message::new(Op::UnblockClMux, 1);
        let mut b = FrameBuilder::new();
        while b.has_room() {
            b.push(&m);
        }
        assert_eq!(b.len(), MAX_MERGED_MESSAGES);

        let mut big = Message::new(Op::MuxClientMsg, 1);
        big.payload = Bytes::from(vec![7u8; 20_000]);
        let mut b = FrameBuilder::new();
        while b.has_room() {
            b.push(&big);
        }
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn truncated_merged_list_fails_once() {
        let frame = hex("97 00 03 00 00 11 00 c4 00 c4 09 97 02 01 00 00 0b 00 c4 00");
        let mut dec = FrameDecoder::new(frame, usize::MAX).unwrap();
        assert!(dec.next().unwrap().is_ok());
        assert!(matches!(
            dec.next(),
            Some(Err(DecodeError::Truncated { .. }))
        ));
        assert!(dec.next().is_none());
    }

    #[test]
    fn oversize_frame_is_rejected() {
        let err = FrameDecoder::new(Bytes::from(vec![0u8; 100]), 99).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { size: 100, max: 99 });
    }
}
