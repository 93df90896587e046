//! Hostile peers against both drivers (issue 8, issue 12): a hand-driven
//! tungstenite peer (blocking, std `TcpStream`, see `hostile/peer.rs`)
//! attacks a real grid-tokio or grid-smol `Manager` serving the reference
//! handlers, while a well-behaved node on the same runtime stays connected
//! to the same manager and calls both ways for the whole test
//! (`hostile/bed.rs`). Every case runs on each runtime (`on_tokio::`,
//! `on_smol::`).
//!
//! Every test checks that the offending stream or connection is closed
//! (seen on the wire: a rejection, an error message, the socket closing),
//! that the good node's calls all succeed on its one connection, that no
//! panic happens, and prints the test's peak RSS, checked against a bound.
//! Tests run one at a time (for the memory figures); every wait is
//! bounded, and a watchdog ends the process if a test runs for a minute.
//! `cargo test -p conformance --test hostile -- --nocapture` shows the
//! figures.
//!
//! Handshake rejections one at a time (unknown host, clock skew, wrong
//! token in `Connect` or in the upgrade, wrong route) are covered on every
//! runtime by `drivers.rs` (`lifecycle::handshake_rejections`); here they
//! come as a flood, impersonate the connected good node, and skew the
//! clock the other way.

#[path = "hostile/bed.rs"]
mod bed;
#[allow(dead_code)]
#[path = "drivers/harness.rs"]
mod harness;
#[path = "hostile/peer.rs"]
mod peer;

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use grid_proto::driver::tungstenite::{
    Message as WsMessage,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};
use grid_proto::{
    Flags, FrameBuilder, HandlerId, Message, MuxConnectError, Op, State, should_dial,
};

use crate::bed::{Bed, Sampler};
use crate::harness::{Kind, TOKEN};
use crate::peer::{
    LIMIT, Peer, Seen, connect_frame, echo_request, handshake, tcp, tcp_closed_within, upgrade,
    upgrade_request, ws_closed_within,
};

/// How long a dropped connection may take to close.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

fn not_connected(bed: &Bed, host: &str) {
    bed.wait_for("the target to drop the hostile connection", host, |c, _| {
        c.state() != State::Connected
    });
}

// ---- 1–3: handshake rejections ----

/// About 200 refused handshakes in a row (wrong token, the good node's host with
/// a wrong token or a skewed clock, an unknown host, a clock 5 min 10 s
/// ahead, and the good node's host from the wrong side when the target is
/// its dialer): each gets a rejection and its socket closed; the good
/// connection is not replaced and memory does not grow.
fn handshake_rejections_flood(kind: Kind) {
    let bed = Bed::start("handshake_rejections_flood", kind, |_| {});
    let hostile = bed.hostile[0].clone();
    let good = bed.good_host.clone();
    // (claimed host, clock offset in seconds, token, start of the reason)
    let mut cases: Vec<(String, i64, &str, &str)> = vec![
        (hostile.clone(), 0, "bad", "auth token: "),
        (good.clone(), 0, "bad", "auth token: "),
        (
            "http://127.0.0.1:1".into(),
            0,
            TOKEN,
            "unknown incoming host: http://127.0.0.1:1",
        ),
        (
            hostile.clone(),
            5 * 60 + 10,
            TOKEN,
            "time difference too large between servers: 5m",
        ),
        (
            good.clone(),
            -10 * 60,
            TOKEN,
            "time difference too large between servers: 10m0",
        ),
    ];
    if should_dial(&bed.target_host, &good) {
        cases.push((
            good.clone(),
            0,
            TOKEN,
            "grid: expected to be client side, not server side",
        ));
    }
    let rounds = 200 / cases.len();
    let mut slowest_close = Duration::ZERO;
    for _ in 0..rounds {
        for (host, offset, token, reason) in &cases {
            let skew = Duration::from_secs(offset.unsigned_abs());
            let time = if *offset >= 0 {
                SystemTime::now() + skew
            } else {
                SystemTime::now() - skew
            };
            let mut ws = upgrade(bed.addr);
            let answer = handshake(&mut ws, connect_frame(host, time, token));
            assert!(!answer.accepted, "{host} accepted");
            assert!(
                answer.rejected_reason.starts_with(reason),
                "{:?} is not {reason:?}",
                answer.rejected_reason
            );
            slowest_close = slowest_close.max(ws_closed_within(&mut ws, CLOSE_WITHIN));
        }
    }
    assert_eq!(bed.conn(&hostile).state(), State::Unconnected);
    eprintln!(
        "hostile::handshake_rejections_flood: {} refused handshakes, slowest close {slowest_close:?}",
        rounds * cases.len()
    );
    bed.finish(16);
}

// ---- 4: an upgrade that never completes ----

/// With `handshake_timeout` 300 ms, connections that never finish the
/// upgrade (silent, half a request, a request trickled a byte at a time),
/// or finish it but never send a binary `Connect` (silent, or only pings),
/// are closed after the timeout; a 100 KiB request head is refused at
/// once (tungstenite caps it at 64 KiB).
fn upgrade_never_completes(kind: Kind) {
    let timeout = Duration::from_millis(300);
    let bed = Bed::start("upgrade_never_completes", kind, |o| {
        o.connection.handshake_timeout = timeout
    });
    let addr = bed.addr;
    let request = {
        let req = upgrade_request(addr);
        let mut text = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\n", req.uri().path());
        for (name, value) in req.headers() {
            text.push_str(&format!("{name}: {}\r\n", value.to_str().expect("ascii")));
        }
        text.push_str(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        text
    };
    type Attack = Box<dyn FnOnce() -> Duration + Send>;
    let half = request[..request.len() / 2].to_owned();
    let trickle = request.clone();
    let attacks: Vec<(&str, bool, Attack)> = vec![
        (
            "silent tcp",
            true,
            Box::new(move || {
                let mut t = tcp(addr);
                tcp_closed_within(&mut t, CLOSE_WITHIN)
            }),
        ),
        (
            "half a request",
            true,
            Box::new(move || {
                let start = Instant::now();
                let mut t = tcp(addr);
                t.write_all(half.as_bytes()).expect("write");
                tcp_closed_within(&mut t, CLOSE_WITHIN);
                start.elapsed()
            }),
        ),
        (
            "request trickled a byte per 20 ms",
            true,
            Box::new(move || {
                let start = Instant::now();
                let mut t = tcp(addr);
                for b in trickle.as_bytes() {
                    if t.write_all(&[*b]).is_err() || start.elapsed() > CLOSE_WITHIN {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                tcp_closed_within(&mut t, CLOSE_WITHIN);
                start.elapsed()
            }),
        ),
        (
            "100 KiB request head",
            false,
            Box::new(move || {
                let start = Instant::now();
                let mut t = tcp(addr);
                let mut junk = b"GET /minio/grid/v1 HTTP/1.1\r\nX-Junk: ".to_vec();
                junk.resize(100 << 10, b'a');
                let _ = t.write_all(&junk);
                tcp_closed_within(&mut t, CLOSE_WITHIN);
                start.elapsed()
            }),
        ),
        (
            "upgraded, no connect",
            true,
            Box::new(move || {
                let start = Instant::now();
                let mut ws = upgrade(addr);
                ws_closed_within(&mut ws, CLOSE_WITHIN);
                start.elapsed()
            }),
        ),
        (
            "upgraded, only pings and text",
            true,
            Box::new(move || {
                let start = Instant::now();
                let ws = upgrade(addr);
                let mut peer = Peer::start(ws);
                loop {
                    let ping = peer.try_send_ws(WsMessage::Ping(Bytes::from_static(b"p")));
                    let text = peer.try_send_ws(WsMessage::text("connect?"));
                    if ping.is_err() || text.is_err() {
                        break;
                    }
                    if let Some(Seen::Closed(_)) = peer.next(Duration::from_millis(20)) {
                        break;
                    }
                    assert!(start.elapsed() < CLOSE_WITHIN, "still open");
                }
                start.elapsed()
            }),
        ),
    ];
    let threads: Vec<_> = attacks
        .into_iter()
        .map(|(name, timed, attack)| (name, timed, std::thread::spawn(attack)))
        .collect();
    for (name, timed, t) in threads {
        let took = t
            .join()
            .unwrap_or_else(|_| panic!("attack {name:?} failed"));
        eprintln!("hostile::upgrade_never_completes: {name}: closed after {took:?}");
        if timed {
            assert!(
                took >= timeout.mul_f64(0.8),
                "{name}: closed after {took:?}, before the timeout"
            );
        }
    }
    // The target still takes a real connection.
    let mut peer = Peer::connect(bed.addr, &bed.hostile[0]);
    peer.echo(1, b"still serving");
    drop(peer);
    bed.finish(16);
}

// ---- 5: garbage after the upgrade ----

/// A `Connect` payload with an unknown field nested 100 000 arrays deep.
fn deep_connect() -> Bytes {
    let mut p = BytesMut::new();
    p.put_u8(0x81); // map of 1
    p.put_slice(b"\xa1X");
    p.put_bytes(0x91, 100_000); // [[[[…
    p.put_u8(0xc0);
    let mut msg = Message::new(Op::Connect, 0);
    msg.payload = p.freeze();
    msg.to_bytes()
}

/// Garbage as the first message after the upgrade is refused with a
/// rejection and the socket closed; garbage after an accepted handshake
/// drops the connection. No panic, no large allocation (a bin32 header
/// claiming 4 GiB), no stack overflow (nesting 100 000 deep).
fn garbage_after_upgrade(kind: Kind) {
    let bed = Bed::start("garbage_after_upgrade", kind, |_| {});
    let hostile = bed.hostile[0].clone();
    let mut request = Message::new(Op::Request, 1);
    request.handler = HandlerId::TEST;
    let mut bad_payload = Message::new(Op::Connect, 0);
    bad_payload.payload = Bytes::from_static(b"\x93\x01\x02");
    let first: Vec<(&str, Bytes, &str)> = vec![
        (
            "random bytes",
            Bytes::from_static(b"\xde\xad\xbe\xef not msgpack"),
            "error parsing grid connect: ",
        ),
        ("empty", Bytes::new(), "error parsing grid connect: "),
        (
            "bin32 claiming 4 GiB",
            Bytes::from_static(b"\x97\x00\x00\x00\x00\x01\x00\xc6\xff\xff\xff\xff"),
            "error parsing grid connect: ",
        ),
        ("a request", request.to_bytes(), "unexpected connect op: 14"),
        (
            "connect with a bad payload",
            bad_payload.to_bytes(),
            "error parsing connectReq: ",
        ),
        (
            "connect nested 100 000 deep",
            deep_connect(),
            "error parsing connectReq: ",
        ),
    ];
    for (name, frame, reason) in first {
        let mut ws = upgrade(bed.addr);
        let answer = handshake(&mut ws, frame);
        assert!(!answer.accepted, "{name}: accepted");
        assert!(
            answer.rejected_reason.starts_with(reason),
            "{name}: {:?} is not {reason:?}",
            answer.rejected_reason
        );
        ws_closed_within(&mut ws, CLOSE_WITHIN);
    }

    let mut merged_short = BytesMut::from(&b"\x97\x00\xcd\x03\xe8\x00\x00\x11\x00\xc4\x00"[..]);
    merged_short.put_slice(&{
        let mut b = BytesMut::new();
        b.put_u8(0xc4);
        let m = echo_request(9, Bytes::from_static(b"x")).to_bytes();
        b.put_u8(m.len() as u8);
        b.put_slice(&m);
        b
    });
    let later: Vec<(&str, Bytes)> = vec![
        (
            "random bytes",
            Bytes::from_static(b"\xde\xad\xbe\xef garbage"),
        ),
        ("empty", Bytes::new()),
        (
            "bin32 claiming 4 GiB",
            Bytes::from_static(b"\x97\x01\x00\x00\x4e\x0e\x00\xc6\xff\xff\xff\xff"),
        ),
        (
            "8-element envelope",
            Bytes::from_static(b"\x98\x01\x00\x00\x4e\x0e\x00\xc4\x00\x00"),
        ),
        (
            "truncated request",
            echo_request(2, Bytes::from_static(b"truncated"))
                .to_bytes()
                .slice(..10),
        ),
        (
            "merged claiming 1000 entries, holding 1",
            merged_short.freeze(),
        ),
    ];
    for (name, frame) in later {
        let mut peer = Peer::connect(bed.addr, &hostile);
        peer.echo(1, b"fine so far");
        peer.send_raw(frame);
        let why = peer.closed_within(CLOSE_WITHIN);
        eprintln!("hostile::garbage_after_upgrade: {name}: closed ({why})");
        not_connected(&bed, &hostile);
    }
    bed.finish(16);
}

// ---- 6: bad CRC ----

/// A message whose CRC does not match, or whose CRC flag has no trailer,
/// drops the connection, also inside a merged frame; a message without the
/// CRC flag is fine (the CRC is checked when flagged, never required).
fn bad_crc(kind: Kind) {
    let bed = Bed::start("bad_crc", kind, |_| {});
    let hostile = bed.hostile[0].clone();
    let corrupt = |m: Message| -> Bytes {
        let mut b = BytesMut::from(&m.to_bytes()[..]);
        let n = b.len();
        b[n - 6] ^= 0x55; // a payload byte: the CRC no longer matches
        b.freeze()
    };
    let mut no_trailer = BytesMut::from(&echo_request(3, Bytes::new()).to_bytes()[..]);
    no_trailer.truncate(no_trailer.len() - 4);
    let mut merged = FrameBuilder::new();
    merged.push(&echo_request(4, Bytes::from_static(b"good")));
    merged.push_encoded(&corrupt(echo_request(5, Bytes::from_static(b"bad crc"))));
    let cases: Vec<(&str, Bytes)> = vec![
        (
            "payload byte flipped",
            corrupt(echo_request(2, Bytes::from_static(b"bad crc"))),
        ),
        ("flag without trailer", no_trailer.freeze()),
        (
            "inside a merged frame",
            merged.finish().expect("two messages"),
        ),
    ];
    for (name, frame) in cases {
        let mut peer = Peer::connect(bed.addr, &hostile);
        let mut plain = echo_request(1, Bytes::from_static(b"no crc"));
        plain.flags = Flags::NONE;
        peer.send(&plain);
        peer.expect(
            "the answer without a CRC",
            |m| m.op == Op::Response && m.mux_id == 1 && m.payload == "no crc",
            |_| {},
        );
        peer.send_raw(frame);
        let why = peer.closed_within(CLOSE_WITHIN);
        eprintln!("hostile::bad_crc: {name}: closed ({why})");
        not_connected(&bed, &hostile);
    }
    bed.finish(16);
}

// ---- 7: oversize frames ----

/// With `max_message_size` 64 KiB a 60 KiB request is served, but a 1 MiB
/// message, the same in 16 KiB fragments, or a frame header announcing
/// 1 GiB drop the connection before more than the limit is buffered.
fn oversize_frames(kind: Kind) {
    const MAX: usize = 64 << 10;
    let bed = Bed::start("oversize_frames", kind, |o| {
        o.connection.max_message_size = MAX
    });
    let hostile = bed.hostile[0].clone();
    type Attack = fn(&mut Peer);
    let attacks: [(&str, Attack); 3] = [
        ("one 1 MiB message", |p| {
            let _ = p.try_send_ws(WsMessage::Binary(Bytes::from(vec![0x97u8; 1 << 20])));
        }),
        ("1 MiB in 16 KiB fragments", |p| {
            for i in 0..64 {
                let op = if i == 0 {
                    OpCode::Data(Data::Binary)
                } else {
                    OpCode::Data(Data::Continue)
                };
                let frame = Frame::message(vec![0x97u8; 16 << 10], op, i == 63);
                if p.try_send_ws(WsMessage::Frame(frame)).is_err() {
                    return;
                }
            }
        }),
        ("a frame header announcing 1 GiB", |p| {
            // FIN + binary, masked, 64-bit length, mask key.
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&(1u64 << 30).to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]);
            if p.write_tcp(&header).is_err() {
                return;
            }
            let chunk = vec![0u8; 64 << 10];
            for _ in 0..16 {
                if p.write_tcp(&chunk).is_err() {
                    return;
                }
            }
        }),
    ];
    for (name, attack) in attacks {
        let mut peer = Peer::connect(bed.addr, &hostile);
        let big = Bytes::from(vec![b'x'; 60 << 10]);
        peer.send(&echo_request(1, big.clone()));
        let r = peer.expect(
            "the 60 KiB answer",
            |m| m.op == Op::Response && m.mux_id == 1,
            |_| {},
        );
        assert_eq!(r.payload, big);
        let start = Instant::now();
        attack(&mut peer);
        let why = peer.closed_within(CLOSE_WITHIN);
        eprintln!(
            "hostile::oversize_frames: {name}: closed after {:?} ({why})",
            start.elapsed()
        );
        not_connected(&bed, &hostile);
    }
    bed.finish(16);
}

// ---- 8: a flood of ConnectMux ----

/// With `max_incoming_streams` 100, 2 100 `ConnectMux` in a burst: the
/// first 100 are acked, the other 2 000 refused with "too many incoming
/// streams"; the connection stays up and serves; closing streams makes
/// room for new ones; the table never holds more than 100.
fn connect_mux_flood(kind: Kind) {
    const LIMIT_STREAMS: usize = 100;
    const FLOOD: u64 = 2_100;
    let bed = Bed::start("connect_mux_flood", kind, |o| {
        o.connection.max_incoming_streams = LIMIT_STREAMS;
    });
    let hostile = bed.hostile[0].clone();
    let sampler = Sampler::start(bed.conn(&hostile));
    let mut peer = Peer::connect(bed.addr, &hostile);
    let open = |mux_id: u64| {
        let mut m = Message::new(Op::ConnectMux, mux_id);
        m.handler = HandlerId::TEST;
        m.flags = Flags::CRC;
        m
    };
    let mut frame = FrameBuilder::new();
    for id in 1..=FLOOD {
        frame.push(&open(id));
        if !frame.has_room() {
            peer.send_raw(std::mem::take(&mut frame).finish().expect("messages"));
        }
    }
    if let Some(f) = frame.finish() {
        peer.send_raw(f);
    }
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    while acked.len() + refused.len() < FLOOD as usize {
        match peer.next(LIMIT) {
            Some(Seen::Msg(m)) if m.op == Op::AckMux => acked.push(m.mux_id),
            Some(Seen::Msg(m)) if m.op == Op::MuxConnectError => {
                let e = MuxConnectError::decode(&m.payload).expect("an error payload");
                assert_eq!(e.error, "too many incoming streams");
                refused.push(m.mux_id);
            }
            Some(Seen::Msg(_)) => {}
            other => panic!("after {} answers: {other:?}", acked.len() + refused.len()),
        }
    }
    assert_eq!(acked, (1..=LIMIT_STREAMS as u64).collect::<Vec<_>>());
    assert_eq!(refused.len(), FLOOD as usize - LIMIT_STREAMS);
    peer.echo(10_000, b"still up");
    bed.wait_for("100 incoming streams", &hostile, |_, s| {
        s.incoming_streams == LIMIT_STREAMS
    });
    // An accepted stream works: echo one message on stream 60.
    let mut m = Message::new(Op::MuxClientMsg, 60);
    m.seq = 1;
    m.flags = Flags::CRC;
    m.set_payload(Some(Bytes::from_static(b"on 60")));
    peer.send(&m);
    peer.expect(
        "the stream echo",
        |m| m.op == Op::MuxServerMsg && m.mux_id == 60 && m.payload == "on 60",
        |_| {},
    );
    // Closing 50 makes room for 50 more.
    for id in 1..=50 {
        let mut m = Message::new(Op::DisconnectServerMux, id);
        m.flags = Flags::CRC;
        peer.send(&m);
    }
    bed.wait_for("50 incoming streams", &hostile, |_, s| {
        s.incoming_streams == 50
    });
    for id in 20_001..=20_050 {
        peer.send(&open(id));
    }
    let mut more = 0;
    while more < 50 {
        peer.expect(
            "an ack of a new stream",
            |m| m.op == Op::AckMux && m.mux_id > 20_000,
            |m| assert_ne!(m.op, Op::MuxConnectError, "{m:?}"),
        );
        more += 1;
    }
    drop(peer);
    bed.wait_for("the streams to go with the connection", &hostile, |c, s| {
        c.state() != State::Connected && s.incoming_streams == 0
    });
    let peaks = sampler.finish();
    eprintln!(
        "hostile::connect_mux_flood: peak incoming streams {}, peak queued {} B",
        peaks.incoming_streams, peaks.queued_bytes
    );
    assert!(peaks.incoming_streams <= LIMIT_STREAMS, "{peaks:?}");
    bed.finish(16);
}

// ---- 9: a peer that never reads ----

/// With `max_queued_bytes` 1 MiB and `write_timeout` 500 ms, a peer sends
/// 64 KiB echo requests as fast as it can and never reads: the target's
/// outgoing queue stays near 1 MiB (it stops reading while the queue is
/// over the limit) and the connection is dropped about 500 ms after its
/// writes block.
fn peer_that_never_reads(kind: Kind) {
    const MAX_QUEUED: usize = 1 << 20;
    let write_timeout = Duration::from_millis(500);
    let bed = Bed::start("peer_that_never_reads", kind, |o| {
        o.connection.max_queued_bytes = MAX_QUEUED;
        o.write_timeout = write_timeout;
    });
    let hostile = bed.hostile[0].clone();
    let mut ws = upgrade(bed.addr);
    let answer = handshake(&mut ws, connect_frame(&hostile, SystemTime::now(), TOKEN));
    assert!(answer.accepted);
    let sampler = Sampler::start(bed.conn(&hostile));
    let start = Instant::now();
    let payload = Bytes::from(vec![b'r'; 64 << 10]);
    let mut sent = 0u64;
    let calls_before = bed.good_calls();
    let stopped = loop {
        if sent >= 4_096 {
            break "sent 256 MiB".to_owned();
        }
        let frame = echo_request(sent + 1, payload.clone()).to_bytes();
        if let Err(e) = ws.send(WsMessage::Binary(frame)) {
            break e.to_string();
        }
        sent += 1;
    };
    // The peer's writes block once the target stops reading, until the
    // target drops the connection.
    let write_failed = start.elapsed();
    bed.wait_for("the target to drop the connection", &hostile, |c, s| {
        c.state() != State::Connected && s.queued_bytes == 0
    });
    let peaks = sampler.finish();
    let calls_during = bed.good_calls() - calls_before;
    eprintln!(
        "hostile::peer_that_never_reads: sent {sent} x 64 KiB ({} MiB) before the write failed \
         after {write_failed:?} ({stopped}); seen dropped after {:?}; peak queued {} B, \
         peak incoming requests {}; {calls_during} good calls meanwhile",
        sent / 16,
        peaks.dropped_after,
        peaks.queued_bytes,
        peaks.incoming_requests,
    );
    for dropped in [Some(write_failed), peaks.dropped_after]
        .into_iter()
        .flatten()
    {
        assert!(dropped >= write_timeout, "dropped after {dropped:?}");
        assert!(
            dropped < Duration::from_secs(4),
            "dropped after {dropped:?}"
        );
    }
    assert!(
        peaks.queued_bytes <= MAX_QUEUED + (4 << 20),
        "queued {} B",
        peaks.queued_bytes
    );
    let _ = ws.get_mut().shutdown(Shutdown::Both);
    bed.finish(24);
}

// ---- 10: unexpected ops and sequence numbers ----

/// A raw message with any op number, even unknown ones.
fn raw_op(mux_id: u8, op: u8) -> Bytes {
    let mut b = vec![0x97, mux_id, 0x00, 0x00, 0x00];
    if op >= 0x80 {
        b.push(0xcc); // uint8: above 127 a single byte is a negative fixint
    }
    b.extend_from_slice(&[op, 0x00, 0xc4, 0x00]);
    Bytes::from(b)
}

/// Unknown op numbers, a second `Connect`, `ConnectResponse`,
/// `Disconnect` and a nested `OpMerged` are ignored (counted) and the
/// connection keeps serving; a stream message with a wrong sequence number
/// ends that stream with "receive sequence number mismatch" and
/// `DisconnectClientMux`, while another stream on the connection carries on.
fn unexpected_ops_and_sequence(kind: Kind) {
    let bed = Bed::start("unexpected_ops_and_sequence", kind, |_| {});
    let hostile = bed.hostile[0].clone();
    let mut peer = Peer::connect(bed.addr, &hostile);
    peer.echo(1, b"hello");
    bed.wait_for("stats after the handshake", &hostile, |c, _| {
        c.is_connected()
    });
    let ignored_before = bed.stats(&hostile).ignored_messages;

    for op in [0, 18, 99, 255] {
        peer.send_raw(raw_op(0, op));
        peer.send_raw(raw_op(7, op));
    }
    peer.send_raw(connect_frame(&hostile, SystemTime::now(), TOKEN));
    peer.send(&Message::new(Op::ConnectResponse, 0));
    peer.send(&Message::new(Op::Disconnect, 0));
    let mut inner = FrameBuilder::new();
    inner.push(&echo_request(500, Bytes::from_static(b"nested 500")));
    inner.push(&echo_request(501, Bytes::from_static(b"nested 501")));
    let mut outer = FrameBuilder::new();
    outer.push_encoded(&inner.finish().expect("two messages"));
    outer.push(&echo_request(502, Bytes::from_static(b"outer 502")));
    peer.send_raw(outer.finish().expect("two messages"));
    let mut with_unknown = FrameBuilder::new();
    with_unknown.push_encoded(&raw_op(0, 42));
    with_unknown.push(&echo_request(503, Bytes::from_static(b"merged 503")));
    peer.send_raw(with_unknown.finish().expect("two messages"));
    // Everything the target answered, until 100 ms after the answer to 504.
    let mut answered = Vec::new();
    peer.send(&echo_request(504, Bytes::from_static(b"after all that")));
    peer.expect(
        "the answer to 504",
        |m| m.op == Op::Response && m.mux_id == 504,
        |m| answered.push((m.op, m.mux_id)),
    );
    let deadline = Instant::now() + Duration::from_millis(100);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match peer.next(left) {
            Some(Seen::Msg(m)) => answered.push((m.op, m.mux_id)),
            None => {}
            Some(Seen::Closed(why)) => panic!("closed: {why}"),
        }
    }
    // Only 502 and 503 are served; the nested requests are not, and the
    // second Connect gets no answer.
    let mut responses: Vec<u64> = answered
        .iter()
        .filter(|(op, _)| *op == Op::Response)
        .map(|(_, id)| *id)
        .collect();
    responses.sort_unstable();
    assert_eq!(responses, [502, 503], "{answered:?}");
    assert!(
        answered.iter().all(|(op, _)| *op != Op::ConnectResponse),
        "{answered:?}"
    );
    // 8 unknown ops, Connect, ConnectResponse, Disconnect, the nested
    // container and the unknown op in the merged frame.
    bed.wait_for("13 ignored messages", &hostile, |_, s| {
        s.ignored_messages >= ignored_before + 13
    });
    assert!(bed.conn(&hostile).is_connected());

    // Two streams; stream 21 gets a message with a wrong sequence number.
    for id in [20, 21] {
        let mut m = Message::new(Op::ConnectMux, id);
        m.handler = HandlerId::TEST;
        m.flags = Flags::CRC;
        peer.send(&m);
        peer.expect("an ack", |m| m.op == Op::AckMux && m.mux_id == id, |_| {});
    }
    let client_msg = |id: u64, seq: u32, payload: &'static [u8]| {
        let mut m = Message::new(Op::MuxClientMsg, id);
        m.seq = seq;
        m.flags = Flags::CRC;
        m.set_payload(Some(Bytes::from_static(payload)));
        m
    };
    peer.send(&client_msg(20, 1, b"first"));
    peer.expect(
        "the echo on stream 20",
        |m| m.op == Op::MuxServerMsg && m.mux_id == 20 && m.payload == "first",
        |_| {},
    );
    peer.send(&client_msg(21, 5, b"out of order"));
    let err = peer.expect(
        "the error on stream 21",
        |m| m.op == Op::MuxServerMsg && m.mux_id == 21,
        |_| {},
    );
    assert!(
        err.flags.contains(Flags::PAYLOAD_IS_ERR | Flags::EOF),
        "{err:?}"
    );
    assert_eq!(
        err.payload,
        "receive sequence number mismatch. want 1, got 5"
    );
    peer.expect(
        "DisconnectClientMux for stream 21",
        |m| m.op == Op::DisconnectClientMux && m.mux_id == 21,
        |m| assert!(m.mux_id != 21 || m.op == Op::UnblockClMux, "{m:?}"),
    );
    // Stream 20 carries on: a credit back, a second message, then EOF.
    let mut unblock = Message::new(Op::UnblockSrvMux, 20);
    unblock.seq = 2;
    unblock.flags = Flags::CRC;
    peer.send(&unblock);
    peer.send(&client_msg(20, 3, b"second"));
    peer.expect(
        "the second echo on stream 20",
        |m| m.op == Op::MuxServerMsg && m.mux_id == 20 && m.payload == "second",
        |_| {},
    );
    unblock.seq = 4;
    peer.send(&unblock);
    let mut eof = Message::new(Op::MuxClientMsg, 20);
    eof.seq = 5;
    eof.flags = Flags::CRC | Flags::EOF;
    peer.send(&eof);
    let end = peer.expect(
        "the end of stream 20",
        |m| m.op == Op::MuxServerMsg && m.mux_id == 20 && m.flags.contains(Flags::EOF),
        |_| {},
    );
    assert!(!end.flags.contains(Flags::PAYLOAD_IS_ERR), "{end:?}");
    peer.echo(505, b"still serving");
    bed.wait_for("no stream left", &hostile, |_, s| s.incoming_streams == 0);
    assert!(bed.conn(&hostile).is_connected());
    drop(peer);
    bed.finish(16);
}

/// Every case on each runtime: `on_tokio::<case>`, `on_smol::<case>`.
macro_rules! on_each_runtime {
    ($($name:ident),* $(,)?) => {
        mod on_tokio {
            $(
                #[test]
                fn $name() {
                    super::$name(crate::harness::Kind::Tokio);
                }
            )*
        }
        mod on_smol {
            $(
                #[test]
                fn $name() {
                    super::$name(crate::harness::Kind::Smol);
                }
            )*
        }
    };
}

on_each_runtime!(
    handshake_rejections_flood,
    upgrade_never_completes,
    garbage_after_upgrade,
    bad_crc,
    oversize_frames,
    connect_mux_flood,
    peer_that_never_reads,
    unexpected_ops_and_sequence,
);
