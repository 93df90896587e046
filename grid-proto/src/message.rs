//! The message envelope: a 7-element msgpack tuple, then an optional
//! subroute trailer, then an optional CRC (docs/protocol.md#envelope).

use std::fmt;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::flags::Flags;
use crate::handler::HandlerId;
use crate::msgpack::{self, Reader};
use crate::op::Op;
use crate::subroute::SubrouteId;

/// Size of the subroute trailer.
pub const SUBROUTE_LEN: usize = 32;
/// Size of the CRC trailer.
pub const CRC_LEN: usize = 4;

/// One grid message.
///
/// `flags` is the wire byte. On encode, [`Flags::SUBROUTE`] is taken from
/// whether `subroute` is set and a CRC is appended iff [`Flags::CRC`] is set;
/// every other bit is written as it is. Whether an empty payload is *absent*
/// or *present and empty* is carried by [`Flags::PAYLOAD_IS_ZERO`]; see
/// [`Message::payload`] and [`Message::set_payload`].
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The mux (request or stream) this message belongs to; 0 for the
    /// connection itself.
    pub mux_id: u64,
    /// Per-mux sequence number (docs/protocol.md#streams-sequence-numbers);
    /// the count for `Merged`.
    pub seq: u32,
    /// Remaining time of the call in milliseconds; 0 for none.
    pub deadline_ms: u32,
    /// The handler addressed by an opening message.
    pub handler: HandlerId,
    /// What this message is.
    pub op: Op,
    /// The flag byte.
    pub flags: Flags,
    /// The payload bytes (a slice of the received frame when decoded).
    pub payload: Bytes,
    /// The subroute trailer, present only on opening messages.
    pub subroute: Option<SubrouteId>,
}

impl Message {
    /// A message with the given op and mux id and everything else zero.
    pub fn new(op: Op, mux_id: u64) -> Message {
        Message {
            mux_id,
            seq: 0,
            deadline_ms: 0,
            handler: HandlerId(0),
            op,
            flags: Flags::NONE,
            payload: Bytes::new(),
            subroute: None,
        }
    }

    /// The payload as the application sees it: `None` when absent, i.e.
    /// empty without [`Flags::PAYLOAD_IS_ZERO`] (docs/protocol.md#payload-presence).
    pub fn payload(&self) -> Option<&Bytes> {
        if self.payload.is_empty() && !self.flags.contains(Flags::PAYLOAD_IS_ZERO) {
            None
        } else {
            Some(&self.payload)
        }
    }

    /// Sets the payload and [`Flags::PAYLOAD_IS_ZERO`] (set iff the payload is
    /// present and empty), as Go does for every op but `Request`.
    pub fn set_payload(&mut self, payload: Option<Bytes>) {
        let zero = matches!(&payload, Some(p) if p.is_empty());
        self.flags.set(Flags::PAYLOAD_IS_ZERO, zero);
        self.payload = payload.unwrap_or_default();
    }

    /// The flags as they go on the wire (subroute bit from `subroute`).
    fn wire_flags(&self) -> Flags {
        let mut flags = self.flags;
        flags.set(Flags::SUBROUTE, self.subroute.is_some());
        flags
    }

    fn tuple_len(&self) -> usize {
        1 + msgpack::uint_len(self.mux_id)
            + msgpack::uint_len(u64::from(self.seq))
            + msgpack::uint_len(u64::from(self.deadline_ms))
            + msgpack::uint_len(u64::from(self.handler.0))
            + msgpack::uint_len(u64::from(self.op as u8))
            + msgpack::uint_len(u64::from(self.wire_flags().bits()))
            + msgpack::bin_header_len(self.payload.len())
            + self.payload.len()
    }

    /// The exact number of bytes [`Message::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        let mut len = self.tuple_len();
        if self.subroute.is_some() {
            len += SUBROUTE_LEN;
        }
        if self.flags.contains(Flags::CRC) {
            len += CRC_LEN;
        }
        len
    }

    /// Appends the encoded message to `out`, byte-identical to what Go
    /// writes for the same fields.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.reserve(self.encoded_len());
        let flags = self.wire_flags();
        out.put_u8(0x97);
        msgpack::write_uint(out, self.mux_id);
        msgpack::write_uint(out, u64::from(self.seq));
        msgpack::write_uint(out, u64::from(self.deadline_ms));
        msgpack::write_uint(out, u64::from(self.handler.0));
        msgpack::write_uint(out, u64::from(self.op as u8));
        msgpack::write_uint(out, u64::from(flags.bits()));
        msgpack::write_bin(out, &self.payload);
        if let Some(sub) = &self.subroute {
            out.put_slice(&sub.0);
        }
        if flags.contains(Flags::CRC) {
            let crc = crc(&out[start..]);
            out.put_u32_le(crc);
        }
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes one message that spans all of `buf` (one frame, or one entry
    /// of a merged frame). The payload is a zero-copy slice of `buf`.
    ///
    /// Bytes between the tuple and the trailers are ignored, as Go does; for
    /// a `Merged` container they are its entries (use
    /// [`crate::FrameDecoder`] to read those).
    pub fn decode(buf: &Bytes) -> Result<Message, DecodeError> {
        decode_envelope(buf, 0..buf.len()).map(|(msg, _)| msg)
    }
}

/// The checksum of docs/protocol.md#crc: the low 32 bits of XXH3-64.
pub fn crc(bytes: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(bytes) as u32
}

/// Decodes the message that spans `buf[span]` (a whole frame, or one entry
/// of a merged frame, decoded in place); also returns the range of the bytes
/// between the tuple and the trailers (the entries of a merged frame).
pub(crate) fn decode_envelope(
    buf: &Bytes,
    span: Range<usize>,
) -> Result<(Message, Range<usize>), DecodeError> {
    let start = span.start;
    let mut r = Reader::within(buf, span.clone());
    let len = r.array_len("envelope")?;
    if len != 7 {
        return Err(DecodeError::TupleLength { len });
    }
    let mux_id = r.uint(u64::MAX, "MuxID")?;
    let seq = r.uint(u64::from(u32::MAX), "Seq")? as u32;
    let deadline_ms = r.uint(u64::from(u32::MAX), "DeadlineMS")? as u32;
    let handler = HandlerId(r.uint(u64::from(u8::MAX), "Handler")? as u8);
    let raw_op = r.uint(u64::from(u8::MAX), "Op")? as u8;
    let flags = Flags::from_bits(r.uint(u64::from(u8::MAX), "Flags")? as u8);
    let payload = r.bin("Payload")?;

    let mut rest = r.position()..span.end;
    if flags.contains(Flags::CRC) {
        if rest.len() < CRC_LEN {
            return Err(DecodeError::MissingTrailer {
                trailer: "crc",
                available: rest.len(),
            });
        }
        let body = span.end - CRC_LEN;
        let mut tail = [0u8; CRC_LEN];
        tail.copy_from_slice(&buf[body..span.end]);
        let received = u32::from_le_bytes(tail);
        let computed = crc(&buf[start..body]);
        if received != computed {
            return Err(DecodeError::CrcMismatch { received, computed });
        }
        rest.end = body;
    }
    let mut subroute = None;
    if flags.contains(Flags::SUBROUTE) {
        if rest.len() < SUBROUTE_LEN {
            return Err(DecodeError::MissingTrailer {
                trailer: "subroute",
                available: rest.len(),
            });
        }
        let mut id = [0u8; SUBROUTE_LEN];
        id.copy_from_slice(&buf[rest.end - SUBROUTE_LEN..rest.end]);
        subroute = Some(SubrouteId(id));
        rest.end -= SUBROUTE_LEN;
    }
    let op = Op::from_u8(raw_op).ok_or(DecodeError::UnknownOp { op: raw_op })?;
    let msg = Message {
        mux_id,
        seq,
        deadline_ms,
        handler,
        op,
        flags: flags.without(Flags::SUBROUTE),
        payload,
        subroute,
    };
    Ok((msg, rest))
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("op", &self.op)
            .field("mux_id", &self.mux_id)
            .field("seq", &self.seq)
            .field("flags", &self.wire_flags());
        if self.deadline_ms != 0 {
            d.field("deadline_ms", &self.deadline_ms);
        }
        if self.handler.0 != 0 {
            d.field("handler", &self.handler);
        }
        match self.payload() {
            None => d.field("payload", &"absent"),
            Some(p) if p.len() <= 32 => d.field("payload", p),
            Some(p) => d.field("payload_len", &p.len()),
        };
        if let Some(sub) = &self.subroute {
            d.field("subroute", sub);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_hex as hex;

    #[test]
    fn request_with_subroute_and_crc_matches_c3() {
        let mut m = Message::new(Op::Request, 1);
        m.deadline_ms = 60000;
        m.handler = HandlerId(9);
        m.flags = Flags::CRC | Flags::EOF;
        m.payload = Bytes::from_static(b"hello");
        m.subroute = Some(SubrouteId::new(HandlerId(9), "/data1"));
        let want = hex(
            "97 01 00 cd ea 60 09 0e 23 c4 05 68 65 6c 6c 6f 09 00 91 a8 ce 3a 01 6b be b4 6a
             77 1d a0 4c 5c 62 5f d3 6c d7 cd cc aa 6f 00 3d 7a e2 fa db 1b 3c b8 16 d9",
        );
        assert_eq!(m.to_bytes(), want);
        assert_eq!(m.encoded_len(), want.len());
        assert_eq!(Message::decode(&want).unwrap(), m);
    }

    #[test]
    fn plain_request_matches_c3() {
        let mut m = Message::new(Op::Request, 1);
        m.deadline_ms = 60000;
        m.handler = HandlerId(9);
        m.flags = Flags::EOF;
        m.payload = Bytes::from_static(b"hello");
        assert_eq!(
            m.to_bytes(),
            hex("97 01 00 cd ea 60 09 0e 02 c4 05 68 65 6c 6c 6f")
        );
    }

    #[test]
    fn nil_and_empty_payloads_are_told_apart() {
        let absent = Message::decode(&hex("97 05 05 00 00 0a 03 c4 00 14 ce 0e de")).unwrap();
        assert_eq!(absent.payload(), None);
        let empty = Message::decode(&hex("97 05 00 00 4e 05 11 c4 00 c8 16 e0 69")).unwrap();
        assert_eq!(empty.payload().map(|p| p.len()), Some(0));

        let mut m = Message::new(Op::MuxServerMsg, 1);
        m.set_payload(Some(Bytes::new()));
        assert!(m.flags.contains(Flags::PAYLOAD_IS_ZERO));
        m.set_payload(None);
        assert!(!m.flags.contains(Flags::PAYLOAD_IS_ZERO));
        assert_eq!(m.payload(), None);
    }

    #[test]
    fn wide_integers_round_trip() {
        let bytes = hex("97 cf 00 00 01 00 00 00 00 00 ce 00 01 11 70 00 00 0c 00 c4 00");
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(m.mux_id, 1 << 40);
        assert_eq!(m.seq, 70000);
        assert_eq!(m.op, Op::UnblockClMux);
        assert_eq!(m.to_bytes(), bytes);
    }

    #[test]
    fn bad_crc_is_rejected() {
        let mut bytes = hex("97 01 00 00 00 0f 03 c4 05 77 6f 72 6c 64 37 6d fa 0c").to_vec();
        bytes[9] ^= 1;
        assert!(matches!(
            Message::decode(&bytes.into()),
            Err(DecodeError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn unknown_op_is_reported_after_crc_check() {
        let mut m = Message::new(Op::Ping, 0);
        m.flags = Flags::CRC;
        let mut bytes = m.to_bytes().to_vec();
        bytes[5] = 18;
        // The CRC now fails first, like Go (it checks trailers before dispatch).
        assert!(matches!(
            Message::decode(&bytes.clone().into()),
            Err(DecodeError::CrcMismatch { .. })
        ));
        let len = bytes.len();
        let fixed = crc(&bytes[..len - 4]).to_le_bytes();
        bytes[len - 4..].copy_from_slice(&fixed);
        let err = Message::decode(&bytes.into()).unwrap_err();
        assert_eq!(err, DecodeError::UnknownOp { op: 18 });
        assert!(!err.is_fatal());
    }
}
