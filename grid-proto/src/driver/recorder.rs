//! Recording a manager's connections in the transcript format of the
//! repository's `conformance/transcripts` (JSON Lines: a header, the HTTP
//! upgrade request, every WebSocket frame each way with its time), so a
//! real exchange can be captured and replayed later by the conformance
//! suite.
//!
//! Off unless [`Options::recorder`](crate::driver::Options::recorder) is
//! set; when it is, every transport of every connection gets a transcript
//! of its own. Only what the connection task sees is recorded: a dialer's
//! upgrade request as it goes out (its response stays inside the runtime's
//! dial), an acceptor's `Connect` and everything after it (its upgrade was
//! handled before the manager got the socket).
//!
//! ```no_run
//! use grid_proto::driver::{Options, Recorder};
//!
//! let options = Options {
//!     recorder: Some(Recorder::to_dir("/tmp/grid-transcripts")),
//!     ..Options::default()
//! };
//! # let _ = options;
//! ```
//!
//! Without the feature the module is still built, but nothing can set a
//! recorder, so the task never opens a recording.
#![cfg_attr(not(feature = "recorder"), allow(dead_code, unreachable_pub))]

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use tracing::{error, warn};
use tungstenite::Message as WsMessage;

use crate::driver::isolate;
use crate::merge::FrameDecoder;
use crate::message::Message;
use crate::op::Op;

/// Opens the output of one recording.
pub type OpenFn =
    Arc<dyn Fn(&RecordingInfo<'_>) -> io::Result<Box<dyn Write + Send>> + Send + Sync>;

/// Where a manager records its connections: one transcript per transport.
#[derive(Clone)]
pub struct Recorder {
    open: OpenFn,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// What a new recording is of.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordingInfo<'a> {
    /// A name unique in this process (`<local>_<remote>_<pid>_<n>`, file
    /// name safe); also the transcript's `name`.
    pub name: &'a str,
    /// This node's host string.
    pub local: &'a str,
    /// The remote host string.
    pub remote: &'a str,
    /// Whether this node dialed (the WebSocket client).
    pub dialer: bool,
}

impl Recorder {
    /// Records into whatever `open` returns for each new transport (a
    /// failure is logged and that transport goes unrecorded).
    pub fn new(
        open: impl Fn(&RecordingInfo<'_>) -> io::Result<Box<dyn Write + Send>> + Send + Sync + 'static,
    ) -> Recorder {
        Recorder {
            open: Arc::new(open),
        }
    }

    /// Records each transport into `<dir>/<name>.jsonl` (the directory is
    /// created if needed).
    pub fn to_dir(dir: impl Into<PathBuf>) -> Recorder {
        let dir = dir.into();
        Recorder::new(move |info| {
            fs::create_dir_all(&dir)?;
            let file = fs::File::create(dir.join(format!("{}.jsonl", info.name)))?;
            Ok(Box::new(io::BufWriter::new(file)) as Box<dyn Write + Send>)
        })
    }
}

/// The fields of a recording's header line.
pub(crate) struct Header<'a> {
    pub(crate) local: &'a str,
    pub(crate) remote: &'a str,
    pub(crate) dialer: bool,
    pub(crate) token: &'a str,
    pub(crate) route: &'a str,
}

/// Which way a recorded frame went, from this node's side.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dir {
    In,
    Out,
}

impl Dir {
    fn as_str(self) -> &'static str {
        match self {
            Dir::In => "in",
            Dir::Out => "out",
        }
    }
}

/// One transport being recorded.
pub(crate) struct Recording {
    /// The application's sink; `None` once it panicked.
    out: Option<Box<dyn Write + Send>>,
    start: Instant,
    name: String,
}

fn file_safe(host: &str) -> String {
    let host = host.split_once("://").map_or(host, |(_, rest)| rest);
    host.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl Recording {
    /// Starts a recording and writes its header; `None` if the recorder
    /// could not open an output.
    pub(crate) fn open(
        recorder: &Recorder,
        header: &Header<'_>,
        now: Instant,
    ) -> Option<Recording> {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "{}_{}_{}_{}",
            file_safe(header.local),
            file_safe(header.remote),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let info = RecordingInfo {
            name: &name,
            local: header.local,
            remote: header.remote,
            dialer: header.dialer,
        };
        let out = match isolate::call(|| (recorder.open)(&info)) {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                warn!(remote = %header.remote, error = %e, "cannot open a transcript; not recording");
                return None;
            }
            Err(panic) => {
                error!(remote = %header.remote, %panic, "the recorder's open hook panicked; not recording");
                return None;
            }
        };
        let line = HeaderLine {
            grid_transcript: 1,
            name: &name,
            source: concat!("grid (Rust) ", env!("CARGO_PKG_VERSION")),
            recorder_ws_side: if header.dialer { "client" } else { "server" },
            recorder_host: header.local,
            peer_host: header.remote,
            token: header.token,
            route: header.route,
        };
        let mut rec = Recording {
            out: Some(out),
            start: now,
            name: name.clone(),
        };
        rec.write(&line).then_some(rec)
    }

    fn t_us(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// An HTTP upgrade request or response, whole.
    pub(crate) fn http(&mut self, now: Instant, dir: Dir, text: &str) -> bool {
        let line = HttpLine {
            t_us: self.t_us(now),
            dir: dir.as_str(),
            http: text,
        };
        self.write(&line)
    }

    /// One WebSocket frame (`kind`: binary, text, ping, pong or close) and
    /// its complete payload.
    pub(crate) fn frame(&mut self, now: Instant, dir: Dir, kind: &str, payload: &[u8]) -> bool {
        let line = WsLine {
            t_us: self.t_us(now),
            dir: dir.as_str(),
            ws: kind,
            fin: true,
            hex: hex(payload),
            note: if kind == "binary" {
                note(payload)
            } else {
                None
            },
        };
        self.write(&line)
    }

    /// A WebSocket message as tungstenite delivers it (raw frames are not
    /// recorded).
    pub(crate) fn ws(&mut self, now: Instant, dir: Dir, msg: &WsMessage) -> bool {
        match msg {
            WsMessage::Binary(b) => self.frame(now, dir, "binary", b),
            WsMessage::Text(t) => self.frame(now, dir, "text", t.as_bytes()),
            WsMessage::Ping(p) => self.frame(now, dir, "ping", p),
            WsMessage::Pong(p) => self.frame(now, dir, "pong", p),
            WsMessage::Close(c) => {
                let mut payload = Vec::new();
                if let Some(c) = c {
                    payload.extend_from_slice(&u16::from(c.code).to_be_bytes());
                    payload.extend_from_slice(c.reason.as_bytes());
                }
                self.frame(now, dir, "close", &payload)
            }
            WsMessage::Frame(_) => true,
        }
    }

    /// Writes one line and flushes it (a killed process keeps what it
    /// recorded). Returns `false` if the output failed: stop recording.
    fn write(&mut self, line: &impl Serialize) -> bool {
        let Some(out) = self.out.as_mut() else {
            return false;
        };
        // The sink is the application's code: a panic in it ends this
        // recording, not the connection.
        let result = isolate::call(|| {
            serde_json::to_writer(&mut *out, line)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
        });
        match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn!(transcript = %self.name, error = %e, "transcript write failed; not recording");
                false
            }
            Err(panic) => {
                error!(transcript = %self.name, %panic, "the recorder's sink panicked; not recording");
                // Its drop may panic as well.
                let out = self.out.take();
                let _ = isolate::call(move || drop(out));
                false
            }
        }
    }
}

impl Drop for Recording {
    /// Dropping the sink runs the application's code too (a `BufWriter`
    /// flushes on drop).
    fn drop(&mut self) {
        let out = self.out.take();
        if let Err(panic) = isolate::call(move || drop(out)) {
            error!(transcript = %self.name, %panic, "the recorder's sink panicked when closed");
        }
    }
}

// The record lines, fields in the order of the Go recorder's.

#[derive(Serialize)]
struct HeaderLine<'a> {
    grid_transcript: u32,
    name: &'a str,
    source: &'a str,
    recorder_ws_side: &'a str,
    recorder_host: &'a str,
    peer_host: &'a str,
    token: &'a str,
    route: &'a str,
}

#[derive(Serialize)]
struct HttpLine<'a> {
    t_us: u64,
    dir: &'a str,
    http: &'a str,
}

#[derive(Serialize)]
struct WsLine<'a> {
    t_us: u64,
    dir: &'a str,
    ws: &'a str,
    fin: bool,
    hex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A human summary of a grid frame, like the Go recorder's.
fn note(frame: &[u8]) -> Option<String> {
    let frame = bytes::Bytes::copy_from_slice(frame);
    let m = Message::decode(&frame).ok()?;
    if m.op == Op::Merged {
        let n = FrameDecoder::new(frame, usize::MAX).ok()?.count();
        return Some(format!("Merged seq={} merged={n}", m.seq));
    }
    Some(format!(
        "{} mux_id={} seq={} deadline_ms={} handler={} flags={:?} payload_len={}",
        m.op,
        m.mux_id,
        m.seq,
        m.deadline_ms,
        m.handler.0,
        m.flags,
        m.payload.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_a_header_then_one_line_per_record() {
        let buf = Shared::default();
        let out = buf.clone();
        let recorder = Recorder::new(move |info| {
            assert!(info.name.starts_with("127_0_0_1_1_127_0_0_1_2_"));
            Ok(Box::new(out.clone()) as Box<dyn Write + Send>)
        });
        let start = Instant::now();
        let header = Header {
            local: "http://127.0.0.1:1",
            remote: "http://127.0.0.1:2",
            dialer: true,
            token: "t",
            route: "/minio/grid/v1",
        };
        let mut rec = Recording::open(&recorder, &header, start).unwrap();
        assert!(rec.http(start, Dir::Out, "GET / HTTP/1.1\r\n\r\n"));
        let mut m = Message::new(Op::Ping, 0);
        m.payload = bytes::Bytes::from_static(b"\x01");
        let later = start + std::time::Duration::from_micros(1500);
        assert!(rec.frame(later, Dir::In, "binary", &m.to_bytes()));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(text.starts_with("{\"grid_transcript\":1,"), "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("{\"t_us\":0,"));
        assert_eq!(lines[0]["grid_transcript"], 1);
        assert_eq!(lines[0]["recorder_ws_side"], "client");
        assert_eq!(lines[0]["peer_host"], "http://127.0.0.1:2");
        assert_eq!(lines[1]["http"], "GET / HTTP/1.1\r\n\r\n");
        assert_eq!(lines[2]["t_us"], 1500);
        assert_eq!(lines[2]["dir"], "in");
        assert_eq!(lines[2]["hex"], hex(&m.to_bytes()));
        assert!(
            lines[2]["note"]
                .as_str()
                .unwrap()
                .starts_with("Ping mux_id=0")
        );
    }
}
