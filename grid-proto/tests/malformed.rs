//! Malformed input: a corpus of broken frames and payloads, each with the
//! exact [`DecodeError`] the codec must report (docs/protocol.md#envelope,
//! docs/protocol.md#merged, docs/protocol.md#payloads), and
//! a check that nothing in it (or cut or bit-flipped from it) makes any
//! decoder panic.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use grid_proto::{
    ConnectRequest, ConnectResponse, DecodeError, FrameDecoder, Message, MuxConnectError, Op,
    PingPayload, PongPayload, crc,
};

/// Hex with optional whitespace.
fn h(s: &str) -> Vec<u8> {
    let clean: String = s.split_whitespace().collect();
    hex::decode(&clean).unwrap_or_else(|e| panic!("bad hex in test {s:?}: {e}"))
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Appends the correct CRC trailer.
fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let c = crc(&bytes);
    bytes.extend_from_slice(&c.to_le_bytes());
    bytes
}

fn repeat(byte: u8, n: usize) -> Vec<u8> {
    vec![byte; n]
}

/// Which decoder a corpus entry is fed to.
#[derive(Debug, Clone, Copy)]
enum Decoder {
    /// `Message::decode`; the entry also goes through `FrameDecoder` with no
    /// size limit, which must report the same result.
    Message,
    /// `FrameDecoder::new(input, max)` and its iterator.
    Frame {
        max: usize,
    },
    ConnectRequest,
    ConnectResponse,
    MuxConnectError,
    Ping,
    Pong,
}

/// What the decoder must do with a corpus entry.
#[derive(Debug)]
enum Expect {
    /// Fail with exactly this error (for `Frame`: `FrameDecoder::new` fails).
    Err(DecodeError),
    /// Accept the input.
    Ok,
    /// `FrameDecoder` yields these items in order (an op for each message
    /// that decodes), then ends.
    Items(Vec<Result<Op, DecodeError>>),
}

struct Case {
    name: &'static str,
    decoder: Decoder,
    input: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, decoder: Decoder, input: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        decoder,
        input,
        expect,
    }
}

fn truncated(field: &'static str, needed: usize, available: usize) -> DecodeError {
    DecodeError::Truncated {
        field,
        needed,
        available,
    }
}

fn wrong_type(field: &'static str, marker: u8) -> DecodeError {
    DecodeError::WrongType { field, marker }
}

fn out_of_range(field: &'static str, value: i128) -> DecodeError {
    DecodeError::OutOfRange { field, value }
}

fn missing(trailer: &'static str, available: usize) -> DecodeError {
    DecodeError::MissingTrailer { trailer, available }
}

fn invalid(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::InvalidValue { field, reason }
}

const WRONG_ID_LEN: &str = "instance id is not 16 bytes";
const NOT_TIMESTAMP: &str = "not a timestamp extension";
const WRONG_TIMESTAMP_LEN: &str = "timestamp extension has a wrong length";
const NANOS_OUT_OF_RANGE: &str = "timestamp nanoseconds out of range";

/// C.4: Response mux 1, flags CRC|EOF, payload `world`.
const C4: &str = "97 01 00 00 00 0f 03 c4 05 77 6f 72 6c 64 37 6d fa 0c";
/// C.7: AckMux mux 5 seq 0, CRC.
const C7_ACK: &str = "97 05 00 00 00 0d 01 c4 00 14 e5 03 b9";
/// The two entries of C.8 (UnblockSrvMux, MuxServerMsg), each with its bin
/// header.
const C8_ENTRY1: &str = "c4 0d 97 02 01 00 00 0b 01 c4 00 7c e7 f2 44";
const C8_ENTRY2: &str = "c4 0d 97 03 04 00 00 0a 11 c4 00 5e 13 1c f0";

/// A merged container header for `n` (< 128) entries.
fn merged_header(n: u8) -> Vec<u8> {
    vec![0x97, 0x00, n, 0x00, 0x00, 0x11, 0x00, 0xc4, 0x00]
}

/// Wraps an encoded message as a merged-frame entry (bin8).
fn entry(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc4, u8::try_from(msg.len()).unwrap()];
    out.extend_from_slice(msg);
    out
}

fn envelope_cases() -> Vec<Case> {
    use Decoder::Message as M;
    use Expect::{Err, Ok};
    let plain_request = "01 00 cd ea 60 09 0e 02 c4 05 68 65 6c 6c 6f";
    let c4_bad_payload = {
        let mut b = h(C4);
        b[9] ^= 0x01;
        b
    };
    let c4_bad_payload_crc = crc(&c4_bad_payload[..14]);
    let unknown_op_bad_crc = h("97 01 00 00 00 12 01 c4 00 00 00 00 00");
    let sub_31 = cat(&[&h("97 01 00 00 09 0e 20 c4 00"), &repeat(0xab, 31)]);
    let crc_sub_31 = with_crc(cat(&[&h("97 01 00 00 09 0e 21 c4 00"), &repeat(0xab, 31)]));
    vec![
        case("empty input", M, vec![], Err(truncated("envelope", 1, 0))),
        case(
            "envelope is a map",
            M,
            h("87 01 00 00 00 0e 00 c4 00"),
            Err(wrong_type("envelope", 0x87)),
        ),
        case(
            "array of 6 elements",
            M,
            h("96 01 00 00 00 0e 00"),
            Err(DecodeError::TupleLength { len: 6 }),
        ),
        case(
            "array of 8 elements",
            M,
            h("98 01 00 00 00 0e 00 c4 00 00"),
            Err(DecodeError::TupleLength { len: 8 }),
        ),
        case(
            "array16 header with count 8",
            M,
            h("dc 00 08 01 00 00 00 0e 00 c4 00 00"),
            Err(DecodeError::TupleLength { len: 8 }),
        ),
        case(
            "array16 header with count 7 is accepted",
            M,
            h(&format!("dc 00 07 {plain_request}")),
            Ok,
        ),
        case(
            "array32 header with count 7 is accepted",
            M,
            h(&format!("dd 00 00 00 07 {plain_request}")),
            Ok,
        ),
        case(
            "array16 header cut after one count byte",
            M,
            h("dc 00"),
            Err(truncated("envelope", 2, 1)),
        ),
        case(
            "nil payload (0xc0)",
            M,
            h("97 01 00 00 00 0e 00 c0"),
            Err(wrong_type("Payload", 0xc0)),
        ),
        case(
            "fixstr payload",
            M,
            h("97 01 00 00 00 0e 00 a1 78"),
            Err(wrong_type("Payload", 0xa1)),
        ),
        case(
            "str8 payload",
            M,
            h("97 01 00 00 00 0e 00 d9 01 78"),
            Err(wrong_type("Payload", 0xd9)),
        ),
        case(
            "negative fixint MuxID (0xff)",
            M,
            h("97 ff 00 00 00 0e 00 c4 00"),
            Err(out_of_range("MuxID", -1)),
        ),
        case(
            "negative int8 MuxID (0xd0 0x80)",
            M,
            h("97 d0 80 00 00 00 0e 00 c4 00"),
            Err(out_of_range("MuxID", -128)),
        ),
        case(
            "negative int64 MuxID",
            M,
            h("97 d3 80 00 00 00 00 00 00 00 00 00 00 0e 00 c4 00"),
            Err(out_of_range("MuxID", i128::from(i64::MIN))),
        ),
        case(
            "float MuxID",
            M,
            h("97 ca 00 00 00 00 00 00 00 0e 00 c4 00"),
            Err(wrong_type("MuxID", 0xca)),
        ),
        case(
            "Seq of 2^32 (0xcf)",
            M,
            h("97 01 cf 00 00 00 01 00 00 00 00 00 00 0e 00 c4 00"),
            Err(out_of_range("Seq", 1 << 32)),
        ),
        case(
            "Seq of 2^32-1 is accepted",
            M,
            h("97 01 ce ff ff ff ff 00 00 0e 00 c4 00"),
            Ok,
        ),
        case(
            "negative int32 DeadlineMS",
            M,
            h("97 01 00 d2 ff ff ff ff 00 0e 00 c4 00"),
            Err(out_of_range("DeadlineMS", -1)),
        ),
        case(
            "Handler 256 (0xcd 01 00)",
            M,
            h("97 01 00 00 cd 01 00 0e 00 c4 00"),
            Err(out_of_range("Handler", 256)),
        ),
        case(
            "Op 256",
            M,
            h("97 01 00 00 00 cd 01 00 00 c4 00"),
            Err(out_of_range("Op", 256)),
        ),
        case(
            "Flags 256",
            M,
            h("97 01 00 00 00 0e cd 01 00 c4 00"),
            Err(out_of_range("Flags", 256)),
        ),
        case(
            "unknown op 0",
            M,
            h("97 01 00 00 00 00 00 c4 00"),
            Err(DecodeError::UnknownOp { op: 0 }),
        ),
        case(
            "unknown op 18 with a valid CRC",
            M,
            with_crc(h("97 01 00 00 00 12 01 c4 00")),
            Err(DecodeError::UnknownOp { op: 18 }),
        ),
        case(
            "unknown op 18 with a bad CRC: the CRC is checked first",
            M,
            unknown_op_bad_crc.clone(),
            Err(DecodeError::CrcMismatch {
                received: 0,
                computed: crc(&unknown_op_bad_crc[..9]),
            }),
        ),
        case(
            "unknown op 255 with its CRC trailer missing: trailers come first",
            M,
            h("97 01 00 00 00 cc ff 01 c4 00"),
            Err(missing("crc", 0)),
        ),
        case(
            "bad CRC (payload bit flipped)",
            M,
            c4_bad_payload,
            Err(DecodeError::CrcMismatch {
                received: 0x0cfa_6d37,
                computed: c4_bad_payload_crc,
            }),
        ),
        case(
            "bad CRC (checksum byte changed)",
            M,
            h("97 01 00 00 00 0f 03 c4 05 77 6f 72 6c 64 36 6d fa 0c"),
            Err(DecodeError::CrcMismatch {
                received: 0x0cfa_6d36,
                computed: 0x0cfa_6d37,
            }),
        ),
        case(
            "CRC flag with 3 trailing bytes",
            M,
            h("97 01 00 00 00 0f 03 c4 00 aa bb cc"),
            Err(missing("crc", 3)),
        ),
        case(
            "subroute flag with 31 trailing bytes",
            M,
            sub_31,
            Err(missing("subroute", 31)),
        ),
        case(
            "CRC and subroute flags, valid CRC, 31 subroute bytes",
            M,
            crc_sub_31,
            Err(missing("subroute", 31)),
        ),
        case(
            "bin8 payload longer than the frame",
            M,
            h("97 01 00 00 00 0f 00 c4 05 61 62"),
            Err(truncated("Payload", 5, 2)),
        ),
        case(
            "bin32 payload of 4 GiB",
            M,
            h("97 01 00 00 00 0f 00 c6 ff ff ff ff"),
            Err(truncated("Payload", 0xffff_ffff, 0)),
        ),
    ]
}

fn frame_cases() -> Vec<Case> {
    use Expect::{Err, Items};
    let any = Decoder::Frame { max: usize::MAX };
    let ack = h(C7_ACK);
    let unblock_srv = Ok(Op::UnblockSrvMux);
    let server_msg = Ok(Op::MuxServerMsg);
    vec![
        case(
            "frame larger than max_size",
            Decoder::Frame { max: 12 },
            ack.clone(),
            Err(DecodeError::TooLarge { size: 13, max: 12 }),
        ),
        case(
            "frame exactly max_size is accepted",
            Decoder::Frame { max: 13 },
            ack.clone(),
            Items(vec![Ok(Op::AckMux)]),
        ),
        case(
            "merged count 3 with 2 entries",
            any,
            cat(&[&merged_header(3), &h(C8_ENTRY1), &h(C8_ENTRY2)]),
            Items(vec![
                unblock_srv.clone(),
                server_msg.clone(),
                Result::Err(truncated("merged entry", 1, 0)),
            ]),
        ),
        case(
            "merged entry that is a str, not bin",
            any,
            cat(&[
                &merged_header(2),
                &h(C8_ENTRY1),
                &[0xd9, 0x0d],
                &h(C8_ENTRY2)[2..],
            ]),
            Items(vec![
                unblock_srv.clone(),
                Result::Err(wrong_type("merged entry", 0xd9)),
            ]),
        ),
        case(
            "merged entry longer than the frame",
            any,
            cat(&[&merged_header(1), &h(C8_ENTRY1)[..11]]),
            Items(vec![Result::Err(truncated("merged entry", 13, 9))]),
        ),
        case(
            "merged entry with a bad inner CRC",
            any,
            cat(&[
                &merged_header(2),
                &h("c4 0d 97 02 01 00 00 0b 01 c4 00 7c e7 f2 45"),
                &h(C8_ENTRY2),
            ]),
            // Every entry is framed on its own, so the decoder goes on; the
            // connection drops on the first fatal error.
            Items(vec![
                Result::Err(DecodeError::CrcMismatch {
                    received: 0x45f2_e77c,
                    computed: 0x44f2_e77c,
                }),
                server_msg.clone(),
            ]),
        ),
        case(
            "merged entry with an unknown op (not fatal)",
            any,
            cat(&[
                &merged_header(3),
                &entry(&ack),
                &entry(&h("97 01 00 00 00 12 00 c4 00")),
                &h(C8_ENTRY1),
            ]),
            Items(vec![
                Ok(Op::AckMux),
                Result::Err(DecodeError::UnknownOp { op: 18 }),
                unblock_srv.clone(),
            ]),
        ),
        case(
            "merged entry holding a cut-off tuple",
            any,
            cat(&[&merged_header(1), &entry(&h("97 01 00"))]),
            Items(vec![Result::Err(truncated("DeadlineMS", 1, 0))]),
        ),
        case(
            "nested merged entry is returned as it is",
            any,
            cat(&[
                &merged_header(2),
                &entry(&cat(&[&merged_header(1), &h(C8_ENTRY1)])),
                &h(C8_ENTRY2),
            ]),
            Items(vec![Ok(Op::Merged), server_msg]),
        ),
        case(
            "merged container with count 0",
            any,
            merged_header(0),
            Items(vec![]),
        ),
        case(
            "merged container with a nil payload",
            any,
            cat(&[&h("97 00 02 00 00 11 00 c0"), &h(C8_ENTRY1), &h(C8_ENTRY2)]),
            Items(vec![Result::Err(wrong_type("Payload", 0xc0))]),
        ),
    ]
}

fn payload_cases() -> Vec<Case> {
    use Decoder::{
        ConnectRequest as Req, ConnectResponse as Resp, MuxConnectError as MuxErr, Ping, Pong,
    };
    use Expect::{Err, Ok};
    let id15 = cat(&[&h("81 a2 49 44 c4 0f"), &repeat(0x11, 15)]);
    let id17 = cat(&[&h("81 a2 49 44 c4 11"), &repeat(0x11, 17)]);
    let deep_array = cat(&[&h("82 a1 78"), &repeat(0x91, 100), &h("c0 a2 6e 66 c3")]);
    let deep_map = cat(&[&h("81 a1 78"), &[0x81, 0xa0].repeat(100), &h("c0")]);
    let nested_10 = cat(&[&h("82 a1 78"), &repeat(0x91, 10), &h("c0 a2 6e 66 c3")]);
    vec![
        case(
            "connectReq with an ID of 15 bytes",
            Req,
            id15,
            Err(invalid("ID", WRONG_ID_LEN)),
        ),
        case(
            "connectReq with an ID of 17 bytes",
            Req,
            id17,
            Err(invalid("ID", WRONG_ID_LEN)),
        ),
        case(
            "connectReq with Time of ext type 3",
            Req,
            cat(&[&h("81 a4 54 69 6d 65 c7 0c 03"), &repeat(0, 12)]),
            Err(invalid("Time", NOT_TIMESTAMP)),
        ),
        case(
            "connectReq with an 8-byte ext type 5 Time",
            Req,
            cat(&[&h("81 a4 54 69 6d 65 d7 05"), &repeat(0, 8)]),
            Err(invalid("Time", WRONG_TIMESTAMP_LEN)),
        ),
        case(
            "connectReq with Time as a str",
            Req,
            h("81 a4 54 69 6d 65 a1 78"),
            Err(wrong_type("Time", 0xa1)),
        ),
        case(
            "connectReq with a 4 GiB ext32 Time",
            Req,
            h("81 a4 54 69 6d 65 c9 ff ff ff ff 05"),
            Err(truncated("Time", 0xffff_ffff, 0)),
        ),
        case(
            "connectReq with a Host that is not UTF-8 (Go keeps any bytes)",
            Req,
            h("81 a4 48 6f 73 74 a2 ff fe"),
            Ok,
        ),
        case(
            "connectReq with a Host longer than the payload",
            Req,
            h("81 a4 48 6f 73 74 d9 10 61 62"),
            Err(truncated("Host", 16, 2)),
        ),
        case(
            "connectReq that is an array",
            Req,
            h("92 01 02"),
            Err(wrong_type("connectReq", 0x92)),
        ),
        case(
            "connectReq that is empty",
            Req,
            vec![],
            Err(truncated("connectReq", 1, 0)),
        ),
        case(
            "connectResp with a nil Accepted",
            Resp,
            h("81 a8 41 63 63 65 70 74 65 64 c0"),
            Err(wrong_type("Accepted", 0xc0)),
        ),
        case(
            "connectResp with a bin RejectedReason that is not UTF-8 (Go keeps any bytes)",
            Resp,
            h("81 ae 52 65 6a 65 63 74 65 64 52 65 61 73 6f 6e c4 02 c3 28"),
            Ok,
        ),
        case(
            "muxConnectError with an Error that is not UTF-8 (Go keeps any bytes)",
            MuxErr,
            h("81 a5 45 72 72 6f 72 a1 c0"),
            Ok,
        ),
        case(
            "muxConnectError with a nil Error",
            MuxErr,
            h("81 a5 45 72 72 6f 72 c0"),
            Err(wrong_type("Error", 0xc0)),
        ),
        case(
            "muxConnectError with an integer key",
            MuxErr,
            h("81 01 02"),
            Err(wrong_type("muxConnectError", 0x01)),
        ),
        case(
            "muxConnectError announcing 2 entries, holding 1",
            MuxErr,
            h("82 a5 45 72 72 6f 72 a0"),
            Err(truncated("muxConnectError", 1, 0)),
        ),
        case(
            "ping with nanoseconds of 1e9",
            Ping,
            h("81 a1 74 c7 0c 05 00 00 00 00 65 93 7d 25 3b 9a ca 00"),
            Err(invalid("t", NANOS_OUT_OF_RANGE)),
        ),
        case(
            "ping with nanoseconds of 999999999 is accepted",
            Ping,
            h("81 a1 74 c7 0c 05 00 00 00 00 65 93 7d 25 3b 9a c9 ff"),
            Ok,
        ),
        case(
            "ping with an unknown key whose value is cut off",
            Ping,
            h("81 a1 78 cd 01"),
            Err(truncated("pingMsg", 3, 2)),
        ),
        case(
            "ping with an unknown key holding the reserved marker 0xc1",
            Ping,
            h("81 a1 78 c1"),
            Err(wrong_type("pingMsg", 0xc1)),
        ),
        case(
            "pong with 'nf' not a bool",
            Pong,
            h("81 a2 6e 66 01"),
            Err(wrong_type("nf", 0x01)),
        ),
        case(
            "pong with 'e' an integer",
            Pong,
            h("81 a1 65 05"),
            Err(wrong_type("e", 0x05)),
        ),
        case(
            "pong with an unknown key nesting 100 arrays",
            Pong,
            deep_array,
            Err(DecodeError::TooDeep { field: "pongMsg" }),
        ),
        case(
            "pong with an unknown key nesting 100 maps",
            Pong,
            deep_map,
            Err(DecodeError::TooDeep { field: "pongMsg" }),
        ),
        case(
            "pong with an unknown key nesting 10 arrays is accepted",
            Pong,
            nested_10,
            Ok,
        ),
    ]
}

fn corpus() -> Vec<Case> {
    let mut all = envelope_cases();
    all.extend(frame_cases());
    all.extend(payload_cases());
    all
}

/// Everything `FrameDecoder` yields for `input` (ops of good messages).
fn frame_items(input: Bytes, max: usize) -> Result<Vec<Result<Op, DecodeError>>, DecodeError> {
    let decoder = FrameDecoder::new(input, max)?;
    // Bounded: a decoder that never ends is a bug, not a hang.
    Ok(decoder.take(1000).map(|m| m.map(|m| m.op)).collect())
}

fn decode_with(decoder: Decoder, input: &Bytes) -> Result<(), DecodeError> {
    match decoder {
        Decoder::Message => Message::decode(input).map(drop),
        Decoder::Frame { max } => FrameDecoder::new(input.clone(), max).map(drop),
        Decoder::ConnectRequest => ConnectRequest::decode(input).map(drop),
        Decoder::ConnectResponse => ConnectResponse::decode(input).map(drop),
        Decoder::MuxConnectError => MuxConnectError::decode(input).map(drop),
        Decoder::Ping => PingPayload::decode(input).map(drop),
        Decoder::Pong => PongPayload::decode(input).map(drop),
    }
}

/// Checks one corpus entry; returns what went wrong.
fn check(case: &Case) -> Result<(), String> {
    let input = Bytes::from(case.input.clone());
    match (&case.expect, case.decoder) {
        (Expect::Items(want), Decoder::Frame { max }) => {
            let got = frame_items(input.clone(), max)
                .map_err(|e| format!("FrameDecoder::new failed: {e:?}"))?;
            if &got != want {
                return Err(format!("yielded {got:?}, want {want:?}"));
            }
        }
        (Expect::Items(_), _) => return Err("Items needs the Frame decoder".into()),
        (Expect::Err(want), decoder) => match decode_with(decoder, &input) {
            Ok(()) => return Err(format!("accepted, want {want:?}")),
            Err(got) if &got != want => return Err(format!("failed with {got:?}, want {want:?}")),
            Err(_) => {}
        },
        (Expect::Ok, decoder) => {
            decode_with(decoder, &input).map_err(|e| format!("rejected: {e:?}"))?
        }
    }
    if let Decoder::Message = case.decoder {
        // A lone message is a frame: FrameDecoder must agree with
        // Message::decode.
        let want = vec![Message::decode(&input).map(|m| m.op)];
        let got = frame_items(input, usize::MAX)
            .map_err(|e| format!("FrameDecoder::new failed: {e:?}"))?;
        if got != want {
            return Err(format!(
                "FrameDecoder yielded {got:?}, Message::decode {want:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn corpus_entries_fail_with_their_expected_error() {
    let corpus = corpus();
    let failures: Vec<String> = corpus
        .iter()
        .filter_map(|c| {
            check(c).err().map(|e| {
                format!(
                    "{} ({:?}, input {}): {e}",
                    c.name,
                    c.decoder,
                    hex::encode(&c.input)
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} corpus entries misbehave:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    let rejected = corpus
        .iter()
        .filter(|c| match &c.expect {
            Expect::Err(_) => true,
            Expect::Items(items) => items.iter().any(Result::is_err),
            Expect::Ok => false,
        })
        .count();
    println!("{} corpus entries, {rejected} malformed", corpus.len());
    assert!(
        rejected >= 25,
        "the corpus must hold at least 25 malformed inputs"
    );
}

#[test]
fn unknown_op_is_the_only_non_fatal_error() {
    for c in corpus() {
        if let Expect::Err(e) = &c.expect {
            assert_eq!(
                e.is_fatal(),
                !matches!(e, DecodeError::UnknownOp { .. }),
                "{}: {e:?}",
                c.name
            );
        }
    }
}

#[test]
fn seven_element_array16_and_array32_headers_decode_like_fixarray() {
    let body = "01 00 cd ea 60 09 0e 02 c4 05 68 65 6c 6c 6f";
    let canonical = Message::decode(&h(&format!("97 {body}")).into()).unwrap();
    assert_eq!(canonical.payload().unwrap(), "hello");
    for header in ["dc 00 07", "dd 00 00 00 07"] {
        let msg = Message::decode(&h(&format!("{header} {body}")).into()).unwrap();
        assert_eq!(msg, canonical, "header {header}");
        // The encoder always writes the fixarray form, as Go does.
        assert_eq!(msg.to_bytes()[0], 0x97);
    }
}

/// One tuple field as encoded bytes: marker, then `len_bytes` big-endian
/// length or value bytes, then (for bin) the body.
struct Field {
    name: &'static str,
    bytes: Vec<u8>,
    /// Bytes after the marker that hold a length (bin) or the value (int).
    head: usize,
    /// Bytes of bin body after the head.
    body: usize,
}

#[test]
fn a_tuple_cut_inside_any_field_reports_that_field() {
    let fields = [
        // Non-minimal widths everywhere: Go accepts them all.
        Field {
            name: "envelope",
            bytes: h("dc 00 07"),
            head: 2,
            body: 0,
        },
        Field {
            name: "MuxID",
            bytes: h("cf 00 00 01 00 00 00 00 00"),
            head: 8,
            body: 0,
        },
        Field {
            name: "Seq",
            bytes: h("ce 00 01 11 70"),
            head: 4,
            body: 0,
        },
        Field {
            name: "DeadlineMS",
            bytes: h("cd ea 60"),
            head: 2,
            body: 0,
        },
        Field {
            name: "Handler",
            bytes: h("cc 80"),
            head: 1,
            body: 0,
        },
        Field {
            name: "Op",
            bytes: h("d0 0e"),
            head: 1,
            body: 0,
        },
        Field {
            name: "Flags",
            bytes: h("cc 02"),
            head: 1,
            body: 0,
        },
        Field {
            name: "Payload",
            bytes: h("c5 00 03 61 62 63"),
            head: 2,
            body: 3,
        },
    ];
    let full: Vec<u8> = fields.iter().flat_map(|f| f.bytes.clone()).collect();
    let mut start = 0;
    let mut checked = 0;
    for f in &fields {
        assert_eq!(f.bytes.len(), 1 + f.head + f.body, "{}", f.name);
        for k in 0..f.bytes.len() {
            let (needed, available) = if k == 0 {
                (1, 0)
            } else if k <= f.head {
                (f.head, k - 1)
            } else {
                (f.body, k - 1 - f.head)
            };
            let cut = Bytes::copy_from_slice(&full[..start + k]);
            let want = truncated(f.name, needed, available);
            assert_eq!(
                Message::decode(&cut),
                Err(want.clone()),
                "cut at {} ({} + {k}): {}",
                start + k,
                f.name,
                hex::encode(&cut)
            );
            assert_eq!(frame_items(cut, usize::MAX), Ok(vec![Err(want)]));
            checked += 1;
        }
        start += f.bytes.len();
    }
    assert_eq!(checked, full.len());
    let msg = Message::decode(&full.into()).unwrap();
    assert_eq!(
        (msg.mux_id, msg.seq, msg.deadline_ms, msg.handler.0, msg.op),
        (1 << 40, 70_000, 60_000, 128, Op::Request)
    );
    assert_eq!(msg.payload().unwrap(), "abc");
}

#[test]
fn a_message_cut_inside_its_trailers_fails_the_trailer_checks() {
    // C.3: 16-byte tuple, 32-byte subroute, 4-byte CRC.
    let full = h(
        "97 01 00 cd ea 60 09 0e 23 c4 05 68 65 6c 6c 6f 09 00 91 a8 ce 3a 01 6b be b4 6a
                  77 1d a0 4c 5c 62 5f d3 6c d7 cd cc aa 6f 00 3d 7a e2 fa db 1b 3c b8 16 d9",
    );
    assert!(Message::decode(&full.clone().into()).is_ok());
    for len in 16..full.len() {
        let cut = Bytes::copy_from_slice(&full[..len]);
        match Message::decode(&cut) {
            Err(DecodeError::MissingTrailer {
                trailer: "crc",
                available,
            }) if len < 20 => {
                assert_eq!(available, len - 16);
            }
            Err(DecodeError::CrcMismatch { received, computed }) if len >= 20 => {
                assert_eq!(
                    received,
                    u32::from_le_bytes(full[len - 4..len].try_into().unwrap())
                );
                assert_eq!(computed, crc(&full[..len - 4]));
            }
            other => panic!("cut to {len} bytes: {other:?}"),
        }
    }
}

/// Every decoder there is, fed `input`; panics propagate.
fn feed_everything(input: &[u8]) {
    let bytes = Bytes::copy_from_slice(input);
    let _ = Message::decode(&bytes);
    for max in [usize::MAX, input.len().saturating_sub(1)] {
        if let Ok(decoder) = FrameDecoder::new(bytes.clone(), max) {
            for msg in decoder.take(10_000).flatten() {
                let _ = msg.to_bytes();
            }
        }
    }
    let _ = ConnectRequest::decode(&bytes);
    let _ = ConnectResponse::decode(&bytes);
    let _ = MuxConnectError::decode(&bytes);
    let _ = PingPayload::decode(&bytes);
    let _ = PongPayload::decode(&bytes);
}

#[test]
fn no_corpus_entry_panics_any_decoder() {
    let mut runs = 0;
    for c in corpus() {
        // The entry itself, every prefix of it, and every single-bit flip.
        let mut variants = vec![c.input.clone()];
        variants.extend((0..c.input.len()).map(|n| c.input[..n].to_vec()));
        for i in 0..c.input.len() {
            for bit in 0..8 {
                let mut v = c.input.clone();
                v[i] ^= 1 << bit;
                variants.push(v);
            }
        }
        for v in variants {
            if catch_unwind(AssertUnwindSafe(|| feed_everything(&v))).is_err() {
                panic!("{}: a decoder panicked on {}", c.name, hex::encode(&v));
            }
            runs += 1;
        }
    }
    println!("{runs} inputs fed to every decoder");
}
