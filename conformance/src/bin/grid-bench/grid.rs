//! The grid subjects on grid-tokio or grid-smol: two managers (two
//! "nodes") connected over real TCP on 127.0.0.1, either both in this
//! process or the serving one in a process of its own
//! ([`crate::server`]).
//!
//! Every node registers the reference handler table (what
//! `grid-conformance serve` and Go's reference peer serve: the single and
//! stream echoes on 78 measured by `single` and `stream`) and the bench's
//! own stream handlers with wider windows (`stream-pipe`, `stream-out`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::driver::{Connection, Manager, Options, RemoteError, Runtime, StreamOptions};
use grid_proto::{Capacities, HandlerId, Stats};

use crate::load::{self, BoxFut, Exec, Hang, Tally, Window};
use crate::plan::{self, Params, Row, Subject, Topology, Workload};
use crate::server::{self, ServerProcess};
use crate::sys;

/// The reference table's echo: single (any payload back) and stream
/// (InCapacity 1, OutCapacity 1, each message back).
const REF_ECHO: HandlerId = HandlerId::TEST;
/// The pipelined echo stream handler (in and out: `--window`, 64).
const ECHO: HandlerId = HandlerId(41);
/// The output-only stream handler (in 0, out `--window`): repeats its initial
/// payload until the stream is cancelled.
const SOURCE: HandlerId = HandlerId(42);

fn echo_caps() -> Capacities {
    let w = plan::window();
    Capacities {
        in_capacity: w,
        out_capacity: w,
    }
}

fn source_caps() -> Capacities {
    Capacities {
        in_capacity: 0,
        out_capacity: plan::window(),
    }
}

/// A client node connected to a serving node, seen from the client.
pub(crate) struct Pair {
    /// The client's connection to the server.
    pub(crate) conn: Connection,
    /// The server's connection to the client, when it is in this process.
    back: Option<Connection>,
    /// The server's process, when it has one (killed when dropped).
    server: Option<ServerProcess>,
    /// Shuts the managers of this process down.
    shutdown: Box<dyn FnOnce() -> BoxFut<()> + Send>,
}

fn register<R: Runtime>(m: &Manager<R>) -> Result<(), String> {
    let e = |e: grid_proto::driver::RegisterError| e.to_string();
    conformance::register_reference_handlers(m).map_err(e)?;
    m.register_stream(ECHO, echo_caps(), |call| async move {
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
    m.register_stream(SOURCE, source_caps(), |call| async move {
        let message = call.payload.unwrap_or_default();
        let mut output = call.output;
        // Ends when the caller cancels the stream.
        while output.send(message.clone()).await.is_ok() {}
        Ok(())
    })
    .map_err(e)?;
    Ok(())
}

const CONNECT_WAIT: Duration = Duration::from_secs(5);

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
    conn.wait_for_connect(CONNECT_WAIT)
        .await
        .map_err(|e| format!("node 1 -> 2 did not connect: {e}"))?;
    back.wait_for_connect(CONNECT_WAIT)
        .await
        .map_err(|e| format!("node 2 -> 1 did not connect: {e}"))?;
    Ok(Pair {
        conn,
        back: Some(back),
        server: None,
        shutdown: Box::new(move || {
            Box::pin(async move {
                m1.shutdown(None).await;
                m2.shutdown(None).await;
            })
        }),
    })
}

/// Starts the client manager `m` (host `me`) against the server process
/// listening at `server.addr`, and waits until they are connected.
async fn connect_to<R: Runtime>(
    m: Manager<R>,
    server: ServerProcess,
    there: &str,
) -> Result<Pair, String> {
    register(&m)?;
    m.start();
    let conn = m.connection(there).ok_or("no connection to the server")?;
    conn.wait_for_connect(CONNECT_WAIT)
        .await
        .map_err(|e| format!("the client did not connect to the server process: {e}"))?;
    Ok(Pair {
        conn,
        back: None,
        server: Some(server),
        shutdown: Box::new(move || Box::pin(async move { m.shutdown(None).await })),
    })
}

fn hosts(a1: std::net::SocketAddr, a2: std::net::SocketAddr) -> (String, String) {
    (format!("http://{a1}"), format!("http://{a2}"))
}

/// A grid-tokio client and its server (call inside the tokio runtime).
pub(crate) async fn pair_tokio(topology: Topology) -> Result<Pair, String> {
    let e = |e: std::io::Error| e.to_string();
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let l1 = bind().await.map_err(e)?;
    let h1 = format!("http://{}", l1.local_addr().map_err(e)?);
    let new = |me: &str, hs: &[String]| {
        grid_tokio::Manager::new(grid_tokio::Tokio, me, hs, Options::default())
            .map_err(|e| e.to_string())
    };
    if topology == Topology::TwoProcess {
        let server = ServerProcess::spawn(Subject::Tokio, Some(&h1))?;
        let there = format!("http://{}", server.addr);
        let m = new(&h1, &[h1.clone(), there.clone()])?;
        tokio::spawn(grid_tokio::serve(m.clone(), l1));
        return connect_to(m, server, &there).await;
    }
    let l2 = bind().await.map_err(e)?;
    let (h1, h2) = hosts(l1.local_addr().map_err(e)?, l2.local_addr().map_err(e)?);
    let hs = [h1.clone(), h2.clone()];
    let m1 = new(&h1, &hs)?;
    let m2 = new(&h2, &hs)?;
    tokio::spawn(grid_tokio::serve(m1.clone(), l1));
    tokio::spawn(grid_tokio::serve(m2.clone(), l2));
    connect(m1, m2, &h1, &h2).await
}

/// A grid-smol client and its server (on grid-smol's executor, as its callers).
pub(crate) async fn pair_smol(topology: Topology) -> Result<Pair, String> {
    let e = |e: std::io::Error| e.to_string();
    let bind = || async_net::TcpListener::bind("127.0.0.1:0");
    let l1 = bind().await.map_err(e)?;
    let h1 = format!("http://{}", l1.local_addr().map_err(e)?);
    let new = |me: &str, hs: &[String]| {
        grid_smol::Manager::new(grid_smol::Smol, me, hs, Options::default())
            .map_err(|e| e.to_string())
    };
    if topology == Topology::TwoProcess {
        let server = ServerProcess::spawn(Subject::Smol, Some(&h1))?;
        let there = format!("http://{}", server.addr);
        let m = new(&h1, &[h1.clone(), there.clone()])?;
        grid_smol::spawn(grid_smol::serve(m.clone(), l1)).detach();
        return connect_to(m, server, &there).await;
    }
    let l2 = bind().await.map_err(e)?;
    let (h1, h2) = hosts(l1.local_addr().map_err(e)?, l2.local_addr().map_err(e)?);
    let hs = [h1.clone(), h2.clone()];
    let m1 = new(&h1, &hs)?;
    let m2 = new(&h2, &hs)?;
    grid_smol::spawn(grid_smol::serve(m1.clone(), l1)).detach();
    grid_smol::spawn(grid_smol::serve(m2.clone(), l2)).detach();
    connect(m1, m2, &h1, &h2).await
}

/// The server process of a grid-tokio measurement: a node serving the
/// handlers on `listener`, whose only peer is the client `peer`.
pub(crate) async fn serve_tokio(listener: std::net::TcpListener, peer: &str) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let l = tokio::net::TcpListener::from_std(listener).map_err(e)?;
    let addr = l.local_addr().map_err(e)?;
    let me = format!("http://{addr}");
    let hs = [me.clone(), peer.to_owned()];
    let m = grid_tokio::Manager::new(grid_tokio::Tokio, &me, &hs, Options::default())
        .map_err(|e| e.to_string())?;
    register(&m)?;
    tokio::spawn(grid_tokio::serve(m.clone(), l));
    m.start();
    server::announce(addr);
    std::future::pending::<()>().await;
    Ok(())
}

/// [`serve_tokio`] on grid-smol.
pub(crate) async fn serve_smol(listener: std::net::TcpListener, peer: &str) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let l = async_net::TcpListener::try_from(listener).map_err(e)?;
    let addr = l.local_addr().map_err(e)?;
    let me = format!("http://{addr}");
    let hs = [me.clone(), peer.to_owned()];
    let m = grid_smol::Manager::new(grid_smol::Smol, &me, &hs, Options::default())
        .map_err(|e| e.to_string())?;
    register(&m)?;
    grid_smol::spawn(grid_smol::serve(m.clone(), l)).detach();
    m.start();
    server::announce(addr);
    std::future::pending::<()>().await;
    Ok(())
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
    let stats = |c: Option<&Connection>| c.and_then(Connection::stats);
    let before = (pair.conn.stats(), stats(pair.back.as_ref()));
    let mut row = match p.workload {
        Workload::Single => {
            let conn = pair.conn.clone();
            load::closed_loop(&ex, p, move |payload| {
                let r = conn.request(REF_ECHO, payload);
                async move { r.await.map_err(|e| e.to_string()) }
            })
            .await
        }
        Workload::Stream => stream(&ex, p, &pair).await,
        Workload::StreamPipe => stream_pipe(&ex, p, &pair).await,
        Workload::StreamOut => stream_out(&ex, p, &pair).await,
        Workload::Memory => unreachable!("handled above"),
    };
    // Let the connection tasks publish fresh statistics (about 10 a second).
    ex.sleep_until(Instant::now() + Duration::from_millis(250))
        .await;
    let wire = [
        framing("1->2", before.0.as_ref(), pair.conn.stats().as_ref()),
        framing(
            "2->1",
            before.1.as_ref(),
            stats(pair.back.as_ref()).as_ref(),
        ),
    ];
    let wire: Vec<String> = wire.into_iter().flatten().collect();
    if !wire.is_empty() {
        let sep = if row.note.is_empty() { "" } else { "; " };
        row.note = format!("{}{sep}whole run: {}", row.note, wire.join(", "));
    }
    // Best effort: a hung subject must not hang the report.
    let _ = load::timeout(&ex, Duration::from_secs(3), (pair.shutdown)()).await;
    drop(pair.server);
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
    match &pair.back {
        Some(back) => format!(
            "{}; {}",
            show("node 1", pair.conn.stats()),
            show("node 2", back.stats())
        ),
        None => show("client", pair.conn.stats()),
    }
}

/// `p.concurrency` echo streams of the reference table (one message in
/// flight each way); a task per stream sends one message and awaits its
/// echo, in a loop; round trips count, and their latency.
async fn stream<E: Exec>(ex: &E, p: &Params, pair: &Pair) -> Row {
    let payload = Bytes::from(vec![0x5au8; p.payload]);
    let mut streams = Vec::new();
    for _ in 0..p.concurrency {
        match pair.conn.open_stream(REF_ECHO, None).await {
            Ok(h) => streams.push(h),
            Err(e) => return Row::failed(p, format!("OPEN FAILED: {e}")),
        }
    }
    let tally = Arc::new(Tally::default());
    let w = Window::new(p);
    for (mut tx, mut rx) in streams {
        let payload = payload.clone();
        let t = Arc::clone(&tally);
        let slot = tally.slot("echoed");
        ex.spawn(async move {
            let mut hist = crate::hist::Hist::new();
            let (mut n, mut total) = (0u64, 0u64);
            let failed = loop {
                let t0 = Instant::now();
                if t0 >= w.end {
                    break None;
                }
                if let Err(e) = tx.send(payload.clone()).await {
                    break Some(format!("send: {e}"));
                }
                match rx.recv().await {
                    Some(Ok(m)) if m.len() == payload.len() => {
                        let t1 = Instant::now();
                        total += 1;
                        if w.contains(t1) {
                            n += 1;
                            hist.record((t1 - t0).as_nanos() as u64);
                        }
                        slot.set(n, total);
                    }
                    Some(Ok(m)) => break Some(format!("got {} bytes back", m.len())),
                    Some(Err(e)) => break Some(format!("recv: {e}")),
                    None => break Some("the stream ended early".into()),
                }
            };
            match failed {
                Some(e) => t.error(e),
                None => {
                    tx.close();
                    if let Some(end) = rx.recv().await {
                        t.error(format!("after the input ended: {end:?}"));
                    }
                }
            }
            t.merge_hist(&hist);
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
            meaning: "an echo did not come back, or a stream did not end after its input",
            probe: &|| probe(pair),
        },
    )
    .await
}

/// `p.concurrency` echo streams; each has a sender task and a receiver
/// task; messages received back count.
async fn stream_pipe<E: Exec>(ex: &E, p: &Params, pair: &Pair) -> Row {
    let conn = &pair.conn;
    let payload = Bytes::from(vec![0x5au8; p.payload]);
    let tally = Arc::new(Tally::default());
    let opts = StreamOptions {
        capacities: Some(echo_caps()),
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
        capacities: Some(source_caps()),
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
    let mut r0 = sys::Sides::now();
    let pair = match make().await {
        Ok(pair) => pair,
        Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
    };
    // A server process started with the pair: its baseline is from before
    // the client connected.
    r0.server = pair.server.as_ref().map(|s| s.baseline);
    load::settle(ex).await;
    let r1 = sys::Sides::now();
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
                capacities: Some(echo_caps()),
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
    let r2 = sys::Sides::now();
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
    // Dropping the halves cancels the streams: both tables must empty (the
    // server's only when it is in this process).
    held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let live = || {
        let a = pair.conn.stats().map_or(usize::MAX, |s| s.outgoing_streams);
        let b = pair
            .back
            .as_ref()
            .map_or(Some(0), |b| b.stats().map(|s| s.incoming_streams));
        (a, b.unwrap_or(usize::MAX))
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
