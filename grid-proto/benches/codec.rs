//! Codec benchmarks: decoding and encoding what Go typically sends.
//!
//! - `request_512`: one OpRequest with a 512-byte payload and a CRC, alone in
//!   its frame.
//! - `merged_50x16`: one OpMerged frame of 50 MuxServerMsg, each with a
//!   16-byte payload and a CRC.
//!
//! Throughput is counted in messages, so criterion's `thrpt` line gives
//! messages per second (ns per message = 1e9 / thrpt). Run with
//! `cargo bench -p grid-proto --bench codec -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use grid_proto::{
    DEFAULT_MAX_MESSAGE_SIZE, Flags, FrameBuilder, FrameDecoder, HandlerId, Message, Op,
};

const MERGED_COUNT: usize = 50;

fn request_512() -> Message {
    let mut msg = Message::new(Op::Request, 1234);
    msg.deadline_ms = 60_000;
    msg.handler = HandlerId(9);
    msg.flags = Flags::CRC | Flags::EOF;
    msg.payload = Bytes::from((0..512).map(|i| i as u8).collect::<Vec<u8>>());
    msg
}

fn small_stream_messages() -> Vec<Message> {
    (0..MERGED_COUNT)
        .map(|i| {
            let mut msg = Message::new(Op::MuxServerMsg, 100 + i as u64);
            msg.seq = i as u32;
            msg.flags = Flags::CRC;
            msg.payload = Bytes::from(vec![i as u8; 16]);
            msg
        })
        .collect()
}

/// Decodes every message of `frame` as a connection would.
fn decode_frame(frame: &Bytes) -> usize {
    let mut n = 0;
    for msg in FrameDecoder::new(frame.clone(), DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
        black_box(msg.unwrap());
        n += 1;
    }
    n
}

fn bench_request(c: &mut Criterion) {
    let msg = request_512();
    let frame = msg.to_bytes();
    assert_eq!(decode_frame(&frame), 1);

    let mut group = c.benchmark_group("request_512");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| b.iter(|| decode_frame(black_box(&frame))));
    group.bench_function("encode", |b| b.iter(|| black_box(&msg).to_bytes()));
    group.finish();
}

fn bench_merged(c: &mut Criterion) {
    let msgs = small_stream_messages();
    let encode = |msgs: &[Message]| {
        let mut builder = FrameBuilder::new();
        for msg in msgs {
            builder.push(msg);
        }
        builder.finish().unwrap()
    };
    let frame = encode(&msgs);
    assert!(
        FrameDecoder::new(frame.clone(), usize::MAX)
            .unwrap()
            .is_merged()
    );
    assert_eq!(decode_frame(&frame), MERGED_COUNT);

    let mut group = c.benchmark_group("merged_50x16");
    group.throughput(Throughput::Elements(MERGED_COUNT as u64));
    group.bench_function("decode", |b| b.iter(|| decode_frame(black_box(&frame))));
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&msgs))));
    group.finish();
}

criterion_group!(benches, bench_request, bench_merged);
criterion_main!(benches);
