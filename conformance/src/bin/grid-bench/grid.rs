//! The grid subjects: two managers (two "nodes") in this process on
//! 127.0.0.1, connected over real TCP, on grid-tokio or grid-smol.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::driver::{Connection, Manager, Options, RemoteError, Runtime, StreamOptions};
use grid_proto::{Capacities, HandlerId, Stats};

use crate::load::{self, BoxFut, Exec, Hang, Tally, Window};
use crate::plan::{Params, Row, Workload};
use crate::sys;

/// The echo request handler.
const SINGLE: HandlerId = HandlerId(40);
/// The echo stream handler (in 64, out 64).
const ECHO: HandlerId = HandlerId(41);
/// The output-only stream handler (in 0, out 64): repeats its initial
/// payload until the stream is cancelled.
const SOURCE: HandlerId = HandlerId(42);

const ECHO_CAPS: Capacities = Capacities {
    in_capacity: 64,
    out_capacity: 64,
};
const SOURCE_CAPS: Capacities = Capacities {
    in_capacity: 0,
    out_capacity: 64,
};

/// Two connected managers, seen from the first.
pub(crate) struct Pair {
    /// Node 1's connection to node 2.
    pub(crate) conn: Connection,
    /// Node 2's connection to node 1 (the other end).
    back: Connection,
    /// Shuts both managers down.
    shutdown: Box<dyn FnOnce() -> BoxFut<()> + Send>,
}

fn register<R: Runtime>(m: &Manager<R>) -> Result<(), String> {
    let e = |e: grid_proto::driver::RegisterError| e.to_string();
    m.register_single(SINGLE, |p: Bytes| async move { Ok::<_, RemoteError>(p) })
        .map_err(e)?;
    m.register_stream(ECHO, ECHO_CAPS, |call| async move {
        let mut output = call.output;
        let Some(mut input) = call.input else {
            return Err(RemoteError("echo stream without input".into()));
        };
        while let Some(m) = input.recv().await {
            let m = m.map_err(|e| RemoteError(e.to_string()))?;
            output
                .send(m)
                .await
                .map_err(|e| RemoteError(e.to_string()))?;
        }
        Ok(())
    })
    .map_err(e)?;
    m.register_stream(SOURCE, SOURCE_CAPS, |call| async move {
        let message = call.payload.unwrap_or_default();
        let mut output = call.output;
        // Ends when the caller cancels the stream.
        while output.send(message.clone()).await.is_ok() {}
        Ok(())
    })
    .map_err(e)?;
    Ok(())
}

/// Builds both managers, registers the handlers on both (as every node of a
/// grid does), and waits until they are connected.
async fn connect<R: Runtime>(
    m1: Manager<R>,
    m2: Manager<R>,
    h1: &str,
    h2: &str,
) -> Result<Pair, String> {
    register(&m1)?;
    register(&m2)?;
    m1.start();
    m2.start();
    let conn = m1.connection(h2).ok_or("no connection to node 2")?;
    let back = m2.connection(h1).ok_or("no connection to node 1")?;
    let t = Duration::from_secs(5);
    conn.wait_for_connect(t)
        .await
        .map_err(|e| format!("node 1 -> 2 did not connect: {e}"))?;
    back.wait_for_connect(t)
        .await
        .map_err(|e| format!("node 2 -> 1 did not connect: {e}"))?;
    Ok(Pair {
        conn,
        back,
        shutdown: Box::new(move || {
            Box::pin(async move {
                m1.shutdown(None).await;
                m2.shutdown(None).await;
            })
        }),
    })
}

fn hosts(a1: std::net::SocketAddr, a2: std::net::SocketAddr) -> (String, String) {
    (format!("http://{a1}"), format!("http://{a2}"))
}

/// Two grid-tokio nodes (call inside the tokio runtime).
pub(crate) async fn pair_tokio() -> Result<Pair, String> {
    let e = |e: std::io::Error| e.to_string();
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(e)?;
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(e)?;
    let (h1, h2) = hosts(l1.local_addr().map_err(e)?, l2.local_addr().map_err(e)?);
    let hs = [h1.clone(), h2.clone()];
    let m1 = grid_tokio::Manager::new(grid_tokio::Tokio, &h1, &hs, Options::default())
        .map_err(|e| e.to_string())?;
    let m2 = grid_tokio::Manager::new(grid_tokio::Tokio, &h2, &hs, Options::default())
        .map_err(|e| e.to_string())?;
    tokio::spawn(grid_tokio::serve(m1.clone(), l1));
    tokio::spawn(grid_tokio::serve(m2.clone(), l2));
    connect(m1, m2, &h1, &h2).await
}

/// Two grid-smol nodes (on smol's global executor).
pub(crate) async fn pair_smol() -> Result<Pair, String> {
    let e = |e: std::io::Error| e.to_string();
    let l1 = async_net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(e)?;
    let l2 = async_net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(e)?;
    let (h1, h2) = hosts(l1.local_addr().map_err(e)?, l2.local_addr().map_err(e)?);
    let hs = [h1.clone(), h2.clone()];
    let m1 = grid_smol::Manager::new(grid_smol::Smol, &h1, &hs, Options::default())
        .map_err(|e| e.to_string())?;
    let m2 = grid_smol::Manager::new(grid_smol::Smol, &h2, &hs, Options::default())
        .map_err(|e| e.to_string())?;
    smol::spawn(grid_smol::serve(m1.clone(), l1)).detach();
    smol::spawn(grid_smol::serve(m2.clone(), l2)).detach();
    connect(m1, m2, &h1, &h2).await
}

/// Runs workload `p` on the pair `make` builds, on executor `ex`.
pub(crate) async fn run<E, M>(ex: E, p: &Params, make: M) -> Vec<Row>
where
    E: Exec,
    M: Fn() -> BoxFut<Result<Pair, String>>,
{
    if p.workload == Workload::Memory {
        return memory(&ex, p, make).await;
    }
    let pair = match make().await {
        Ok(pair) => pair,
        Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
    };
    let before = (pair.conn.stats(), pair.back.stats());
    let mut row = match p.workload {
        Workload::Single => {
            let conn = pair.conn.clone();
            load::closed_loop(&ex, p, move |payload| {
                let r = conn.request(SINGLE, payload);
                async move { r.await.map_err(|e| e.to_string()) }
            })
            .await
        }
        Workload::Stream => stream(&ex, p, &pair).await,
        Workload::StreamOut => stream_out(&ex, p, &pair).await,
        Workload::Memory => unreachable!("handled above"),
    };
    // Let the connection tasks publish fresh statistics (about 10 a second).
    ex.sleep_until(Instant::now() + Duration::from_millis(250))
        .await;
    let wire = [
        framing("1->2", before.0.as_ref(), pair.conn.stats().as_ref()),
        framing("2->1", before.1.as_ref(), pair.back.stats().as_ref()),
    ];
    let wire: Vec<String> = wire.into_iter().flatten().collect();
    if !wire.is_empty() {
        let sep = if row.note.is_empty() { "" } else { "; " };
        row.note = format!("{}{sep}whole run: {}", row.note, wire.join(", "));
    }
    // Best effort: a hung subject must not hang the report.
    let _ = load::timeout(&ex, Duration::from_secs(3), (pair.shutdown)()).await;
    vec![row]
}

/// What one direction of the connection sent between two snapshots:
/// messages per WebSocket frame and bytes per message.
fn framing(dir: &str, a: Option<&Stats>, b: Option<&Stats>) -> Option<String> {
    let (a, b) = (a?, b?);
    let msgs = b.messages_sent.checked_sub(a.messages_sent)?;
    let frames = b.frames_sent.checked_sub(a.frames_sent)?;
    let bytes = b.bytes_sent.checked_sub(a.bytes_sent)?;
    if msgs == 0 || frames == 0 {
        return None;
    }
    Some(format!(
        "{dir} {:.1} msg/frame {:.0} B/msg",
        msgs as f64 / frames as f64,
        bytes as f64 / msgs as f64
    ))
}

/// The stream tables and message counters of both ends, for hang reports.
fn probe(pair: &Pair) -> String {
    let show = |who: &str, s: Option<Stats>| match s {
        Some(s) => format!(
            "{who}: {:?}, streams out {} in {}, messages sent {} received {}, queued {} B",
            s.state,
            s.outgoing_streams,
            s.incoming_streams,
            s.messages_sent,
            s.messages_received,
            s.queued_bytes
        ),
        None => format!("{who}: no statistics"),
    };
    format!(
        "{}; {}",
        show("node 1", pair.conn.stats()),
        show("node 2", pair.back.stats())
    )
}

/// `p.concurrency` echo streams; each has a sender task and a receiver
/// task; messages received back count.
async fn stream<E: Exec>(ex: &E, p: &Params, pair: &Pair) -> Row {
    let conn = &pair.conn;
    let payload = Bytes::from(vec![0x5au8; p.payload]);
    let tally = Arc::new(Tally::default());
    let opts = StreamOptions {
        capacities: Some(ECHO_CAPS),
        ..StreamOptions::default()
    };
    let mut halves = Vec::new();
    for _ in 0..p.concurrency {
        match conn.open_stream_with(ECHO, None, opts).await {
            Ok(h) => halves.push(h),
            Err(e) => return Row::failed(p, format!("OPEN FAILED: {e}")),
        }
    }
    let w = Window::new(p);
    for (mut tx, mut rx) in halves {
        let len = payload.len();
        let payload = payload.clone();
        let t = Arc::clone(&tally);
        let sent = tally.slot("sent");
        ex.spawn(async move {
            let mut total = 0;
            while Instant::now() < w.end {
                if let Err(e) = tx.send(payload.clone()).await {
                    t.error(format!("send: {e}"));
                    break;
                }
                total += 1;
                sent.set(0, total);
            }
            tx.close();
            t.finished();
        });
        let t = Arc::clone(&tally);
        let received = tally.slot("received");
        ex.spawn(async move {
            let (mut n, mut total) = (0u64, 0u64);
            while let Some(m) = rx.recv().await {
                match m {
                    Ok(m) => {
                        total += 1;
                        if w.contains(Instant::now()) {
                            n += 1;
                        }
                        received.set(n, total);
                        if m.len() != len {
                            t.error(format!("got {} bytes, sent {len}", m.len()));
                            break;
                        }
                    }
                    Err(e) => {
                        t.error(format!("recv: {e}"));
                        break;
                    }
                }
            }
            t.finished();
        });
    }
    load::observe(
        ex,
        p,
        w,
        &tally,
        2 * p.concurrency,
        "msg/s",
        Hang {
            meaning: "an echo stream did not end after its sender closed (no EOF back)",
            probe: &|| probe(pair),
        },
    )
    .await
}

/// `p.concurrency` output-only streams; messages received count.
async fn stream_out<E: Exec>(ex: &E, p: &Params, pair: &Pair) -> Row {
    let conn = &pair.conn;
    let payload = Bytes::from(vec![0x3cu8; p.payload]);
    let tally = Arc::new(Tally::default());
    let opts = StreamOptions {
        capacities: Some(SOURCE_CAPS),
        ..StreamOptions::default()
    };
    let mut receivers = Vec::new();
    for _ in 0..p.concurrency {
        match conn
            .open_stream_with(SOURCE, Some(payload.clone()), opts)
            .await
        {
            // The sender is useless (no input): drop it at once.
            Ok((_tx, rx)) => receivers.push(rx),
            Err(e) => return Row::failed(p, format!("OPEN FAILED: {e}")),
        }
    }
    let w = Window::new(p);
    for mut rx in receivers {
        let t = Arc::clone(&tally);
        let len = payload.len();
        let received = tally.slot("received");
        ex.spawn(async move {
            let (mut n, mut total) = (0u64, 0u64);
            while Instant::now() < w.end {
                match rx.recv().await {
                    Some(Ok(m)) => {
                        total += 1;
                        if w.contains(Instant::now()) {
                            n += 1;
                        }
                        received.set(n, total);
                        if m.len() != len {
                            t.error(format!("got {} bytes, expected {len}", m.len()));
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        t.error(format!("recv: {e}"));
                        break;
                    }
                    None => {
                        t.error("stream ended early");
                        break;
                    }
                }
            }
            // Dropping the receiver cancels the stream.
            drop(rx);
            t.finished();
        });
    }
    load::observe(
        ex,
        p,
        w,
        &tally,
        p.concurrency,
        "msg/s",
        Hang {
            meaning: "a receiver waited for a message that never came",
            probe: &|| probe(pair),
        },
    )
    .await
}

/// RSS of an idle connection (both managers), then of `p.streams` idle
/// echo streams (both ends), each opened and used for one echo.
async fn memory<E, M>(ex: &E, p: &Params, make: M) -> Vec<Row>
where
    E: Exec,
    M: Fn() -> BoxFut<Result<Pair, String>>,
{
    load::settle(ex).await;
    let r0 = sys::rss();
    let pair = match make().await {
        Ok(pair) => pair,
        Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
    };
    load::settle(ex).await;
    let r1 = sys::rss();
    let mut rows = vec![load::memory_row(p, "memory/conn", 1, r0, r1)];

    let n = p.streams;
    let openers = 32.min(n.max(1));
    let tally = Arc::new(Tally::default());
    let held = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let t0 = Instant::now();
    for i in 0..openers {
        let conn = pair.conn.clone();
        let tally = Arc::clone(&tally);
        let held = Arc::clone(&held);
        let mine = n / openers + usize::from(i < n % openers);
        ex.spawn(async move {
            let opts = StreamOptions {
                capacities: Some(ECHO_CAPS),
                ..StreamOptions::default()
            };
            let msg = Bytes::from_static(b"hello");
            for _ in 0..mine {
                let opened = async {
                    let (mut tx, mut rx) = conn
                        .open_stream_with(ECHO, None, opts)
                        .await
                        .map_err(|e| format!("open: {e}"))?;
                    tx.send(msg.clone())
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                    match rx.recv().await {
                        Some(Ok(_)) => Ok((tx, rx)),
                        Some(Err(e)) => Err(format!("recv: {e}")),
                        None => Err("stream ended at once".to_string()),
                    }
                };
                match opened.await {
                    Ok(h) => {
                        tally.count.fetch_add(1, Ordering::Relaxed);
                        held.lock().unwrap_or_else(|e| e.into_inner()).push(h);
                    }
                    Err(e) => {
                        tally.error(e);
                        break;
                    }
                }
            }
            tally.finished();
        });
    }
    let limit = Instant::now() + Duration::from_secs(60);
    while tally.done.load(Ordering::Acquire) < openers && Instant::now() < limit {
        ex.sleep_until(Instant::now() + Duration::from_millis(10))
            .await;
    }
    let open_secs = t0.elapsed().as_secs_f64();
    load::settle(ex).await;
    let r2 = sys::rss();
    let opened = tally.count.load(Ordering::Relaxed);
    let mut row = load::memory_row(p, "memory/stream", opened, r1, r2);
    row.note = format!(
        "{}; {opened} streams opened+echoed in {open_secs:.2}s",
        row.note
    );
    let errors = tally.errors.load(Ordering::Relaxed);
    if errors > 0 || opened < n as u64 {
        row.errors = errors.max(1);
        row.note = format!(
            "{}; ONLY {opened} of {n} streams opened ({errors} errors){}",
            row.note,
            if tally.done.load(Ordering::Acquire) < openers {
                ", openers HUNG"
            } else {
                ""
            }
        );
    }
    // Dropping the halves cancels the streams: both tables must empty.
    held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let live = || {
        let a = pair.conn.stats().map_or(usize::MAX, |s| s.outgoing_streams);
        let b = pair.back.stats().map_or(usize::MAX, |s| s.incoming_streams);
        (a, b)
    };
    let limit = Instant::now() + Duration::from_secs(5);
    while live() != (0, 0) && Instant::now() < limit {
        ex.sleep_until(Instant::now() + Duration::from_millis(20))
            .await;
    }
    let (a, b) = live();
    if (a, b) != (0, 0) {
        row.errors += 1;
        row.note = format!(
            "{}; LEAK? 5s after dropping every stream, node 1 still has {a} outgoing and node 2 {b} incoming streams",
            row.note
        );
    }
    rows.push(row);
    let _ = load::timeout(ex, Duration::from_secs(3), (pair.shutdown)()).await;
    rows
}
