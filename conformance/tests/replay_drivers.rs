//! Replays every recorded Go transcript against the tokio and smol drivers,
//! in both roles: a real manager with the reference handlers on one end of
//! a loopback TCP connection, the recording played by a plain WebSocket
//! endpoint on the other. A changed copy of a transcript must fail, where
//! and how it should, against a driver too.
//!
//! Sources: the recordings in `conformance/transcripts` (the test fails if
//! they are missing) and the directories in `GRID_TRANSCRIPTS`.

use std::path::{Path, PathBuf};

use conformance::frame::{flatten, pack};
use conformance::transcript::{RecordKind, WsKind};
use conformance::{
    Failure, Outcome, ReplayOptions, Role, Target, Transcript, env_dirs, load_path, replay,
};

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
    let all = load_path(&dir).unwrap_or_else(|e| panic!("cannot load the shared transcripts: {e}"));
    assert!(all.len() >= SHARED_TRANSCRIPTS, "found {}", all.len());
    all
}

fn shared_one(name: &str) -> Transcript {
    Transcript::load(&shared_dir().join(format!("{name}.jsonl"))).unwrap_or_else(|e| panic!("{e}"))
}

fn run(t: &Transcript, target: Target, role: Role) -> Result<(), Failure> {
    match replay(t, target, role, &ReplayOptions::default()) {
        Outcome::Pass(stats) => {
            assert!(stats.messages_matched > 0, "{}: nothing compared", t.name());
            Ok(())
        }
        Outcome::Skip(why) => panic!("{} {target} {role} was skipped: {why}", t.name()),
        Outcome::Fail(f) => Err(f),
    }
}

/// Replays every transcript in both roles; panics listing every failure.
fn replay_all(transcripts: &[Transcript], target: Target) {
    let mut failures = Vec::new();
    for t in transcripts {
        for role in Role::BOTH {
            if let Err(f) = run(t, target, role) {
                failures.push(format!("FAIL {} {target} {role}: {f}", t.name()));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_shared_transcript_replays_against_tokio_in_both_roles() {
    replay_all(&shared(), Target::Tokio);
}

#[test]
fn every_shared_transcript_replays_against_smol_in_both_roles() {
    replay_all(&shared(), Target::Smol);
}

#[test]
fn transcripts_from_grid_transcripts_replay_against_the_drivers() {
    let mut transcripts = Vec::new();
    for dir in env_dirs() {
        transcripts.extend(load_path(&dir).unwrap_or_else(|e| panic!("GRID_TRANSCRIPTS: {e}")));
    }
    for target in [Target::Tokio, Target::Smol] {
        replay_all(&transcripts, target);
    }
}

#[test]
fn go_shaped_interleavings_replay_against_the_drivers() {
    // Credit and data of one sender and mux swapped, as Go's timing may
    // send them (see `conformance::interleave`).
    let reordered: Vec<Transcript> = shared()
        .iter()
        .map(conformance::interleave::swap_credit_and_data)
        .filter(|(_, swapped)| *swapped > 0)
        .map(|(t, _)| t)
        .collect();
    assert!(reordered.len() >= 3, "only {} reordered", reordered.len());
    for target in [Target::Tokio, Target::Smol] {
        replay_all(&reordered, target);
    }
}

/// A copy of `t` with the messages of the frame at `line` edited.
fn edit(t: &Transcript, line: usize, f: impl FnOnce(&mut Vec<grid_proto::Message>)) -> Transcript {
    let mut t = t.clone();
    let record = t.records.iter_mut().find(|r| r.line == line).unwrap();
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
    *payload = pack(&messages).unwrap();
    t
}

#[test]
fn a_driver_sending_other_than_recorded_is_caught() {
    // The recorded callee's cleanup after its final EOF claims an EOF flag:
    // the driver's own DisconnectClientMux has none. (Answers are the
    // recorded application's: a changed payload would be sent as changed.)
    let t = edit(&shared_one("stream-count"), 19, |m| {
        assert_eq!(m[1].op, grid_proto::Op::DisconnectClientMux);
        m[1].flags |= grid_proto::Flags::EOF;
    });
    for target in [Target::Tokio, Target::Smol] {
        let f = run(&t, target, Role::Server).expect_err("the changed transcript must fail");
        assert_eq!(f.line, Some(19), "{f}");
        assert!(
            f.what
                .contains("flags differs: expected [CRC|EOF], got [CRC]"),
            "{f}"
        );
    }
}

#[test]
fn a_driver_missing_a_recorded_message_is_caught_in_bounded_time() {
    // A second response the driver never sends: the replay waits at most
    // `wait` for it, then says which one is missing.
    let t = edit(&shared_one("echo"), 8, |m| {
        let mut extra = m[0].clone();
        extra.mux_id = 99;
        m.push(extra);
    });
    let options = ReplayOptions {
        wait: std::time::Duration::from_millis(300),
        ..ReplayOptions::default()
    };
    let started = std::time::Instant::now();
    let Outcome::Fail(f) = replay(&t, Target::Tokio, Role::Server, &options) else {
        panic!("the changed transcript must fail");
    };
    assert_eq!(f.line, Some(8), "{f}");
    assert!(f.what.contains("did not send this message"), "{f}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn a_driver_may_ping_more_often_than_recorded_with_a_shortened_interval() {
    // idle-ping with a 30 ms interval: the driver pings many times while
    // the replay runs; the recorded ping is compared, the others are not.
    let options = ReplayOptions {
        ping_interval: std::time::Duration::from_millis(30),
        settle: std::time::Duration::from_millis(200),
        ..ReplayOptions::default()
    };
    let t = shared_one("idle-ping");
    for role in Role::BOTH {
        match replay(&t, Target::Smol, role, &options) {
            Outcome::Pass(_) => {}
            other => panic!("idle-ping smol {role}: {other:?}"),
        }
    }
}
