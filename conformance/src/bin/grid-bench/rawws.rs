//! The `raw-ws` reference point: tokio-tungstenite over one WebSocket with
//! no protocol on top, so its figures are the practical limit of a
//! WebSocket transport on this machine.
//!
//! - single: callers pipeline requests over one socket, each prefixed with
//!   an 8-byte request id; a writer task sends everything pending, then
//!   flushes once; a reader task hands answers back by id. The server echoes
//!   each message, flushing once per burst of readable messages. The writer
//!   yields once after its first message before draining the queue: without
//!   that, tokio's LIFO slot runs it right after each caller that wakes it
//!   and nearly every flush carries one request (measured: 1.6 msg/flush and
//!   about a third of the throughput at 64 callers).
//! - stream: as single (a message and its echo over the socket is all a
//!   stream round trip is without a protocol).
//! - stream-pipe: the same echo server; a sender task streams messages
//!   (flushing every 64), a receiver task counts what comes back.
//! - stream-out: the server sends messages as fast as the socket takes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async, client_async};

use crate::load::{self, Exec, Hang, Tally, TokioExec, Window};
use crate::plan::{Params, Row, Subject, Topology, Workload};
use crate::server::ServerProcess;
use crate::sys;

type Ws = WebSocketStream<TcpStream>;

/// What the server does with an accepted socket.
#[derive(Clone)]
enum Mode {
    Echo,
    Source(Bytes),
}

/// Most messages echoed before a flush.
const BURST: usize = 256;

/// Messages written and flushes, of the echo server and of the pipelining
/// client (one measurement per process, so plain statics do).
static SERVER_MSGS: AtomicU64 = AtomicU64::new(0);
static SERVER_FLUSHES: AtomicU64 = AtomicU64::new(0);
static CLIENT_MSGS: AtomicU64 = AtomicU64::new(0);
static CLIENT_FLUSHES: AtomicU64 = AtomicU64::new(0);

fn count(msgs: &AtomicU64, flushes: &AtomicU64, n: u64) {
    msgs.fetch_add(n, Ordering::Relaxed);
    flushes.fetch_add(1, Ordering::Relaxed);
}

fn per_flush(msgs: &AtomicU64, flushes: &AtomicU64) -> f64 {
    msgs.load(Ordering::Relaxed) as f64 / flushes.load(Ordering::Relaxed).max(1) as f64
}

async fn echo(mut ws: Ws) {
    while let Some(Ok(first)) = ws.next().await {
        if first.is_close() {
            return;
        }
        let mut n = 0;
        if first.is_binary() {
            if ws.feed(first).await.is_err() {
                return;
            }
            n += 1;
        }
        // Everything already readable, then one flush.
        for _ in 0..BURST {
            match ws.next().now_or_never() {
                None => break,
                Some(Some(Ok(m))) if m.is_binary() => {
                    if ws.feed(m).await.is_err() {
                        return;
                    }
                    n += 1;
                }
                Some(Some(Ok(m))) if m.is_close() => return,
                Some(Some(Ok(_))) => {}
                Some(_) => return,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
        count(&SERVER_MSGS, &SERVER_FLUSHES, n);
    }
}

async fn source(mut ws: Ws, message: Bytes) {
    loop {
        for _ in 0..63 {
            if ws.feed(Message::Binary(message.clone())).await.is_err() {
                return;
            }
        }
        if ws.send(Message::Binary(message.clone())).await.is_err() {
            return;
        }
    }
}

/// The path of the socket that streams `len`-byte messages.
fn source_path(len: usize) -> String {
    format!("/source/{len}")
}

/// What a socket opened on `path` gets: `/source/N` the source of N-byte
/// messages, anything else the echo.
fn mode_of(path: &str) -> Mode {
    match path
        .strip_prefix("/source/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(len) => Mode::Source(Bytes::from(vec![0x3cu8; len])),
        None => Mode::Echo,
    }
}

/// Accepts sockets on `l` until it fails, each served as its path asks.
async fn accept_loop(l: TcpListener) {
    while let Ok((tcp, _)) = l.accept().await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let mut mode = Mode::Echo;
            // The callback's type is tungstenite's, large error and all.
            #[allow(clippy::result_large_err)]
            let pick = |req: &Request, resp: Response| {
                mode = mode_of(req.uri().path());
                Ok(resp)
            };
            let Ok(ws) = accept_hdr_async(tcp, pick).await else {
                return;
            };
            match mode {
                Mode::Echo => echo(ws).await,
                Mode::Source(m) => source(ws, m).await,
            }
        });
    }
}

/// Where the measurement's server listens: in this process (one-process),
/// or in a server process of its own (two-process), held until dropped.
async fn server(p: &Params) -> Result<(std::net::SocketAddr, Option<ServerProcess>), String> {
    if p.topology == Topology::TwoProcess {
        let server = ServerProcess::spawn(Subject::RawWs, None)?;
        return Ok((server.addr, Some(server)));
    }
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(accept_loop(l));
    Ok((addr, None))
}

/// The server process of a raw-ws measurement.
pub(crate) async fn serve(listener: std::net::TcpListener) -> Result<(), String> {
    let l = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    crate::server::announce(l.local_addr().map_err(|e| e.to_string())?);
    accept_loop(l).await;
    Err("the listener failed".into())
}

async fn dial(addr: std::net::SocketAddr, path: &str) -> Result<Ws, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (ws, _) = client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The pipelining client of the single workload.
struct Client {
    to_writer: mpsc::UnboundedSender<Bytes>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next: AtomicU64,
}

impl Client {
    async fn start(addr: std::net::SocketAddr) -> Result<Arc<Client>, String> {
        let (mut sink, mut stream) = dial(addr, "/echo").await?.split();
        let (to_writer, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let client = Arc::new(Client {
            to_writer,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.feed(Message::Binary(m)).await.is_err() {
                    return;
                }
                // Let the callers woken with us queue their requests first:
                // otherwise tokio's LIFO slot runs this task right after
                // each caller, and every flush carries one request.
                tokio::task::yield_now().await;
                let mut n = 1;
                while let Ok(m) = rx.try_recv() {
                    if sink.feed(Message::Binary(m)).await.is_err() {
                        return;
                    }
                    n += 1;
                }
                if sink.flush().await.is_err() {
                    return;
                }
                count(&CLIENT_MSGS, &CLIENT_FLUSHES, n);
            }
        });
        let weak = Arc::downgrade(&client);
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let Message::Binary(b) = m else { continue };
                if b.len() < 8 {
                    continue;
                }
                let id = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                let Some(client) = weak.upgrade() else { return };
                let waiter = client
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(b.slice(8..));
                }
            }
        });
        Ok(client)
    }

    async fn call(&self, payload: Bytes) -> Result<Bytes, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut m = BytesMut::with_capacity(8 + payload.len());
        m.put_u64(id);
        m.put_slice(&payload);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.to_writer
            .send(m.freeze())
            .map_err(|_| "writer gone".to_string())?;
        rx.await.map_err(|_| "connection lost".to_string())
    }
}

/// Runs workload `p` (inside the tokio runtime).
pub(crate) async fn run(p: &Params) -> Vec<Row> {
    let ex = TokioExec;
    match p.workload {
        // A stream round trip is a message and its echo over the socket:
        // on a bare WebSocket that is what a request is.
        Workload::Single | Workload::Stream => {
            let (addr, server) = match server(p).await {
                Ok(s) => s,
                Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
            };
            let client = match Client::start(addr).await {
                Ok(c) => c,
                Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
            };
            let mut row = load::closed_loop(&ex, p, move |payload| {
                let c = Arc::clone(&client);
                async move { c.call(payload).await }
            })
            .await;
            if p.workload == Workload::Stream {
                row.unit = "msg/s".into();
            }
            let sep = if row.note.is_empty() { "" } else { "; " };
            let server_side = match server {
                // Its counters are in the other process.
                Some(_) => String::new(),
                None => format!(
                    ", server {:.1} msg/flush",
                    per_flush(&SERVER_MSGS, &SERVER_FLUSHES)
                ),
            };
            row.note = format!(
                "{}{sep}whole run: client {:.1} msg/flush{server_side}",
                row.note,
                per_flush(&CLIENT_MSGS, &CLIENT_FLUSHES),
            );
            vec![row]
        }
        Workload::StreamPipe => vec![stream(&ex, p).await],
        Workload::StreamOut => vec![stream_out(&ex, p).await],
        Workload::Memory => memory(&ex, p).await,
    }
}

async fn stream(ex: &TokioExec, p: &Params) -> Row {
    let payload = Bytes::from(vec![0x5au8; p.payload]);
    let (addr, _server) = match server(p).await {
        Ok(s) => s,
        Err(e) => return Row::failed(p, format!("SETUP FAILED: {e}")),
    };
    let mut sockets = Vec::new();
    for _ in 0..p.concurrency {
        match dial(addr, "/echo").await {
            Ok(ws) => sockets.push(ws),
            Err(e) => return Row::failed(p, format!("SETUP FAILED: {e}")),
        }
    }
    let tally = Arc::new(Tally::default());
    let w = Window::new(p);
    for ws in sockets {
        let (mut sink, mut stream) = ws.split();
        let len = payload.len();
        let payload = payload.clone();
        let t = Arc::clone(&tally);
        let sent = tally.slot("sent");
        ex.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < w.end {
                n += 1;
                sent.set(0, n);
                let m = Message::Binary(payload.clone());
                let r = if n.is_multiple_of(64) {
                    sink.send(m).await
                } else {
                    sink.feed(m).await
                };
                if let Err(e) = r {
                    t.error(format!("send: {e}"));
                    break;
                }
            }
            let _ = sink.close().await;
            t.finished();
        });
        let t = Arc::clone(&tally);
        let received = tally.slot("received");
        ex.spawn(async move {
            let (mut n, mut total) = (0u64, 0u64);
            while let Some(m) = stream.next().await {
                match m {
                    Ok(Message::Binary(b)) => {
                        total += 1;
                        if w.contains(Instant::now()) {
                            n += 1;
                        }
                        received.set(n, total);
                        if b.len() != len {
                            t.error(format!("got {} bytes, sent {len}", b.len()));
                            break;
                        }
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    // The server drops the socket after our close.
                    Err(_) if Instant::now() >= w.end => break,
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
            meaning: "the echo socket did not close",
            probe: &String::new,
        },
    )
    .await
}

async fn stream_out(ex: &TokioExec, p: &Params) -> Row {
    let payload = Bytes::from(vec![0x3cu8; p.payload]);
    let (addr, _server) = match server(p).await {
        Ok(s) => s,
        Err(e) => return Row::failed(p, format!("SETUP FAILED: {e}")),
    };
    let mut sockets = Vec::new();
    for _ in 0..p.concurrency {
        match dial(addr, &source_path(payload.len())).await {
            Ok(ws) => sockets.push(ws),
            Err(e) => return Row::failed(p, format!("SETUP FAILED: {e}")),
        }
    }
    let tally = Arc::new(Tally::default());
    let w = Window::new(p);
    for mut ws in sockets {
        let t = Arc::clone(&tally);
        let len = payload.len();
        let received = tally.slot("received");
        ex.spawn(async move {
            let (mut n, mut total) = (0u64, 0u64);
            while Instant::now() < w.end {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        total += 1;
                        if w.contains(Instant::now()) {
                            n += 1;
                        }
                        received.set(n, total);
                        if b.len() != len {
                            t.error(format!("got {} bytes, expected {len}", b.len()));
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        t.error(format!("recv: {e}"));
                        break;
                    }
                    None => {
                        t.error("socket closed early");
                        break;
                    }
                }
            }
            drop(ws);
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
            probe: &String::new,
        },
    )
    .await
}

/// RSS of one idle WebSocket (client and echo server ends, after one echo).
async fn memory(ex: &TokioExec, p: &Params) -> Vec<Row> {
    load::settle(ex).await;
    let mut r0 = sys::Sides::now();
    let (addr, server) = match server(p).await {
        Ok(s) => s,
        Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
    };
    r0.server = server.as_ref().map(|s| s.baseline);
    let client = match Client::start(addr).await {
        Ok(c) => c,
        Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
    };
    let echoed = load::timeout(
        ex,
        Duration::from_secs(5),
        client.call(Bytes::from_static(b"x")),
    )
    .await;
    if !matches!(echoed, Some(Ok(_))) {
        return vec![Row::failed(p, "the first echo failed")];
    }
    load::settle(ex).await;
    let r1 = sys::Sides::now();
    let row = load::memory_row(p, "memory/conn", 1, r0, r1);
    drop(client);
    vec![row]
}
