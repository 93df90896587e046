//! A tap: a transparent TCP forwarder between two grid peers on a plain
//! `http://` link, which records every connection through it in the
//! transcript format (and, if asked, prints every message as it passes).
//!
//! It changes no byte. Each direction is parsed on the side: the HTTP
//! upgrade, then WebSocket frames (the dialer's unmasked, fragments joined).
//! A transcript is written from the dialer's side: `out` is what the dialer
//! sent, `recorder_host` its host (from its `Connect`), `peer_host` the
//! name it dialed (`http://` and the upgrade's `Host`), so a replay knows
//! who dials. Each chunk is recorded before it is forwarded, so an answer
//! is always recorded after its cause. There are no scenario markers.
//!
//! The nodes keep their names: the dialer reaches the tap because the name
//! it dials points at the tap's address, and the node it dials listens on
//! another address, the tap's upstream (`grid-conformance serve --listen`).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::{ConnectRequest, Message, Op};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::decode::record_lines;
use crate::transcript::{Dir, Record, RecordKind, WsKind};

/// The largest WebSocket frame the tap parses; past it a direction is only
/// forwarded (no peer sends one in a recording worth replaying).
const MAX_FRAME: u64 = 256 << 20;

/// What a tap does besides forwarding.
#[derive(Debug, Clone, Default)]
pub struct TapOptions {
    /// Write one transcript per connection into this directory.
    pub record: Option<PathBuf>,
    /// Print every message on stdout as it passes, one line each.
    pub print: bool,
}

/// A running tap (on a tokio runtime of its own).
#[derive(Debug)]
pub struct Tap {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<JoinSet<()>>>,
    recordings: Arc<Mutex<Vec<PathBuf>>>,
}

impl Tap {
    /// Starts forwarding every connection made to `listener` to `upstream`.
    pub fn start(
        listener: StdListener,
        upstream: SocketAddr,
        options: TapOptions,
    ) -> io::Result<Tap> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(listener)?
        };
        if let Some(dir) = &options.record {
            fs::create_dir_all(dir)?;
        }
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let recordings = Arc::new(Mutex::new(Vec::new()));
        let accept = rt.spawn(accept_loop(
            listener,
            upstream,
            options,
            Arc::clone(&connections),
            Arc::clone(&recordings),
        ));
        Ok(Tap {
            rt,
            addr,
            accept,
            connections,
            recordings,
        })
    }

    /// Where the tap listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The transcripts written so far (one per connection).
    pub fn recordings(&self) -> Vec<PathBuf> {
        self.recordings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs until the process is killed.
    pub fn run_forever(self) -> ! {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
            let _ = &self.rt;
        }
    }

    /// Stops accepting, waits up to `grace` for the connections through it
    /// to close (their transcripts are then complete), then cuts the rest.
    pub fn shutdown(self, grace: Duration) -> Vec<PathBuf> {
        self.accept.abort();
        let connections = Arc::clone(&self.connections);
        self.rt.block_on(async move {
            let deadline = tokio::time::Instant::now() + grace;
            loop {
                let mut set =
                    std::mem::take(&mut *connections.lock().unwrap_or_else(|e| e.into_inner()));
                let done = tokio::time::timeout_at(deadline, async {
                    while set.join_next().await.is_some() {}
                })
                .await;
                if done.is_err() {
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    return;
                }
                if connections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
                {
                    return;
                }
            }
        });
        let recordings = self.recordings();
        self.rt.shutdown_background();
        recordings
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    options: TapOptions,
    connections: Arc<Mutex<JoinSet<()>>>,
    recordings: Arc<Mutex<Vec<PathBuf>>>,
) {
    let mut n = 0u32;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors, say: let connections close first.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        n += 1;
        let recording = Arc::new(Mutex::new(Recording::new(n, &options, &recordings)));
        connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(forward(client, upstream, recording));
    }
}

/// Forwards one connection both ways until both directions end.
async fn forward(client: TcpStream, upstream: SocketAddr, recording: Arc<Mutex<Recording>>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // the client sees its connection close
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = pump(client_r, server_w, Dir::Out, Arc::clone(&recording));
    let down = pump(server_r, client_w, Dir::In, Arc::clone(&recording));
    tokio::join!(up, down);
    recording.lock().unwrap_or_else(|e| e.into_inner()).finish();
}

/// Copies one direction, recording what passes before forwarding it.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: Dir,
    recording: Arc<Mutex<Recording>>,
) {
    let mut parser = Parser::new(dir);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let items = parser.feed(&buf[..n]);
        if !items.is_empty() {
            let mut rec = recording.lock().unwrap_or_else(|e| e.into_inner());
            for item in items {
                rec.add(dir, item);
            }
            rec.flush();
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// One thing a direction carried.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// The HTTP upgrade request or response head.
    Http(String),
    /// A WebSocket message (fragments joined) or control frame.
    Ws(WsKind, Bytes),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Http,
    Ws,
    /// Not parsed any further (a refused upgrade, a frame we do not read).
    Off,
}

/// The passive parser of one direction.
#[derive(Debug)]
struct Parser {
    dir: Dir,
    stage: Stage,
    buf: Vec<u8>,
    /// A fragmented message being joined: its kind and bytes so far.
    fragments: Option<(WsKind, Vec<u8>)>,
}

impl Parser {
    fn new(dir: Dir) -> Parser {
        Parser {
            dir,
            stage: Stage::Http,
            buf: Vec::new(),
            fragments: None,
        }
    }

    /// Takes bytes that passed; returns what they completed.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Item> {
        if self.stage == Stage::Off {
            return Vec::new();
        }
        self.buf.extend_from_slice(bytes);
        let mut items = Vec::new();
        loop {
            let item = match self.stage {
                Stage::Http => self.http(),
                Stage::Ws => self.frame(),
                Stage::Off => None,
            };
            match item {
                Some(Some(item)) => items.push(item),
                Some(None) => {}
                None => break,
            }
        }
        if self.stage == Stage::Off {
            self.buf = Vec::new();
        }
        items
    }

    /// The upgrade head, once complete (`Some(None)`: nothing to report).
    fn http(&mut self) -> Option<Option<Item>> {
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let text = String::from_utf8_lossy(&head).into_owned();
        // After a request or a `101` both sides speak WebSocket; after a
        // refusal there is nothing more to read.
        let upgraded = self.dir == Dir::Out || text.split_whitespace().nth(1) == Some("101");
        self.stage = if upgraded { Stage::Ws } else { Stage::Off };
        Some(Some(Item::Http(text)))
    }

    /// The next complete frame (`Some(None)`: a fragment was taken).
    fn frame(&mut self) -> Option<Option<Item>> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        if len > MAX_FRAME {
            self.stage = Stage::Off;
            return None;
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        let len = len as usize;
        if b.len() < at + len {
            return None;
        }
        let mut payload: Vec<u8> = self.buf.drain(..at + len).skip(at).collect();
        if let Some(m) = mask {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= m[i % 4];
            }
        }
        let kind = match opcode {
            0 => {
                let Some((kind, mut joined)) = self.fragments.take() else {
                    self.stage = Stage::Off;
                    return None;
                };
                joined.extend_from_slice(&payload);
                if !fin {
                    self.fragments = Some((kind, joined));
                    return Some(None);
                }
                return Some(Some(Item::Ws(kind, Bytes::from(joined))));
            }
            1 => WsKind::Text,
            2 => WsKind::Binary,
            8 => WsKind::Close,
            9 => WsKind::Ping,
            10 => WsKind::Pong,
            _ => {
                self.stage = Stage::Off;
                return None;
            }
        };
        if !fin && matches!(kind, WsKind::Text | WsKind::Binary) {
            self.fragments = Some((kind, payload));
            return Some(None);
        }
        Some(Some(Item::Ws(kind, Bytes::from(payload))))
    }
}

/// The transcript of one connection.
struct Recording {
    n: u32,
    start: Instant,
    print: bool,
    dir: Option<PathBuf>,
    recordings: Arc<Mutex<Vec<PathBuf>>>,
    /// Lines waiting for the header (it needs the dialer's `Connect`).
    pending: Vec<String>,
    out: Option<BufWriter<File>>,
    route: String,
    token: String,
    /// The name the dialer dialed.
    acceptor: String,
    /// The dialer's `Connect` has been seen.
    named: bool,
    finished: bool,
}

impl Recording {
    fn new(n: u32, options: &TapOptions, recordings: &Arc<Mutex<Vec<PathBuf>>>) -> Recording {
        Recording {
            n,
            start: Instant::now(),
            print: options.print,
            dir: options.record.clone(),
            recordings: Arc::clone(recordings),
            pending: Vec::new(),
            out: None,
            route: String::new(),
            token: String::new(),
            acceptor: String::new(),
            named: false,
            finished: false,
        }
    }

    fn t_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn add(&mut self, dir: Dir, item: Item) {
        let t_us = self.t_us();
        let (kind, line) = match item {
            Item::Http(text) => {
                if dir == Dir::Out {
                    self.upgrade_request(&text);
                }
                let line = json!({"t_us": t_us, "dir": dir.to_string(), "http": text});
                (RecordKind::Http { dir, text }, line)
            }
            Item::Ws(kind, payload) => {
                let name = match kind {
                    WsKind::Binary => "binary",
                    WsKind::Text => "text",
                    WsKind::Ping => "ping",
                    WsKind::Pong => "pong",
                    WsKind::Close => "close",
                };
                let line = json!({
                    "t_us": t_us,
                    "dir": dir.to_string(),
                    "ws": name,
                    "fin": true,
                    "hex": hex::encode(&payload),
                });
                if dir == Dir::Out && kind == WsKind::Binary && !self.named {
                    self.maybe_connect(&payload);
                }
                let kind = RecordKind::Ws {
                    dir,
                    kind,
                    fin: true,
                    payload,
                    note: None,
                };
                (kind, line)
            }
        };
        if self.print {
            let record = Record {
                line: 0,
                t_us,
                kind,
            };
            for l in record_lines(&record) {
                println!("#{} {l}", self.n);
            }
        }
        let written = self.out.as_mut().map(|out| writeln!(out, "{line}").is_ok());
        match written {
            Some(true) => {}
            Some(false) => self.out = None,
            None if self.dir.is_some() && !self.finished => self.pending.push(line.to_string()),
            None => {}
        }
    }

    /// Route, token and the dialed name, from the upgrade request.
    fn upgrade_request(&mut self, text: &str) {
        let mut lines = text.lines();
        if let Some(path) = lines.next().and_then(|l| l.split_whitespace().nth(1)) {
            self.route = path.to_owned();
        }
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("host") {
                self.acceptor = format!("http://{value}");
            } else if name.eq_ignore_ascii_case("authorization") {
                self.token = value.strip_prefix("Bearer ").unwrap_or(value).to_owned();
            }
        }
    }

    /// The dialer's `Connect` names it: the header can be written.
    fn maybe_connect(&mut self, frame: &Bytes) {
        let Ok(m) = Message::decode(frame) else {
            return;
        };
        if m.op != Op::Connect {
            return;
        }
        let Ok(req) = ConnectRequest::decode(&m.payload) else {
            return;
        };
        if self.token.is_empty() {
            self.token = req.token.clone();
        }
        self.named = true;
        self.open(&req.host);
    }

    /// Opens the transcript and writes the header and what waited for it.
    fn open(&mut self, dialer: &str) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let name = format!("tap-{}-{:03}", std::process::id(), self.n);
        let path = dir.join(format!("{name}.jsonl"));
        let Ok(file) = File::create(&path) else {
            eprintln!("tap: cannot create {}", path.display());
            self.dir = None;
            return;
        };
        let mut out = BufWriter::new(file);
        let route = if self.route.is_empty() {
            grid_proto::driver::DEFAULT_ROUTE.to_owned()
        } else {
            self.route.clone()
        };
        let header = json!({
            "grid_transcript": 1,
            "name": name,
            "source": concat!("grid-conformance tap ", env!("CARGO_PKG_VERSION")),
            "recorder_ws_side": "client",
            "recorder_host": dialer,
            "peer_host": self.acceptor,
            "token": self.token,
            "route": route,
        });
        let mut ok = writeln!(out, "{header}").is_ok();
        for line in self.pending.drain(..) {
            ok &= writeln!(out, "{line}").is_ok();
        }
        if ok {
            self.out = Some(out);
            self.recordings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path);
        }
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && out.flush().is_err()
        {
            self.out = None;
        }
    }

    /// The connection closed: a dialer that never sent `Connect` gets a
    /// transcript anyway (without its host).
    fn finish(&mut self) {
        if self.out.is_none() && !self.pending.is_empty() {
            self.open("");
        }
        self.flush();
        self.finished = true;
        self.out = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend((n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend((n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend(k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend(payload),
        }
        f
    }

    #[test]
    fn a_dialer_s_bytes_become_the_request_and_unmasked_messages() {
        let mut p = Parser::new(Dir::Out);
        let mut bytes = b"GET /minio/grid/v1 HTTP/1.1\r\nHost: a:1\r\n\r\n".to_vec();
        bytes.extend(frame(2, true, Some([1, 2, 3, 4]), b"hello"));
        bytes.extend(frame(2, false, Some([9, 9, 9, 9]), b"par"));
        bytes.extend(frame(9, true, Some([5, 5, 5, 5]), b"p"));
        bytes.extend(frame(0, true, Some([7, 0, 7, 0]), &[b't'; 300]));
        // Byte by byte: the parser must not care how reads split frames.
        let mut items = Vec::new();
        for b in &bytes {
            items.extend(p.feed(std::slice::from_ref(b)));
        }
        assert!(matches!(&items[0], Item::Http(t) if t.starts_with("GET /minio/grid/v1")));
        assert_eq!(
            items[1],
            Item::Ws(WsKind::Binary, Bytes::from_static(b"hello"))
        );
        assert_eq!(items[2], Item::Ws(WsKind::Ping, Bytes::from_static(b"p")));
        let mut joined = b"par".to_vec();
        joined.extend([b't'; 300]);
        assert_eq!(items[3], Item::Ws(WsKind::Binary, Bytes::from(joined)));
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn a_refused_upgrade_ends_parsing_and_garbage_is_left_alone() {
        let mut p = Parser::new(Dir::In);
        let items = p.feed(b"HTTP/1.1 403 Forbidden\r\n\r\n\x82\x01x");
        assert_eq!(items.len(), 1);
        assert_eq!(p.stage, Stage::Off);
        let mut p = Parser::new(Dir::In);
        let items = p.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x83\x00");
        assert_eq!(items.len(), 1, "an unknown opcode is not parsed");
        assert_eq!(p.stage, Stage::Off);
        let mut p = Parser::new(Dir::In);
        p.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        let mut huge = vec![0x82, 127];
        huge.extend(u64::MAX.to_be_bytes());
        assert!(p.feed(&huge).is_empty());
        assert_eq!(p.stage, Stage::Off, "an absurd length is not buffered");
    }
}
