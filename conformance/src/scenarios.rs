//! The scenarios of `conformance/transcripts/README.md`, run by a caller
//! against a remote node serving the transcripts' handler table (Go's or
//! ours): the interop half of the conformance suite (`grid-conformance
//! call`). Each checks real results: the payloads and error texts the
//! handler table defines.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;
use grid_proto::driver::{Connection, Mss, NoPayload, SingleHandler, StreamReceiver, TypedError};
use grid_proto::sim::{REF_MSS, REF_SUB};
use grid_proto::{CallError, HandlerId};

use crate::node::with_timeout;
use crate::reference::{MISSING_K, REF_NOPAYLOAD, REF_STREAM, REF_STRUCT, RefStruct};

/// The scenarios of the untyped handler table, in the README's order
/// (`--scenario all`).
pub const ALL: [&str; 14] = [
    "echo",
    "echo-empty",
    "echo-nil",
    "echo-parallel",
    "remote-err",
    "unknown-handler",
    "stream-echo",
    "stream-count",
    "stream-err",
    "stream-cancel",
    "sub-single",
    "sub-stream",
    "typed-mss",
    "idle-ping",
];

/// The scenarios of the typed handlers 70–72 (`--scenario typed`).
pub const TYPED: [&str; 3] = ["typed-nopayload", "typed-struct", "typed-stream"];

/// Every scenario name, whatever its group.
pub fn known() -> impl Iterator<Item = &'static str> {
    ALL.iter().chain(TYPED.iter()).copied()
}

/// The scenarios a `--scenario` list names: comma-separated scenario names
/// and the groups `all` ([`ALL`]) and `typed` ([`TYPED`]), in the order
/// given, each once.
pub fn select(list: &str) -> Result<Vec<&'static str>, String> {
    let mut names: Vec<&'static str> = Vec::new();
    for item in list.split(',').map(str::trim) {
        let group: Vec<&'static str> = match item {
            "all" => ALL.to_vec(),
            "typed" => TYPED.to_vec(),
            name => match known().find(|k| *k == name) {
                Some(k) => vec![k],
                None => {
                    return Err(format!(
                        "unknown scenario {name:?} (all, typed, {})",
                        known().collect::<Vec<_>>().join(", ")
                    ));
                }
            },
        };
        for name in group {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// How long the `idle-ping` scenario leaves the connection idle: longer
/// than one ping interval (10 s), so both sides ping.
pub const IDLE: Duration = Duration::from_secs(11);

/// The limit of one scenario (beyond [`IDLE`] for `idle-ping`).
const LIMIT: Duration = Duration::from_secs(20);

const HELLO: &[u8] = b"Hello Grid World!";
const ECHO: HandlerId = HandlerId::TEST;
const FAIL: HandlerId = HandlerId::TEST2;
/// Never registered on the reference peer; Go calls it `CheckParts3`.
const UNKNOWN: HandlerId = HandlerId(77);

/// Runs scenario `name` against the peer on `conn`; `Err` says what
/// differed from the handler table's definition.
pub async fn run(name: &str, conn: &Connection) -> Result<(), String> {
    let limit = if name == "idle-ping" {
        IDLE + LIMIT
    } else {
        LIMIT
    };
    with_timeout(limit, run_unbounded(name, conn))
        .await
        .unwrap_or_else(|| Err(format!("did not finish within {limit:?}")))
}

async fn run_unbounded(name: &str, conn: &Connection) -> Result<(), String> {
    match name {
        "echo" => echo(conn, HELLO).await,
        // The API sends no payload as an empty one; so does Go for nil.
        "echo-empty" | "echo-nil" => echo(conn, b"").await,
        "echo-parallel" => echo_parallel(conn).await,
        "remote-err" => remote_err(conn).await,
        "unknown-handler" => unknown_handler(conn).await,
        "stream-echo" => stream_echo(conn, HELLO, 11).await,
        "stream-count" => stream_count(conn).await,
        "stream-err" => stream_err(conn).await,
        "stream-cancel" => stream_cancel(conn).await,
        "sub-single" => sub_single(conn).await,
        "sub-stream" => stream_echo(&conn.subroute(REF_SUB), b"p-", 3).await,
        "typed-mss" => typed_mss(conn).await,
        "idle-ping" => idle_ping(conn).await,
        "typed-nopayload" => typed_nopayload(conn).await,
        "typed-struct" => typed_struct(conn).await,
        "typed-stream" => typed_stream(conn).await,
        other => Err(format!("unknown scenario {other:?}")),
    }
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn concat(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    for p in parts {
        out.put_slice(p);
    }
    out.freeze()
}

fn expect_eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {}, got {}",
            show(want),
            show(got)
        ))
    }
}

async fn echo(conn: &Connection, payload: &'static [u8]) -> Result<(), String> {
    let got = conn
        .request(ECHO, Bytes::from_static(payload))
        .await
        .map_err(|e| format!("echo failed: {e}"))?;
    expect_eq("echo", &got, payload)
}

async fn echo_parallel(conn: &Connection) -> Result<(), String> {
    let payloads: Vec<Bytes> = (0..64)
        .map(|i| Bytes::from(format!("parallel-{i}")))
        .collect();
    let answers = join_all(payloads.iter().map(|p| conn.request(ECHO, p.clone()))).await;
    for (p, answer) in payloads.iter().zip(answers) {
        let got = answer.map_err(|e| format!("echo of {} failed: {e}", show(p)))?;
        expect_eq("parallel echo", &got, p)?;
    }
    Ok(())
}

async fn remote_err(conn: &Connection) -> Result<(), String> {
    let text = "refpeer: this is a remote error";
    match conn
        .request(FAIL, Bytes::from_static(text.as_bytes()))
        .await
    {
        Err(CallError::Remote(got)) if got == text => Ok(()),
        other => Err(format!("expected the remote error {text:?}, got {other:?}")),
    }
}

async fn unknown_handler(conn: &Connection) -> Result<(), String> {
    // Go's text names the handler by its Go name.
    let text = "Invalid Handler for type: CheckParts3";
    match conn.request(UNKNOWN, Bytes::from_static(b"x")).await {
        Err(CallError::Refused(got)) if got == text => Ok(()),
        other => Err(format!("expected the refusal {text:?}, got {other:?}")),
    }
}

/// The next stream message, which must be `want`.
async fn recv_eq(rx: &mut StreamReceiver, want: &[u8]) -> Result<(), String> {
    match rx.recv().await {
        Some(Ok(got)) => expect_eq("stream message", &got, want),
        Some(Err(e)) => Err(format!("stream failed where {} was due: {e}", show(want))),
        None => Err(format!("stream ended where {} was due", show(want))),
    }
}

/// The stream must end cleanly now.
async fn recv_end(rx: &mut StreamReceiver) -> Result<(), String> {
    match rx.recv().await {
        None => Ok(()),
        Some(Ok(got)) => Err(format!(
            "unexpected stream message {} at the end",
            show(&got)
        )),
        Some(Err(e)) => Err(format!("the stream failed at the end: {e}")),
    }
}

/// Handler 78's stream (on `conn`'s subroute, if any): each message `i`
/// comes back as prefix ++ initial ++ `i`; the stream ends after the input.
async fn stream_echo(conn: &Connection, initial: &'static [u8], n: u32) -> Result<(), String> {
    let prefix: &[u8] = if conn.route().is_some() { b"sub:" } else { b"" };
    let (mut tx, mut rx) = conn
        .open_stream(ECHO, Some(Bytes::from_static(initial)))
        .await
        .map_err(|e| format!("open_stream failed: {e}"))?;
    for i in 0..n {
        let m = i.to_string();
        tx.send(Bytes::from(m.clone()))
            .await
            .map_err(|e| format!("send of {m:?} failed: {e}"))?;
        recv_eq(&mut rx, &concat(&[prefix, initial, m.as_bytes()])).await?;
    }
    tx.close();
    recv_end(&mut rx).await
}

async fn stream_count(conn: &Connection) -> Result<(), String> {
    let n = 5u32;
    let payload = concat(&[&n.to_be_bytes(), b"data"]);
    let (tx, mut rx) = conn
        .open_stream(FAIL, Some(payload))
        .await
        .map_err(|e| format!("open_stream failed: {e}"))?;
    drop(tx); // the handler takes no input
    for i in 0..n {
        recv_eq(&mut rx, &concat(&[&i.to_be_bytes(), b"data"])).await?;
    }
    recv_end(&mut rx).await
}

async fn stream_err(conn: &Connection) -> Result<(), String> {
    let text = "refpeer: payload too short";
    let (_tx, mut rx) = conn
        .open_stream(FAIL, Some(Bytes::from_static(&[1, 2])))
        .await
        .map_err(|e| format!("open_stream failed: {e}"))?;
    match rx.recv().await {
        Some(Err(CallError::Remote(got))) if got == text => {}
        other => return Err(format!("expected the remote error {text:?}, got {other:?}")),
    }
    match rx.recv().await {
        None => Ok(()),
        other => Err(format!("expected the end after the error, got {other:?}")),
    }
}

async fn stream_cancel(conn: &Connection) -> Result<(), String> {
    let (mut tx, mut rx) = conn
        .open_stream(ECHO, Some(Bytes::from_static(b"cancel:")))
        .await
        .map_err(|e| format!("open_stream failed: {e}"))?;
    tx.send(Bytes::from_static(b"0"))
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    recv_eq(&mut rx, b"cancel:0").await?;
    // Both halves dropped (the receiver first, so the sender's drop is no
    // end of input): a cancellation.
    drop(rx);
    drop(tx);
    // The connection outlives the cancelled stream, and forgets it.
    echo(conn, HELLO).await?;
    for _ in 0..100 {
        if conn.stats().is_some_and(|s| s.outgoing_streams == 0) {
            return Ok(());
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
    Err(format!(
        "the cancelled stream is still open: {:?}",
        conn.stats()
    ))
}

async fn sub_single(conn: &Connection) -> Result<(), String> {
    let got = conn
        .subroute(REF_SUB)
        .request(ECHO, Bytes::from_static(b"hello"))
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    expect_eq("subroute echo", &got, b"sub:hello")
}

async fn typed_mss(conn: &Connection) -> Result<(), String> {
    let req: Mss = HashMap::from([
        ("bucket".to_owned(), "b1".to_owned()),
        ("object".to_owned(), "o/1".to_owned()),
    ]);
    let got = SingleHandler::<Mss, Mss>::new(FAIL)
        .call(&conn.subroute(REF_MSS), &req)
        .await
        .map_err(|e| format!("typed call failed: {e}"))?;
    let mut want = req;
    want.insert("refpeer".into(), "ok".into());
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want:?}, got {got:?}"))
    }
}

async fn idle_ping(conn: &Connection) -> Result<(), String> {
    let before = conn.stats().map_or(0, |s| s.reconnects);
    smol::Timer::after(IDLE).await;
    if !conn.is_connected() {
        return Err(format!(
            "the connection dropped while idle: {:?}",
            conn.state()
        ));
    }
    let stats = conn.stats().ok_or("no statistics")?;
    if stats.reconnects != before {
        return Err(format!(
            "the connection was re-established while idle ({} reconnects)",
            stats.reconnects - before
        ));
    }
    if stats.rtt.is_none() {
        return Err("no connection ping was answered while idle".into());
    }
    echo(conn, HELLO).await
}

fn mss(pairs: &[(&str, &str)]) -> Mss {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Handler 70: a map with `"k"` succeeds with Go's `NoPayload`, one
/// without fails remotely.
async fn typed_nopayload(conn: &Connection) -> Result<(), String> {
    match REF_NOPAYLOAD.call(conn, &mss(&[("k", "v")])).await {
        Ok(NoPayload) => {}
        Err(e) => return Err(format!("the call with \"k\" failed: {e}")),
    }
    match REF_NOPAYLOAD.call(conn, &Mss::new()).await {
        Err(TypedError::Call(CallError::Remote(text))) if text == MISSING_K => Ok(()),
        other => Err(format!(
            "expected the remote error {MISSING_K:?} for {{}}, got {other:?}"
        )),
    }
}

/// Handler 71: the struct comes back with `s + 1` and `"go"` appended.
async fn typed_struct(conn: &Connection) -> Result<(), String> {
    let req = RefStruct {
        name: "obj".into(),
        size: 41,
        tags: vec!["a".into(), "b".into()],
        data: vec![1, 2, 3],
    };
    let got = REF_STRUCT
        .call(conn, &req)
        .await
        .map_err(|e| format!("typed call failed: {e}"))?;
    let want = RefStruct {
        size: 42,
        tags: vec!["a".into(), "b".into(), "go".into()],
        ..req
    };
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want:?}, got {got:?}"))
    }
}

/// Handler 72: the k-th map comes back merged with the payload and
/// `{"i": k}`; closing the input ends the stream cleanly. Go writes map
/// keys in random order, so maps are compared as maps.
async fn typed_stream(conn: &Connection) -> Result<(), String> {
    let payload = mss(&[("p", "x")]);
    let (mut tx, mut rx) = REF_STREAM
        .call(conn, &payload)
        .await
        .map_err(|e| format!("opening the stream failed: {e}"))?;
    for k in 0..3 {
        let v = k.to_string();
        tx.send(&mss(&[("v", &v)]))
            .await
            .map_err(|e| format!("sending message {k} failed: {e}"))?;
        let want = mss(&[("p", "x"), ("v", &v), ("i", &v)]);
        match rx.recv().await {
            Some(Ok(got)) if got == want => {}
            Some(Ok(got)) => return Err(format!("answer {k}: expected {want:?}, got {got:?}")),
            Some(Err(e)) => return Err(format!("the stream failed where answer {k} was due: {e}")),
            None => return Err(format!("the stream ended where answer {k} was due")),
        }
    }
    tx.close();
    match rx.recv().await {
        None => Ok(()),
        Some(other) => Err(format!(
            "expected the end after the input closed, got {other:?}"
        )),
    }
}
