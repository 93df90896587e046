//! Replays every binary frame recorded from the Go implementation through the
//! codec: each frame must decode, and re-encoding what was decoded must give
//! the recorded bytes back exactly (PROTOCOL.md §2–§4).
//!
//! Sources: the Go transcripts copied into the repository
//! (`conformance/transcripts`; the test fails if they are missing) and every `*.jsonl`
//! / `*.jsonl.gz` in the directories listed in `GRID_TRANSCRIPTS`
//! (colon-separated).

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use grid_proto::{
    ConnectRequest, ConnectResponse, FrameBuilder, FrameDecoder, Message, MuxConnectError, Op,
    PingPayload, PongPayload,
};
use serde_json::Value;

/// The recorded transcripts that ship with the spec: 128 binary frames when
/// this test was written. A lower bound, so adding transcripts is fine.
const MIN_SHARED_FRAMES: usize = 120;

/// What was checked, summed over files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    files: usize,
    frames: usize,
    merged_frames: usize,
    messages: usize,
    payloads: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.files += other.files;
        self.frames += other.frames;
        self.merged_frames += other.merged_frames;
        self.messages += other.messages;
        self.payloads += other.payloads;
    }
}

fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/transcripts")
}

/// The transcript files of `dir`, sorted: `*.jsonl` and `*.jsonl.gz`.
fn transcript_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        fs::read_dir(dir).map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_file() && (name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_transcript(path: &Path) -> Result<String, String> {
    let raw = fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: cannot gunzip: {e}", path.display()))?;
        Ok(text)
    } else {
        String::from_utf8(raw).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))
    }
}

/// Checks every binary frame of one transcript file.
fn check_file(path: &Path) -> Result<Counts, String> {
    let text = read_transcript(path)?;
    let name = path.display();
    let mut counts = Counts {
        files: 1,
        ..Counts::default()
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| format!("{name}: empty transcript"))?;
    check_header(header).map_err(|e| format!("{name}:1: {e}"))?;
    for (i, line) in lines {
        let lineno = i + 1;
        let record: Value =
            serde_json::from_str(line).map_err(|e| format!("{name}:{lineno}: not JSON: {e}"))?;
        if record.get("ws").and_then(Value::as_str) != Some("binary") {
            continue;
        }
        let frame_hex = record
            .get("hex")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name}:{lineno}: binary record without \"hex\""))?;
        let frame = hex::decode(frame_hex)
            .map_err(|e| format!("{name}:{lineno}: bad hex ({e}): {frame_hex}"))?;
        let note = record.get("note").and_then(Value::as_str);
        let frame_counts = check_frame(Bytes::from(frame), note)
            .map_err(|e| format!("{name}:{lineno}: {e}\n  frame: {frame_hex}"))?;
        counts.add(frame_counts);
    }
    if counts.frames == 0 {
        return Err(format!("{name}: no binary frames"));
    }
    Ok(counts)
}

fn check_header(line: &str) -> Result<(), String> {
    let header: Value =
        serde_json::from_str(line).map_err(|e| format!("header is not JSON: {e}"))?;
    if header.get("grid_transcript").and_then(Value::as_u64) != Some(1) {
        return Err(format!("header lacks \"grid_transcript\": 1: {line}"));
    }
    for key in [
        "name",
        "source",
        "recorder_host",
        "peer_host",
        "token",
        "route",
    ] {
        if header.get(key).and_then(Value::as_str).is_none() {
            return Err(format!("header lacks string field {key:?}: {line}"));
        }
    }
    match header.get("recorder_ws_side").and_then(Value::as_str) {
        Some("client" | "server") => Ok(()),
        _ => Err(format!(
            "header \"recorder_ws_side\" is not client/server: {line}"
        )),
    }
}

/// Decodes one frame, checks its messages and payloads re-encode to the same
/// bytes, and cross-checks the informative `note` (op name, merged count).
fn check_frame(frame: Bytes, note: Option<&str>) -> Result<Counts, String> {
    let decoder =
        FrameDecoder::new(frame.clone(), usize::MAX).map_err(|e| format!("frame: {e:?}"))?;
    let merged = decoder.is_merged();
    let mut msgs = Vec::new();
    for (i, msg) in decoder.enumerate() {
        msgs.push(msg.map_err(|e| format!("message {i} does not decode: {e:?}"))?);
    }
    let mut counts = Counts {
        frames: 1,
        merged_frames: usize::from(merged),
        messages: msgs.len(),
        ..Counts::default()
    };

    if merged {
        // FrameBuilder sends a lone message unwrapped; Go never merges fewer
        // than two.
        if msgs.len() < 2 {
            return Err(format!("merged frame holds {} message(s)", msgs.len()));
        }
        let mut builder = FrameBuilder::new();
        for msg in &msgs {
            builder.push(msg);
        }
        let rebuilt = builder.finish().ok_or("FrameBuilder returned no frame")?;
        if rebuilt != frame {
            return Err(format!(
                "merged frame re-encodes differently:\n  got:   {}",
                hex::encode(&rebuilt)
            ));
        }
    } else {
        let [msg] = &msgs[..] else {
            return Err(format!("plain frame gave {} messages", msgs.len()));
        };
        let encoded = msg.to_bytes();
        if encoded != frame {
            return Err(format!(
                "message re-encodes differently ({msg:?}):\n  got:   {}",
                hex::encode(&encoded)
            ));
        }
        if msg.encoded_len() != frame.len() {
            return Err(format!(
                "encoded_len() = {}, frame has {} bytes",
                msg.encoded_len(),
                frame.len()
            ));
        }
    }

    for (i, msg) in msgs.iter().enumerate() {
        if check_payload(msg).map_err(|e| format!("message {i} ({msg:?}): {e}"))? {
            counts.payloads += 1;
        }
    }

    if let Some(note) = note {
        check_note(note, merged, &msgs)?;
    }
    Ok(counts)
}

/// Decodes a control payload by op and checks it re-encodes byte for byte.
/// Returns whether the message had such a payload.
fn check_payload(msg: &Message) -> Result<bool, String> {
    let payload = &msg.payload;
    let reencoded = match msg.op {
        Op::Connect => ConnectRequest::decode(payload).map(|p| p.to_bytes()),
        Op::ConnectResponse => ConnectResponse::decode(payload).map(|p| p.to_bytes()),
        Op::MuxConnectError => MuxConnectError::decode(payload).map(|p| p.to_bytes()),
        // Mux pings (mux id ≠ 0) carry no payload.
        Op::Ping if msg.mux_id == 0 => PingPayload::decode(payload).map(|p| p.to_bytes()),
        Op::Pong => PongPayload::decode(payload).map(|p| p.to_bytes()),
        _ => return Ok(false),
    }
    .map_err(|e| format!("{} payload does not decode: {e:?}", msg.op))?;
    if reencoded != payload {
        return Err(format!(
            "{} payload re-encodes differently:\n  want:  {}\n  got:   {}",
            msg.op,
            hex::encode(payload),
            hex::encode(&reencoded)
        ));
    }
    Ok(true)
}

/// The recorder's note starts with the op name; merged frames end with
/// `merged=N`.
fn check_note(note: &str, merged: bool, msgs: &[Message]) -> Result<(), String> {
    let op_name = note.split_whitespace().next().unwrap_or("");
    let decoded_name = if merged {
        Op::Merged.name()
    } else {
        msgs[0].op.name()
    };
    if op_name != decoded_name {
        return Err(format!(
            "note says {op_name:?}, decoded {decoded_name:?} (note: {note})"
        ));
    }
    let merged_count = note
        .split_whitespace()
        .find_map(|w| w.strip_prefix("merged="));
    if let Some(count) = merged_count
        && count.parse::<usize>().ok() != Some(msgs.len())
    {
        return Err(format!(
            "note says merged={count}, decoded {} messages",
            msgs.len()
        ));
    }
    Ok(())
}

fn check_dir(dir: &Path) -> Result<Counts, String> {
    let files = transcript_files(dir)?;
    if files.is_empty() {
        return Err(format!(
            "no *.jsonl or *.jsonl.gz transcripts in {}",
            dir.display()
        ));
    }
    let mut counts = Counts::default();
    let mut report = String::new();
    for file in &files {
        let c = check_file(file)?;
        let _ = writeln!(
            report,
            "  {}: {} frames ({} merged), {} messages, {} payloads",
            file.display(),
            c.frames,
            c.merged_frames,
            c.messages,
            c.payloads
        );
        counts.add(c);
    }
    print!("{report}");
    Ok(counts)
}

fn unwrap_or_panic<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn recorded_go_frames_decode_and_reencode_byte_identically() {
    let shared = shared_dir();
    assert!(
        shared.is_dir(),
        "transcript directory {} is missing",
        shared.display()
    );
    let counts = unwrap_or_panic(check_dir(&shared));
    println!(
        "shared transcripts: {} files, {} frames ({} merged), {} messages, {} control payloads",
        counts.files, counts.frames, counts.merged_frames, counts.messages, counts.payloads
    );
    assert!(
        counts.frames >= MIN_SHARED_FRAMES,
        "only {} frames checked in {}, expected at least {MIN_SHARED_FRAMES}",
        counts.frames,
        shared.display()
    );
    assert!(counts.merged_frames > 0, "no OpMerged frame was checked");
    assert!(
        counts.messages > counts.frames,
        "merged frames add messages"
    );
    // Every connection has a Connect and a ConnectResponse.
    assert!(
        counts.payloads >= 2 * counts.files,
        "only {} control payloads in {} files",
        counts.payloads,
        counts.files
    );
}

#[test]
fn extra_transcript_directories_from_env() {
    let Ok(dirs) = std::env::var("GRID_TRANSCRIPTS") else {
        println!("GRID_TRANSCRIPTS is not set; no extra transcripts");
        return;
    };
    let mut total = Counts::default();
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let counts = unwrap_or_panic(check_dir(Path::new(dir)));
        println!(
            "{dir}: {} files, {} frames ({} merged), {} messages, {} control payloads",
            counts.files, counts.frames, counts.merged_frames, counts.messages, counts.payloads
        );
        total.add(counts);
    }
    // check_dir already requires at least one frame per file and one file
    // per directory; this catches a variable holding only separators.
    assert!(
        total.frames > 0,
        "GRID_TRANSCRIPTS={dirs:?} names no directory with frames"
    );
}

/// A scratch directory for this test process, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!(
            "grid-proto-transcripts-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn gzipped_transcripts_are_read() {
    let plain = shared_dir().join("echo-parallel.jsonl");
    let text = fs::read(&plain).unwrap_or_else(|e| panic!("{}: {e}", plain.display()));
    let scratch = ScratchDir::new("gz");
    let gz = scratch.0.join("echo-parallel.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &text).unwrap();
    fs::write(&gz, enc.finish().unwrap()).unwrap();
    // Not a transcript: must be ignored.
    fs::write(scratch.0.join("README.md"), "not a transcript").unwrap();

    let from_gz = unwrap_or_panic(check_dir(&scratch.0));
    let from_plain = unwrap_or_panic(check_file(&plain));
    assert_eq!(from_gz, from_plain);
    assert!(from_gz.merged_frames > 0);
}

#[test]
fn the_checker_rejects_a_corrupted_frame() {
    let plain = shared_dir().join("echo.jsonl");
    let text = fs::read_to_string(&plain).unwrap_or_else(|e| panic!("{}: {e}", plain.display()));
    let scratch = ScratchDir::new("corrupt");

    // Flip one payload bit of the first CRC-protected frame (the request on
    // line 6): the CRC check must catch it.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = lines
        .iter()
        .position(|l| l.contains("\"Request "))
        .expect("echo.jsonl has a request");
    let mut record: Value = serde_json::from_str(&lines[line]).unwrap();
    let mut frame = hex::decode(record["hex"].as_str().unwrap()).unwrap();
    frame[12] ^= 0x01;
    record["hex"] = Value::String(hex::encode(&frame));
    lines[line] = record.to_string();
    let corrupt = scratch.0.join("corrupt.jsonl");
    fs::write(&corrupt, lines.join("\n")).unwrap();

    let err = check_file(&corrupt).unwrap_err();
    assert!(
        err.contains(&format!("corrupt.jsonl:{}:", line + 1)) && err.contains("CrcMismatch"),
        "error names neither line nor cause: {err}"
    );
    assert!(
        err.contains(&hex::encode(&frame)),
        "error lacks the hex: {err}"
    );

    // A directory without transcripts fails instead of passing vacuously.
    fs::remove_file(&corrupt).unwrap();
    let err = check_dir(&scratch.0).unwrap_err();
    assert!(err.contains("no *.jsonl"), "{err}");
    // So does a transcript with a header but no binary frame.
    fs::write(&corrupt, &lines[0]).unwrap();
    let err = check_file(&corrupt).unwrap_err();
    assert!(err.contains("no binary frames"), "{err}");
}

#[test]
fn a_non_canonical_frame_is_reported() {
    // C.7 AckMux with the MuxID written as u8 (0xcc 0x05) instead of a
    // fixint: it decodes, but does not re-encode to the same bytes, and the
    // checker must say so.
    let frame = hex::decode("97cc050000000d00c400").unwrap();
    let err = check_frame(Bytes::from(frame), None).unwrap_err();
    assert!(err.contains("re-encodes differently"), "{err}");
}
