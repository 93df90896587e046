//! Fuzzes every decoder of `grid-proto` with one input: the frame decoder
//! (plain and merged frames), `Message::decode` and each control payload.
//! Nothing may panic, and everything that decodes must survive a
//! re-encode/decode round trip unchanged.

#![no_main]

use bytes::Bytes;
use grid_proto::{
    ConnectRequest, ConnectResponse, DEFAULT_MAX_MESSAGE_SIZE, FrameBuilder, FrameDecoder, Message,
    MuxConnectError, PingPayload, PongPayload,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);

    if let Ok(msg) = Message::decode(&input) {
        assert_round_trips(&msg);
    }

    if let Ok(decoder) = FrameDecoder::new(input.clone(), DEFAULT_MAX_MESSAGE_SIZE) {
        let merged = decoder.is_merged();
        let mut msgs = Vec::new();
        let mut all_ok = true;
        for item in decoder {
            match item {
                Ok(msg) => {
                    assert_round_trips(&msg);
                    msgs.push(msg);
                }
                Err(_) => all_ok = false,
            }
        }
        // A merged frame whose entries all decode re-packs into a frame that
        // decodes to the same messages. (A lone entry would be sent
        // unwrapped, and a lone nested container would then read as a
        // frame of its own.)
        if merged && all_ok && msgs.len() >= 2 {
            let mut builder = FrameBuilder::new();
            for msg in &msgs {
                builder.push(msg);
            }
            let frame = builder.finish().expect("two or more messages make a frame");
            let again: Vec<Message> = FrameDecoder::new(frame, usize::MAX)
                .expect("no size limit")
                .collect::<Result<_, _>>()
                .expect("a re-packed frame decodes");
            assert_eq!(again, msgs);
        }
    }

    if let Ok(p) = ConnectRequest::decode(&input) {
        assert_eq!(ConnectRequest::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = ConnectResponse::decode(&input) {
        assert_eq!(ConnectResponse::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = MuxConnectError::decode(&input) {
        assert_eq!(MuxConnectError::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = PingPayload::decode(&input) {
        assert_eq!(PingPayload::decode(&p.to_bytes()), Ok(p));
    }
    if let Ok(p) = PongPayload::decode(&input) {
        assert_eq!(PongPayload::decode(&p.to_bytes()), Ok(p));
    }
});

/// A decoded message re-encodes (canonically: smallest ints, fixarray
/// header, fresh CRC) to `encoded_len()` bytes that decode back to it.
fn assert_round_trips(msg: &Message) {
    let bytes = msg.to_bytes();
    assert_eq!(bytes.len(), msg.encoded_len());
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(msg));
}
