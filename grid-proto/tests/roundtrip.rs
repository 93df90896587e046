//! Property tests: whatever the codec encodes it decodes back unchanged
//! (messages, merged frames, control payloads), whatever it accepts it can
//! re-encode, and no input makes a decoder panic.

use bytes::{Bytes, BytesMut};
use grid_proto::{CRC_LEN, Flags, SUBROUTE_LEN};
use grid_proto::{
    ConnectRequest, ConnectResponse, FrameBuilder, FrameDecoder, HandlerId, InstanceId, Message,
    MuxConnectError, Op, PingPayload, PongPayload, SubrouteId, Timestamp,
};
use proptest::prelude::*;

/// Integers spread over every msgpack width, not just the 9-byte one a
/// uniform u64 nearly always needs.
fn any_width_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..=0x7fu64,
        0x80..=0xffu64,
        0x100..=0xffffu64,
        0x1_0000..=0xffff_ffffu64,
        any::<u64>(),
        Just(u64::MAX),
    ]
}

fn any_width_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        0..=0x7fu32,
        0x80..=0xffu32,
        0x100..=0xffffu32,
        any::<u32>(),
        Just(u32::MAX),
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    prop::sample::select(Op::ALL.to_vec())
}

fn any_payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..600).prop_map(Bytes::from)
}

/// Any message. `flags` is any byte, so it may hold `SUBROUTE` regardless
/// of `subroute`; see [`as_decoded`].
fn any_message() -> impl Strategy<Value = Message> {
    (
        any_width_u64(),
        any_width_u32(),
        any_width_u32(),
        any::<u8>(),
        any_op(),
        any::<u8>(),
        any_payload(),
        prop::option::of(any::<[u8; 32]>()),
    )
        .prop_map(
            |(mux_id, seq, deadline_ms, handler, op, flags, payload, subroute)| Message {
                mux_id,
                seq,
                deadline_ms,
                handler: HandlerId(handler),
                op,
                flags: Flags::from_bits(flags),
                payload,
                subroute: subroute.map(SubrouteId),
            },
        )
}

/// What decoding `msg.to_bytes()` gives: the `SUBROUTE` bit goes on the wire
/// iff `subroute` is set, and decode leaves it out of `flags`.
fn as_decoded(msg: &Message) -> Message {
    let mut m = msg.clone();
    m.flags = m.flags.without(Flags::SUBROUTE);
    m
}

fn any_timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0..1_000_000_000u32).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

/// Every decoder of the crate, fed `bytes`: none may panic, and whatever is
/// accepted must survive re-encoding.
fn decode_everything(bytes: &Bytes) {
    if let Ok(msg) = Message::decode(bytes) {
        assert_reencodes(&msg);
    }
    if let Ok(decoder) = FrameDecoder::new(bytes.clone(), usize::MAX) {
        for msg in decoder.take(100_000).flatten() {
            assert_reencodes(&msg);
        }
    }
    if let Ok(p) = ConnectRequest::decode(bytes) {
        assert_eq!(ConnectRequest::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = ConnectResponse::decode(bytes) {
        assert_eq!(ConnectResponse::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = MuxConnectError::decode(bytes) {
        assert_eq!(MuxConnectError::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = PingPayload::decode(bytes) {
        assert_eq!(PingPayload::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = PongPayload::decode(bytes) {
        assert_eq!(PongPayload::decode(&p.to_bytes()), Ok(p));
    }
}

/// A decoded message re-encodes (canonically) to bytes that decode to it.
fn assert_reencodes(msg: &Message) {
    let bytes = msg.to_bytes();
    assert_eq!(bytes.len(), msg.encoded_len());
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(msg), "{bytes:02x?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn messages_round_trip(msg in any_message()) {
        let bytes = msg.to_bytes();
        prop_assert_eq!(bytes.len(), msg.encoded_len());
        let decoded = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &as_decoded(&msg));
        prop_assert_eq!(decoded.payload(), msg.payload());
        prop_assert_eq!(decoded.to_bytes(), bytes.clone());

        // Trailers are where the flags say, and the CRC is what crc() gives.
        prop_assert_eq!(bytes[0], 0x97);
        let mut end = bytes.len();
        if msg.flags.contains(Flags::CRC) {
            end -= CRC_LEN;
            let crc = u32::from_le_bytes(bytes[end..].try_into().unwrap());
            prop_assert_eq!(crc, grid_proto::crc(&bytes[..end]));
        }
        if let Some(sub) = &msg.subroute {
            prop_assert_eq!(&bytes[end - SUBROUTE_LEN..end], &sub.0[..]);
        }

        // encode() appends after whatever the buffer holds.
        let mut buf = BytesMut::from(&b"prefix"[..]);
        msg.encode(&mut buf);
        prop_assert_eq!(&buf[..6], b"prefix");
        prop_assert_eq!(&buf[6..], &bytes[..]);

        // A lone message is a frame of its own (unless it is a container).
        if msg.op != Op::Merged {
            let frame: Vec<Message> = FrameDecoder::new(bytes, usize::MAX)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(frame, vec![as_decoded(&msg)]);
        }
    }

    #[test]
    fn set_payload_round_trips_absent_and_empty(
        mut msg in any_message(),
        payload in prop::option::of(any_payload()),
    ) {
        msg.set_payload(payload.clone());
        let decoded = Message::decode(&msg.to_bytes()).unwrap();
        prop_assert_eq!(decoded.payload(), payload.as_ref());
    }

    #[test]
    fn accepted_mutations_of_messages_reencode(
        msg in any_message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = msg.to_bytes().to_vec();
        for (at, byte, kind) in edits {
            match kind {
                0 if !bytes.is_empty() => {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                1 => {
                    let i = at.index(bytes.len() + 1);
                    bytes.truncate(i);
                }
                _ => {
                    let i = at.index(bytes.len() + 1);
                    bytes.insert(i, byte);
                }
            }
        }
        decode_everything(&Bytes::from(bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merged_frames_round_trip(msgs in prop::collection::vec(any_message(), 1..80)) {
        let mut msgs = msgs;
        // A lone message goes out unwrapped; a lone container would then
        // read as a frame of its own entries.
        if msgs.len() == 1 && msgs[0].op == Op::Merged {
            msgs[0].op = Op::MuxServerMsg;
        }
        let mut builder = FrameBuilder::new();
        let mut again = FrameBuilder::new();
        for m in &msgs {
            builder.push(m);
            again.push_encoded(&m.to_bytes());
        }
        prop_assert_eq!(builder.len(), msgs.len());
        let frame = builder.finish().unwrap();
        prop_assert_eq!(again.finish().unwrap(), frame.clone());

        let decoder = FrameDecoder::new(frame.clone(), usize::MAX).unwrap();
        prop_assert_eq!(decoder.is_merged(), msgs.len() > 1);
        let decoded: Vec<Message> = decoder.collect::<Result<_, _>>().unwrap();
        let want: Vec<Message> = msgs.iter().map(as_decoded).collect();
        prop_assert_eq!(&decoded, &want);

        // Go's container: mux 0, seq = count, no deadline/handler/flags, empty payload.
        if msgs.len() > 1 {
            let header = Message::decode(&frame).unwrap();
            prop_assert_eq!(header.op, Op::Merged);
            prop_assert_eq!(header.seq as usize, msgs.len());
            prop_assert_eq!(
                (header.mux_id, header.deadline_ms, header.handler, header.flags, header.payload()),
                (0, 0, HandlerId(0), Flags::NONE, None)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn connect_requests_round_trip(
        id in any::<[u8; 16]>(),
        host in any::<String>(),
        time in any_timestamp(),
        token in any::<String>(),
    ) {
        let p = ConnectRequest { id: InstanceId(id), host, time, token };
        prop_assert_eq!(ConnectRequest::decode(&p.to_bytes()), Ok(p));
    }

    #[test]
    fn connect_responses_round_trip(
        id in any::<[u8; 16]>(),
        accepted in any::<bool>(),
        rejected_reason in any::<String>(),
    ) {
        let p = ConnectResponse { id: InstanceId(id), accepted, rejected_reason };
        prop_assert_eq!(ConnectResponse::decode(&p.to_bytes()), Ok(p));
    }

    #[test]
    fn mux_connect_errors_round_trip(error in any::<String>()) {
        let p = MuxConnectError { error };
        prop_assert_eq!(MuxConnectError::decode(&p.to_bytes()), Ok(p));
    }

    #[test]
    fn pings_and_pongs_round_trip(
        t in any_timestamp(),
        not_found in any::<bool>(),
        error in prop::option::of(any::<String>()),
    ) {
        let ping = PingPayload { t };
        prop_assert_eq!(PingPayload::decode(&ping.to_bytes()), Ok(ping));
        let pong = PongPayload { not_found, error, t };
        prop_assert_eq!(PongPayload::decode(&pong.to_bytes()), Ok(pong));
    }

    #[test]
    fn long_strings_use_wider_headers_and_round_trip(len in 0..70_000usize) {
        let error = "e".repeat(len);
        let p = MuxConnectError { error };
        let bytes = p.to_bytes();
        // 81 a5 "Error" then the str header: fixstr, str8, str16 or str32.
        let header = match len {
            0..=31 => 1,
            32..=0xff => 2,
            0x100..=0xffff => 3,
            _ => 5,
        };
        prop_assert_eq!(bytes.len(), 7 + header + len);
        prop_assert_eq!(MuxConnectError::decode(&bytes), Ok(p));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_everything(&Bytes::from(bytes));
    }

    #[test]
    fn random_bytes_behind_a_valid_head_never_panic(
        head in prop::sample::select(vec![
            // fixarray 7 with small ints, a merged container, and the
            // fixmap heads of each control payload.
            &[0x97u8, 0x01, 0x00, 0x00, 0x00][..],
            &[0x97, 0x00, 0x05, 0x00, 0x00, 0x11, 0x00, 0xc4, 0x00][..],
            &[0x84, 0xa2, b'I', b'D'][..],
            &[0x83, 0xa8][..],
            &[0x81, 0xa5, b'E', b'r', b'r', b'o', b'r'][..],
            &[0x81, 0xa1, b't'][..],
            &[0x83, 0xa2, b'n', b'f'][..],
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        decode_everything(&Bytes::from([head, &tail[..]].concat()));
    }
}

#[test]
fn every_flag_byte_round_trips_with_and_without_subroute() {
    for bits in 0..=u8::MAX {
        for subroute in [None, Some(SubrouteId::new(HandlerId(9), "/data1"))] {
            let mut msg = Message::new(Op::ConnectMux, 6);
            msg.flags = Flags::from_bits(bits);
            msg.subroute = subroute;
            msg.payload = Bytes::from_static(b"x");
            let bytes = msg.to_bytes();
            // The flag byte on the wire: the SUBROUTE bit follows `subroute`.
            let want = (bits & !0x20) | if subroute.is_some() { 0x20 } else { 0 };
            let flag_at = if want < 0x80 { 6 } else { 7 };
            assert_eq!(bytes[flag_at], want, "flags {bits:#04x}");
            let decoded = Message::decode(&bytes).unwrap();
            assert_eq!(decoded, as_decoded(&msg), "flags {bits:#04x}");
            assert_eq!(decoded.flags.bits(), bits & !0x20);
        }
    }
}

#[test]
fn payload_sizes_at_bin_header_boundaries_round_trip() {
    for (len, header) in [
        (0, &[0xc4, 0x00][..]),
        (255, &[0xc4, 0xff][..]),
        (256, &[0xc5, 0x01, 0x00][..]),
        (65_535, &[0xc5, 0xff, 0xff][..]),
        (65_536, &[0xc6, 0x00, 0x01, 0x00, 0x00][..]),
    ] {
        let mut msg = Message::new(Op::MuxClientMsg, 3);
        msg.flags = Flags::CRC;
        msg.payload = Bytes::from(vec![0x5a; len]);
        let bytes = msg.to_bytes();
        assert_eq!(&bytes[7..7 + header.len()], header, "payload of {len}");
        assert_eq!(bytes.len(), msg.encoded_len());
        assert_eq!(Message::decode(&bytes).unwrap(), msg, "payload of {len}");
    }
}
