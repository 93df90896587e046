//! Replays every recorded Go transcript against the sans-IO core, in both
//! roles, and shows the comparison catches what it should: copies of
//! transcripts with one thing changed must fail, at the right line, saying
//! what differs.
//!
//! Sources: the recordings in `conformance/transcripts` (the test fails if
//! they are missing) and the directories in `GRID_TRANSCRIPTS`
//! (colon-separated).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use conformance::frame::{flatten, pack};
use conformance::transcript::{RecordKind, WsKind};
use conformance::{
    Failure, Outcome, ReplayOptions, Role, Target, Transcript, env_dirs, load_path, replay,
};
use grid_proto::{Flags, Message, Op};

/// How many transcripts ship with the spec (a lower bound).
const SHARED_TRANSCRIPTS: usize = 14;

fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts")
}

fn shared() -> Vec<Transcript> {
    let dir = shared_dir();
    assert!(
        dir.is_dir(),
        "the shared transcripts are missing: expected a directory at {}",
        dir.display()
    );
    load_path(&dir).unwrap_or_else(|e| panic!("cannot load the shared transcripts: {e}"))
}

fn shared_one(name: &str) -> Transcript {
    let path = shared_dir().join(format!("{name}.jsonl"));
    Transcript::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Replays against the core; `Err` carries the failure.
fn run(t: &Transcript, role: Role, options: &ReplayOptions) -> Result<(), Failure> {
    match replay(t, Target::Core, role, options) {
        Outcome::Pass(stats) => {
            assert!(stats.messages_matched > 0, "{}: nothing compared", t.name());
            Ok(())
        }
        Outcome::Skip(why) => panic!("the core was skipped: {why}"),
        Outcome::Fail(f) => Err(f),
    }
}

/// Replays every transcript in both roles; panics listing every failure.
fn replay_all(transcripts: &[Transcript], options: &ReplayOptions) {
    let mut failures = Vec::new();
    for t in transcripts {
        for role in Role::BOTH {
            if let Err(f) = run(t, role, options) {
                failures.push(format!("FAIL {} core {role}: {f}", t.name()));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_shared_transcript_replays_against_the_core_in_both_roles() {
    let transcripts = shared();
    assert!(
        transcripts.len() >= SHARED_TRANSCRIPTS,
        "found {} shared transcripts, expected at least {SHARED_TRANSCRIPTS}",
        transcripts.len()
    );
    replay_all(&transcripts, &ReplayOptions::default());
}

#[test]
fn transcripts_from_grid_transcripts_replay_against_the_core() {
    let mut transcripts = Vec::new();
    for dir in env_dirs() {
        transcripts.extend(load_path(&dir).unwrap_or_else(|e| panic!("GRID_TRANSCRIPTS: {e}")));
    }
    replay_all(&transcripts, &ReplayOptions::default());
}

#[test]
fn the_subject_answers_whatever_mux_ids_its_caller_picks() {
    let options = ReplayOptions {
        peer_mux_offset: 1_000_000,
        ..ReplayOptions::default()
    };
    replay_all(&shared(), &options);
}

#[test]
fn gzipped_transcripts_load_from_a_directory() {
    let dir = std::env::temp_dir().join(format!("grid-conformance-gz-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let text = fs::read(shared_dir().join("stream-echo.jsonl")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&text).unwrap();
    fs::write(dir.join("stream-echo.jsonl.gz"), gz.finish().unwrap()).unwrap();
    fs::write(dir.join("ignored.txt"), b"not a transcript").unwrap();
    let loaded = load_path(&dir);
    fs::remove_dir_all(&dir).unwrap();
    let loaded = loaded.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name(), "stream-echo");
    replay_all(&loaded, &ReplayOptions::default());
}

// ---- negative tests: a changed copy must fail, where and how it should ----

/// A copy of `t` with the messages of the frame at `line` edited (the frame
/// is re-encoded, CRCs recomputed).
fn edit(t: &Transcript, line: usize, f: impl FnOnce(&mut Vec<Message>)) -> Transcript {
    let mut t = t.clone();
    let record = t
        .records
        .iter_mut()
        .find(|r| r.line == line)
        .unwrap_or_else(|| panic!("no record at line {line}"));
    let RecordKind::Ws {
        kind: WsKind::Binary,
        payload,
        ..
    } = &mut record.kind
    else {
        panic!("line {line} is not a binary frame");
    };
    let mut messages = flatten(payload).unwrap().messages;
    f(&mut messages);
    *payload = pack(&messages).expect("at least one message");
    t
}

fn expect_failure(t: &Transcript, role: Role, line: usize, needles: &[&str]) -> Failure {
    let f = run(t, role, &ReplayOptions::default())
        .expect_err("the changed transcript must not replay cleanly");
    let text = f.to_string();
    assert_eq!(f.line, Some(line), "wrong line in:\n{text}");
    assert!(
        text.starts_with(&format!("{}.jsonl:{line}: ", t.name())),
        "no file:line in:\n{text}"
    );
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    f
}

#[test]
fn a_corrupted_payload_byte_is_caught() {
    // The replay plays the recorded application (its answers become the
    // subject's), so what is checked is that the subject puts them on the
    // wire unchanged: one that flips a byte of its Response fails at
    // echo.jsonl:8, the recorded Response "Hello Grid World!".
    let f = run_tampered(&shared_one("echo"), Role::Server, |m| {
        if m.op == Op::Response {
            let mut p = m.payload.to_vec();
            p[0] ^= 0x20;
            m.payload = Bytes::from(p);
        }
    })
    .unwrap_err();
    let text = f.to_string();
    assert_eq!(f.line, Some(8), "{text}");
    assert!(text.starts_with("echo.jsonl:8: "), "{text}");
    for needle in [
        "Response on the peer's call on recorded mux 1",
        r#"payload differs: expected "Hello Grid World!", got "hello Grid World!""#,
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(f.expected.unwrap().contains("op: Response"));
    assert!(f.got.unwrap().contains("op: Response"));
}

#[test]
fn a_flipped_flag_is_caught() {
    // stream-count.jsonl:19 is the callee's final EOF + DisconnectClientMux:
    // a recording whose cleanup has EOF set is not what the subject sends.
    let t = edit(&shared_one("stream-count"), 19, |m| {
        assert_eq!(m[1].op, Op::DisconnectClientMux);
        m[1].flags |= Flags::EOF;
    });
    expect_failure(
        &t,
        Role::Server,
        19,
        &[
            "(message 2 of 2 in the frame)",
            "flags differs: expected [CRC|EOF], got [CRC]",
        ],
    );
    // The caller's own flags too: the recorder's Request without its CRC.
    let t = edit(&shared_one("echo"), 7, |m| {
        m[0].flags = m[0].flags.without(Flags::CRC);
    });
    expect_failure(
        &t,
        Role::Client,
        7,
        &["flags differs: expected [EOF], got [CRC|EOF]"],
    );
}

#[test]
fn a_changed_seq_is_caught() {
    // stream-echo.jsonl:11 is the caller's UnblockSrvMux seq 2.
    let t = edit(&shared_one("stream-echo"), 11, |m| {
        assert_eq!(m[0].op, Op::UnblockSrvMux);
        m[0].seq = 3;
    });
    expect_failure(
        &t,
        Role::Client,
        11,
        &["UnblockSrvMux", "seq differs: expected 3, got 2"],
    );
}

#[test]
fn order_within_a_mux_is_checked_but_not_across_muxes() {
    // echo-parallel.jsonl:9 holds responses on five muxes: any order is fine.
    let t = edit(&shared_one("echo-parallel"), 9, |m| m.reverse());
    run(&t, Role::Server, &ReplayOptions::default()).unwrap();
    // stream-echo.jsonl:10 holds the callee's UnblockClMux seq 1 then its
    // MuxServerMsg seq 2. Go may send them the other way round, numbered in
    // that order: that replays, in both roles.
    let t = edit(&shared_one("stream-echo"), 10, |m| {
        m.reverse();
        m[0].seq = 1;
        m[1].seq = 2;
    });
    for role in Role::BOTH {
        run(&t, role, &ReplayOptions::default()).unwrap();
    }
    // Swapped but numbered as before: no peer sends that.
    let t = edit(&shared_one("stream-echo"), 10, |m| m.reverse());
    expect_failure(
        &t,
        Role::Server,
        10,
        &[
            "MuxServerMsg on the peer's call on recorded mux 1 (message 1 of 2 in the frame)",
            "seq differs: expected 2, got 1",
        ],
    );
    // Data never passes data: a callee that sends its third and fourth
    // responses the other way round (numbered in send order, the same
    // bytes as swapped payloads) is caught at the third.
    let f = run_tampered(&shared_one("stream-count"), Role::Server, |m| {
        if m.op == Op::MuxServerMsg && m.payload.len() >= 4 {
            let mut p = m.payload.to_vec();
            p[3] = match p[3] {
                2 => 3,
                3 => 2,
                other => other,
            };
            m.payload = Bytes::from(p);
        }
    })
    .unwrap_err();
    assert_eq!(f.line, Some(13), "{f}");
    assert!(f.what.contains("payload differs"), "{f}");
}

#[test]
fn go_shaped_interleavings_replay_in_both_roles() {
    let mut swapped = 0;
    for t in shared() {
        let (t, n) = conformance::interleave::swap_credit_and_data(&t);
        swapped += n;
        if n > 0 {
            replay_all(std::slice::from_ref(&t), &ReplayOptions::default());
        }
    }
    assert!(swapped >= 10, "only {swapped} credit/data pairs to swap");
}

#[test]
fn a_message_the_subject_does_not_send_is_caught() {
    // The recording claims the callee sent a second DisconnectClientMux.
    let t = edit(&shared_one("stream-err"), 9, |m| {
        let extra = m[1].clone();
        m.push(extra);
    });
    expect_failure(
        &t,
        Role::Server,
        9,
        &[
            "the subject did not send this message (message 3 of 3 in the frame)",
            "by the end of the transcript",
        ],
    );
}

#[test]
fn a_message_the_recording_does_not_have_is_caught() {
    // Without the recorded cleanup after the final EOF, the subject's
    // DisconnectClientMux is one too many.
    let t = edit(&shared_one("stream-count"), 19, |m| {
        assert_eq!(m.pop().map(|m| m.op), Some(Op::DisconnectClientMux));
    });
    let f = run(&t, Role::Server, &ReplayOptions::default()).unwrap_err();
    let text = f.to_string();
    assert!(
        text.contains(
            "the subject sent a message the recording does not have: \
             nothing more on the peer's call on recorded mux 1"
        ),
        "{text}"
    );
    assert!(f.got.unwrap().contains("op: DisconnectClientMux"));
}

#[test]
fn a_changed_control_payload_field_is_caught() {
    // idle-ping.jsonl:8 is the recorder's Pong; claim it said "not found".
    let t = edit(&shared_one("idle-ping"), 8, |m| {
        let mut pong = grid_proto::PongPayload::decode(&m[0].payload).unwrap();
        pong.not_found = true;
        m[0].payload = pong.to_bytes();
    });
    expect_failure(
        &t,
        Role::Client,
        8,
        &["payload.nf differs: expected true, got false"],
    );
    // typed-mss.jsonl:8: a map value the subject changes is caught (map
    // order may vary: see `compare`'s tests).
    let f = run_tampered(&shared_one("typed-mss"), Role::Server, |m| {
        if m.op == Op::Response {
            let mut p = m.payload.to_vec();
            let at = p.windows(2).position(|w| w == b"ok").unwrap();
            p[at] = b'O';
            m.payload = Bytes::from(p);
        }
    })
    .unwrap_err();
    assert_eq!(f.line, Some(8), "{f}");
    assert!(f.what.contains("payload differs"), "{f}");
}

#[test]
fn a_corrupted_recorded_frame_is_reported_as_such() {
    let mut t = shared_one("echo");
    let record = t.records.iter_mut().find(|r| r.line == 8).unwrap();
    if let RecordKind::Ws { payload, .. } = &mut record.kind {
        let mut p = payload.to_vec();
        p[10] ^= 1; // inside the payload: the recorded CRC no longer matches
        *payload = Bytes::from(p);
    }
    let f = run(&t, Role::Server, &ReplayOptions::default()).unwrap_err();
    assert_eq!(f.line, Some(8));
    assert!(f.what.contains("recorded frame does not decode"), "{f}");
}

/// The core, with every message it sends passed through `tamper` first: a
/// stand-in for a misbehaving implementation.
struct Tampered {
    inner: conformance::CoreSubject,
    tamper: fn(&mut Message),
    /// Keep the mux ids of new calls to itself, as a driver's handle may.
    hide_mux_ids: bool,
}

impl conformance::Subject for Tampered {
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.inner.poll_timeout()
    }
    fn handle_timeout(&mut self, now: std::time::Instant) {
        self.inner.handle_timeout(now);
    }
    fn transport_opened(
        &mut self,
        now: std::time::Instant,
        wall: Option<grid_proto::Timestamp>,
    ) -> Result<(), String> {
        self.inner.transport_opened(now, wall)
    }
    fn transport_closed(&mut self, now: std::time::Instant) {
        self.inner.transport_closed(now);
    }
    fn receive(&mut self, now: std::time::Instant, frame: Bytes) -> Result<(), String> {
        self.inner.receive(now, frame)
    }
    fn call(
        &mut self,
        now: std::time::Instant,
        call: &conformance::AppCall,
    ) -> Result<Option<u64>, String> {
        let mux = self.inner.call(now, call)?;
        Ok(mux.filter(|_| !self.hide_mux_ids))
    }
    fn poll_sent(&mut self) -> Option<Bytes> {
        let frame = self.inner.poll_sent()?;
        let mut messages = flatten(&frame).unwrap().messages;
        messages.iter_mut().for_each(self.tamper);
        pack(&messages)
    }
}

fn run_tampered(t: &Transcript, role: Role, tamper: fn(&mut Message)) -> Result<(), Failure> {
    run_wrapped(t, role, tamper, false)
}

fn run_wrapped(
    t: &Transcript,
    role: Role,
    tamper: fn(&mut Message),
    hide_mux_ids: bool,
) -> Result<(), Failure> {
    let start = std::time::Instant::now();
    let setup = conformance::replay::setup(t, role, start)?;
    let mut subject = Tampered {
        inner: conformance::CoreSubject::new(&setup),
        tamper,
        hide_mux_ids,
    };
    let options = ReplayOptions::default();
    conformance::replay_subject(t, role, &options, &setup, &mut subject).map(|_| ())
}

#[test]
fn a_subject_that_misbehaves_is_caught() {
    // Untouched, the wrapper passes: it is the core.
    run_tampered(&shared_one("stream-echo"), Role::Server, |_| {}).unwrap();

    // A pong whose time is not its ping's (times are otherwise form-only).
    let f = run_tampered(&shared_one("idle-ping"), Role::Client, |m| {
        if m.op == Op::Pong {
            let mut pong = grid_proto::PongPayload::decode(&m.payload).unwrap();
            pong.t = pong.t + std::time::Duration::from_secs(1);
            m.payload = pong.to_bytes();
        }
    })
    .unwrap_err();
    assert_eq!(f.line, Some(8));
    assert!(f.what.contains("payload.t differs"), "{f}");

    // A stream message without the CRC the recording has.
    let f = run_tampered(&shared_one("stream-count"), Role::Server, |m| {
        if m.op == Op::MuxServerMsg && m.seq == 3 {
            m.flags = m.flags.without(Flags::CRC);
        }
    })
    .unwrap_err();
    assert_eq!(f.line, Some(13));
    assert!(f.what.contains("expected [CRC], got []"), "{f}");

    // A handshake answer with a field Go leaves at zero.
    let f = run_tampered(&shared_one("echo"), Role::Server, |m| {
        if m.op == Op::ConnectResponse {
            m.deadline_ms = 1;
        }
    })
    .unwrap_err();
    assert!(
        f.what.contains("deadline_ms differs: expected 0, got 1"),
        "{f}"
    );
}

#[test]
fn mux_ids_of_new_calls_are_learned_from_the_wire_if_not_reported() {
    for t in shared() {
        run_wrapped(&t, Role::Client, |_| {}, true)
            .unwrap_or_else(|f| panic!("FAIL {} core client: {f}", t.name()));
    }
}

#[test]
fn hosts_that_contradict_the_recorded_sides_are_reported() {
    let mut t = shared_one("echo");
    std::mem::swap(&mut t.header.recorder_host, &mut t.header.peer_host);
    for role in Role::BOTH {
        let f = run(&t, role, &ReplayOptions::default()).unwrap_err();
        assert_eq!(f.line, Some(1));
        assert!(f.what.contains("cannot play the WebSocket"), "{f}");
    }
}
