//! The recorded-transcript format (`conformance/transcripts/README.md`): JSON
//! Lines with a header, HTTP upgrade records, WebSocket frames and scenario
//! markers, read from `.jsonl` or `.jsonl.gz` files and directories of them.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;

/// One recorded WebSocket connection between two Go peers.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Where it was read from (for messages); a made-up name for in-memory text.
    pub path: PathBuf,
    /// The header (line 1).
    pub header: Header,
    /// Every further record, in file order.
    pub records: Vec<Record>,
}

/// Which end of the WebSocket a peer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WsSide {
    /// It dialed and sent the upgrade request.
    Client,
    /// It accepted the upgrade.
    Server,
}

impl WsSide {
    /// The other end.
    pub fn other(self) -> WsSide {
        match self {
            WsSide::Client => WsSide::Server,
            WsSide::Server => WsSide::Client,
        }
    }
}

impl fmt::Display for WsSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WsSide::Client => "client",
            WsSide::Server => "server",
        })
    }
}

/// Line 1 of a transcript.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Header {
    /// Format version; only 1 exists.
    pub grid_transcript: u32,
    /// The scenario name (e.g. `echo`).
    pub name: String,
    /// What produced the recording.
    #[serde(default)]
    pub source: String,
    /// The WebSocket end of the recording peer.
    pub recorder_ws_side: WsSide,
    /// The grid host name of the recording peer.
    pub recorder_host: String,
    /// The grid host name of the other peer.
    pub peer_host: String,
    /// The auth token both peers used.
    pub token: String,
    /// The upgrade path.
    #[serde(default)]
    pub route: String,
}

/// Direction of a record, from the recording peer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// The recording peer sent it.
    Out,
    /// The recording peer received it.
    In,
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::Out => "out",
            Dir::In => "in",
        })
    }
}

/// The kind of a WebSocket frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WsKind {
    /// A binary message: grid messages.
    Binary,
    /// A text message (Go's grid never sends one).
    Text,
    /// A WebSocket ping.
    Ping,
    /// A WebSocket pong.
    Pong,
    /// A close frame.
    Close,
}

/// Whether a scenario marker opens or closes the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkerKind {
    /// The recording application started the scenario.
    Begin,
    /// The recording application finished it.
    End,
}

/// One record after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based line number in the file.
    pub line: usize,
    /// Microseconds since the first record.
    pub t_us: u64,
    /// What was recorded.
    pub kind: RecordKind,
}

/// The three kinds of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// The HTTP upgrade request or response, whole.
    Http {
        /// Who sent it.
        dir: Dir,
        /// The text, CRLFs included.
        text: String,
    },
    /// One WebSocket frame.
    Ws {
        /// Who sent it.
        dir: Dir,
        /// Its kind.
        kind: WsKind,
        /// The FIN bit.
        fin: bool,
        /// The complete unmasked payload.
        payload: Bytes,
        /// The recorder's human summary (informative only).
        note: Option<String>,
    },
    /// A scenario boundary in the recording application.
    Marker {
        /// Begin or end.
        marker: MarkerKind,
        /// The scenario name.
        scenario: String,
        /// The scenario's result (on `end`).
        result: Option<String>,
    },
}

impl Record {
    /// The direction, for HTTP and WebSocket records.
    pub fn dir(&self) -> Option<Dir> {
        match &self.kind {
            RecordKind::Http { dir, .. } | RecordKind::Ws { dir, .. } => Some(*dir),
            RecordKind::Marker { .. } => None,
        }
    }
}

/// Why a transcript could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file (or directory).
    pub path: PathBuf,
    /// The 1-based line, when the problem is in one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

impl std::error::Error for LoadError {}

/// Every field a record line may have; which ones are set decides its kind.
#[derive(Deserialize)]
struct RawRecord {
    t_us: u64,
    dir: Option<Dir>,
    http: Option<String>,
    ws: Option<WsKind>,
    fin: Option<bool>,
    hex: Option<String>,
    note: Option<String>,
    marker: Option<MarkerKind>,
    scenario: Option<String>,
    result: Option<String>,
}

impl RawRecord {
    fn into_kind(self) -> Result<RecordKind, String> {
        let need_dir = |dir: Option<Dir>| dir.ok_or_else(|| "record without \"dir\"".to_owned());
        match (self.http, self.ws, self.marker) {
            (Some(text), None, None) => Ok(RecordKind::Http {
                dir: need_dir(self.dir)?,
                text,
            }),
            (None, Some(kind), None) => {
                let hex_text = self.hex.unwrap_or_default();
                let payload =
                    hex::decode(&hex_text).map_err(|e| format!("bad \"hex\" ({e}): {hex_text}"))?;
                Ok(RecordKind::Ws {
                    dir: need_dir(self.dir)?,
                    kind,
                    fin: self.fin.unwrap_or(true),
                    payload: Bytes::from(payload),
                    note: self.note,
                })
            }
            (None, None, Some(marker)) => Ok(RecordKind::Marker {
                marker,
                scenario: self.scenario.unwrap_or_default(),
                result: self.result,
            }),
            _ => Err("a record needs exactly one of \"http\", \"ws\", \"marker\"".into()),
        }
    }
}

impl Transcript {
    /// Parses transcript text; `path` is only used in messages.
    pub fn parse(path: impl Into<PathBuf>, text: &str) -> Result<Transcript, LoadError> {
        let path = path.into();
        let err = |line: Option<usize>, reason: String| LoadError {
            path: path.clone(),
            line,
            reason,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty());
        let (hline, htext) = lines
            .next()
            .ok_or_else(|| err(None, "empty transcript".into()))?;
        let header: Header = serde_json::from_str(htext)
            .map_err(|e| err(Some(hline), format!("bad header: {e}")))?;
        if header.grid_transcript != 1 {
            return Err(err(
                Some(hline),
                format!("unsupported format version {}", header.grid_transcript),
            ));
        }
        let mut records = Vec::new();
        for (line, text) in lines {
            let raw: RawRecord = serde_json::from_str(text)
                .map_err(|e| err(Some(line), format!("bad record: {e}")))?;
            let t_us = raw.t_us;
            let kind = raw.into_kind().map_err(|e| err(Some(line), e))?;
            records.push(Record { line, t_us, kind });
        }
        Ok(Transcript {
            path,
            header,
            records,
        })
    }

    /// Reads one `.jsonl` or `.jsonl.gz` file.
    pub fn load(path: &Path) -> Result<Transcript, LoadError> {
        let err = |reason: String| LoadError {
            path: path.to_owned(),
            line: None,
            reason,
        };
        let raw = fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .map_err(|e| err(format!("cannot gunzip: {e}")))?;
            text
        } else {
            String::from_utf8(raw).map_err(|e| err(format!("not UTF-8: {e}")))?
        };
        Transcript::parse(path, &text)
    }

    /// The name to report: the header's scenario name.
    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// The file name, for `file:line` locations.
    pub fn file_name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// Whether `path` names a transcript file (`*.jsonl` or `*.jsonl.gz`).
pub fn is_transcript_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")
}

/// The transcript files under `path`: the file itself, or the transcript
/// files directly in the directory, sorted by name.
pub fn transcript_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let err = |reason: String| LoadError {
        path: path.to_owned(),
        line: None,
        reason,
    };
    if !path.is_dir() {
        if !path.exists() {
            return Err(err("no such file or directory".into()));
        }
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| err(format!("cannot list: {e}")))? {
        let file = entry.map_err(|e| err(format!("cannot list: {e}")))?.path();
        if file.is_file() && is_transcript_file(&file) {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every transcript under `path` (a file or a directory).
pub fn load_path(path: &Path) -> Result<Vec<Transcript>, LoadError> {
    transcript_files(path)?
        .iter()
        .map(|f| Transcript::load(f))
        .collect()
}

/// The directories listed in the `GRID_TRANSCRIPTS` environment variable
/// (colon-separated; empty entries skipped).
pub fn env_dirs() -> Vec<PathBuf> {
    std::env::var_os("GRID_TRANSCRIPTS")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{"grid_transcript": 1, "name": "echo", "source": "x", "recorder_ws_side": "client", "recorder_host": "http://a:1", "peer_host": "http://b:2", "token": "debug", "route": "/minio/grid/v1"}
{"t_us": 10, "dir": "out", "http": "GET / HTTP/1.1\r\n\r\n"}

{"t_us": 20, "dir": "in", "ws": "binary", "fin": true, "hex": "0a0b", "note": "n"}
{"t_us": 30, "marker": "end", "scenario": "echo", "result": "PASS"}
"#;

    #[test]
    fn parses_every_record_kind_with_line_numbers() {
        let t = Transcript::parse("x.jsonl", TEXT).unwrap();
        assert_eq!(t.header.recorder_ws_side, WsSide::Client);
        assert_eq!(t.records.len(), 3);
        assert_eq!(t.records[1].line, 4);
        assert_eq!(
            t.records[1].kind,
            RecordKind::Ws {
                dir: Dir::In,
                kind: WsKind::Binary,
                fin: true,
                payload: Bytes::from_static(&[0x0a, 0x0b]),
                note: Some("n".into()),
            }
        );
        assert!(matches!(
            &t.records[2].kind,
            RecordKind::Marker { marker: MarkerKind::End, result: Some(r), .. } if r == "PASS"
        ));
    }

    #[test]
    fn reports_bad_lines() {
        let bad = TEXT.replace("0a0b", "0x");
        let e = Transcript::parse("x.jsonl", &bad).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.to_string().starts_with("x.jsonl:4: bad \"hex\""), "{e}");
        let e = Transcript::parse("x.jsonl", "").unwrap_err();
        assert_eq!(e.to_string(), "x.jsonl: empty transcript");
    }
}
