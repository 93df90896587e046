//! The scenarios of the recorded transcripts (`conformance/transcripts/README.md`),
//! played between two real nodes, each node calling the other.

use bytes::{BufMut, Bytes, BytesMut};
use grid_proto::driver::{StreamSendError, StreamSender};
use grid_proto::sim::{REF_MSS, REF_SUB};
use grid_proto::{CallError, Capacities, HandlerId};

use crate::harness::{Cluster, Handlers, Probe, Setup, eventually, join_all, wait};

const ECHO: HandlerId = HandlerId::TEST;
const FAIL: HandlerId = HandlerId::TEST2;
const STREAM_ECHO: HandlerId = HandlerId::TEST;
const STREAM_COUNT: HandlerId = HandlerId::TEST2;
/// A stream handler that holds its stream open until it is cancelled.
const HOLD: HandlerId = HandlerId(41);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn cat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.put_slice(a);
    out.put_slice(b);
    out.freeze()
}

pub(crate) async fn echo(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let r = wait("echo", c.conn(from, to).request(ECHO, b("hello grid"))).await;
        assert_eq!(r, Ok(b("hello grid")), "node {from} -> node {to}");
    }
    c.shutdown().await;
}

/// `echo-empty` and `echo-nil`: the API has one empty payload (`Bytes`), and
/// the answer is empty either way.
pub(crate) async fn echo_empty(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let r = wait("echo-empty", c.conn(from, to).request(ECHO, Bytes::new())).await;
        assert_eq!(r, Ok(Bytes::new()), "node {from} -> node {to}");
        let r = wait("echo-nil", c.conn(from, to).request(ECHO, Bytes::default())).await;
        assert_eq!(r, Ok(Bytes::new()), "node {from} -> node {to}");
    }
    c.shutdown().await;
}

pub(crate) async fn echo_parallel(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let calls = (0..64).map(|i| conn.request(ECHO, b(&format!("parallel {i}"))));
        let answers = wait("64 parallel echoes", join_all(calls)).await;
        for (i, r) in answers.into_iter().enumerate() {
            assert_eq!(
                r,
                Ok(b(&format!("parallel {i}"))),
                "node {from} -> node {to}"
            );
        }
    }
    c.shutdown().await;
}

pub(crate) async fn remote_err(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let r = wait("remote-err", c.conn(from, to).request(FAIL, b("it failed"))).await;
        assert_eq!(r, Err(CallError::Remote("it failed".into())));
    }
    c.shutdown().await;
}

pub(crate) async fn unknown_handler(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let r = wait(
            "unknown-handler",
            c.conn(from, to).request(HandlerId(77), b("x")),
        )
        .await;
        assert_eq!(
            r,
            Err(CallError::Refused(
                "Invalid Handler for type: CheckParts3".into()
            ))
        );
    }
    c.shutdown().await;
}

pub(crate) async fn stream_echo(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let (mut tx, mut rx) = wait("open", conn.open_stream(STREAM_ECHO, Some(b("p:"))))
            .await
            .expect("stream opened");
        for i in 0..10 {
            let m = b(&format!("m{i}"));
            wait("send", tx.send(m.clone())).await.expect("sent");
            let got = wait("echo", rx.recv()).await;
            assert_eq!(got, Some(Ok(cat(b"p:", &m))), "node {from} -> node {to}");
        }
        tx.close();
        assert_eq!(wait("EOF", rx.recv()).await, None);
    }
    c.shutdown().await;
}

/// Drains a receiver to its end.
async fn collect(rx: &mut grid_proto::driver::StreamReceiver) -> (Vec<Bytes>, Option<CallError>) {
    let mut got = Vec::new();
    loop {
        match wait("a stream message", rx.recv()).await {
            Some(Ok(m)) => got.push(m),
            Some(Err(e)) => return (got, Some(e)),
            None => return (got, None),
        }
    }
}

pub(crate) async fn stream_count(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let payload = cat(&5u32.to_be_bytes(), b"data");
        let (mut tx, mut rx) = wait(
            "open",
            c.conn(from, to).open_stream(STREAM_COUNT, Some(payload)),
        )
        .await
        .expect("stream opened");
        // InCapacity 0: the stream has no input.
        assert_eq!(tx.send(b("no")).await, Err(StreamSendError::NoInput));
        let (got, err) = collect(&mut rx).await;
        assert_eq!(err, None);
        let want: Vec<Bytes> = (0..5u32).map(|i| cat(&i.to_be_bytes(), b"data")).collect();
        assert_eq!(got, want, "node {from} -> node {to}");
    }
    c.shutdown().await;
}

pub(crate) async fn stream_err(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let (_tx, mut rx) = wait(
            "open",
            c.conn(from, to).open_stream(STREAM_COUNT, Some(b("ab"))),
        )
        .await
        .expect("stream opened");
        let (got, err) = collect(&mut rx).await;
        assert!(got.is_empty());
        assert_eq!(
            err,
            Some(CallError::Remote("refpeer: payload too short".into()))
        );
    }
    c.shutdown().await;
}

/// `stream-cancel` on the reference echo stream, then on a stream whose
/// handler reports that its future was dropped: dropping both halves
/// reaches the remote handler.
pub(crate) async fn stream_cancel(setup: Setup) {
    let probe = Probe::new();
    let p = probe.clone();
    let handlers = Handlers::default().stream(HOLD, Capacities::DEFAULT, move |call| {
        let p = p.clone();
        async move {
            let _guard = p.enter();
            let _input = call.input;
            let _output: StreamSender = call.output;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let c = Cluster::start(setup, handlers).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let (mut tx, mut rx) = wait("open", conn.open_stream(STREAM_ECHO, Some(b("cancel:"))))
            .await
            .expect("stream opened");
        wait("send", tx.send(b("0"))).await.expect("sent");
        assert_eq!(wait("echo", rx.recv()).await, Some(Ok(b("cancel:0"))));
        drop((tx, rx));
        eventually("the remote echo stream to go away", || {
            c.stats(to, from).incoming_streams == 0 && c.stats(from, to).outgoing_streams == 0
        })
        .await;

        let (tx, rx) = wait("open", conn.open_stream(HOLD, None))
            .await
            .expect("stream opened");
        probe.started().await;
        drop((tx, rx));
        probe.dropped().await;
        eventually("the remote held stream to go away", || {
            c.stats(to, from).incoming_streams == 0
        })
        .await;
        // The connection is still good.
        let r = wait("echo", conn.request(ECHO, b("after"))).await;
        assert_eq!(r, Ok(b("after")));
    }
    c.shutdown().await;
}

pub(crate) async fn sub_single(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let sub = c.conn(from, to).subroute(REF_SUB);
        let r = wait("sub-single", sub.request(ECHO, b("x"))).await;
        assert_eq!(r, Ok(b("sub:x")));
        // An unregistered subroute is refused.
        let other = c.conn(from, to).subroute("refpeer/none");
        let r = wait("unknown subroute", other.request(ECHO, b("x"))).await;
        assert!(
            matches!(&r, Err(CallError::Refused(t)) if t.starts_with("Invalid Handler for type: [")),
            "{r:?}"
        );
    }
    c.shutdown().await;
}

pub(crate) async fn sub_stream(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let sub = c.conn(from, to).subroute(REF_SUB);
        let (mut tx, mut rx) = wait("open", sub.open_stream(STREAM_ECHO, Some(b("p"))))
            .await
            .expect("stream opened");
        for m in ["a", "bb", ""] {
            wait("send", tx.send(b(m))).await.expect("sent");
            let got = wait("echo", rx.recv()).await;
            assert_eq!(got, Some(Ok(b(&format!("sub:p{m}")))));
        }
        drop(tx);
        assert_eq!(wait("EOF", rx.recv()).await, None);
    }
    c.shutdown().await;
}

/// A msgpack map of strings (fixmap/map16, str8/str16 as needed).
fn mss_encode(pairs: &[(&str, &str)]) -> Bytes {
    fn put_str(out: &mut BytesMut, s: &str) {
        match s.len() {
            n if n < 32 => out.put_u8(0xa0 | n as u8),
            n if n < 256 => {
                out.put_u8(0xd9);
                out.put_u8(n as u8);
            }
            n => {
                out.put_u8(0xda);
                out.put_u16(n as u16);
            }
        }
        out.put_slice(s.as_bytes());
    }
    let mut out = BytesMut::new();
    assert!(pairs.len() < 16);
    out.put_u8(0x80 | pairs.len() as u8);
    for (k, v) in pairs {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out.freeze()
}

/// Decodes what [`mss_encode`] writes (and what the handler answers).
fn mss_decode(mut buf: &[u8]) -> Vec<(String, String)> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        head
    }
    fn get_str(buf: &mut &[u8]) -> String {
        let tag = take(buf, 1)[0];
        let n = match tag {
            0xa0..=0xbf => usize::from(tag & 0x1f),
            0xd9 => usize::from(take(buf, 1)[0]),
            0xda => usize::from(u16::from_be_bytes(take(buf, 2).try_into().unwrap())),
            t => panic!("not a msgpack string: {t:#x}"),
        };
        String::from_utf8(take(buf, n).to_vec()).expect("utf-8")
    }
    let tag = take(&mut buf, 1)[0];
    assert_eq!(tag & 0xf0, 0x80, "a fixmap");
    let n = usize::from(tag & 0x0f);
    let pairs = (0..n)
        .map(|_| (get_str(&mut buf), get_str(&mut buf)))
        .collect();
    assert!(buf.is_empty(), "trailing bytes");
    pairs
}

pub(crate) async fn typed_mss(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        let typed = c.conn(from, to).subroute(REF_MSS);
        let req = mss_encode(&[("drive", "/mnt/1"), ("bucket", "b")]);
        let r = wait("typed-mss", typed.request(FAIL, req)).await;
        let mut got = mss_decode(&r.expect("an answer"));
        got.sort();
        let want = [("bucket", "b"), ("drive", "/mnt/1"), ("refpeer", "ok")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(got, want);
    }
    c.shutdown().await;
}
