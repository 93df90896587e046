//! The recorder (`Options::recorder`): two Rust nodes, one on tokio and one
//! on smol, run the transcripts' scenarios against each other with
//! recording on; each node's recording must then replay, with
//! `grid-conformance replay`, against the core and both drivers in both
//! roles, as the Go transcripts do.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use conformance::node::{Node, RuntimeKind};
use conformance::transcript::{Dir, RecordKind, WsSide};
use conformance::{Transcript, load_path, scenarios};
use grid_proto::driver::{Options, Recorder};
use grid_proto::{Flags, FrameDecoder, HandlerId, Message, Op, should_dial};

const TOKEN: &str = "recorder-test";

fn options(dir: &Path) -> Options {
    let mut o = Options {
        recorder: Some(Recorder::to_dir(dir)),
        ..Options::default()
    };
    o.auth_token = Arc::new(|_| TOKEN.to_owned());
    o.validate_token = Arc::new(|t| {
        if t == TOKEN {
            Ok(())
        } else {
            Err("bad token".into())
        }
    });
    o
}

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    (l, host)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("grid-recorder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_recorded_exchange_between_two_rust_nodes_replays() {
    let root = scratch("exchange");
    let (caller_dir, callee_dir) = (root.join("caller"), root.join("callee"));
    let (l_caller, caller) = listener();
    let (l_callee, callee) = listener();
    let hosts = [caller.clone(), callee.clone()];
    let callee_node = Node::start(
        RuntimeKind::Smol,
        &callee,
        &hosts,
        options(&callee_dir),
        Some(l_callee),
    )
    .unwrap();
    let caller_node = Node::start(
        RuntimeKind::Tokio,
        &caller,
        &hosts,
        options(&caller_dir),
        Some(l_caller),
    )
    .unwrap();
    let conn = caller_node.connection(&callee).unwrap();
    caller_node
        .block_on(conn.wait_for_connect(std::time::Duration::from_secs(10)))
        .unwrap();
    // Every scenario but idle-ping, which only waits 11 s (CI records it).
    for name in scenarios::known().filter(|n| *n != "idle-ping") {
        if let Err(why) = caller_node.block_on(scenarios::run(name, &conn)) {
            panic!("FAIL {name}: {why}");
        }
    }
    caller_node.shutdown();
    callee_node.shutdown();

    // One transcript per node, of the one connection, with mirrored sides.
    let caller_t = only(&caller_dir);
    let callee_t = only(&callee_dir);
    let caller_dials = should_dial(&caller, &callee);
    let side = |dials| {
        if dials {
            WsSide::Client
        } else {
            WsSide::Server
        }
    };
    assert_eq!(caller_t.header.recorder_ws_side, side(caller_dials));
    assert_eq!(callee_t.header.recorder_ws_side, side(!caller_dials));
    assert_eq!(
        (
            caller_t.header.recorder_host.as_str(),
            caller_t.header.peer_host.as_str()
        ),
        (caller.as_str(), callee.as_str())
    );
    assert_eq!(caller_t.header.token, TOKEN);
    assert_eq!(callee_t.header.token, TOKEN);
    let dialer = if caller_dials { &caller_t } else { &callee_t };
    assert!(
        matches!(&dialer.records[0].kind, RecordKind::Http { dir: Dir::Out, text } if text.starts_with("GET /minio/grid/v1 ")),
        "the dialer's first record is its upgrade request: {:?}",
        dialer.records[0]
    );
    for t in [&caller_t, &callee_t] {
        let frames = t
            .records
            .iter()
            .filter(|r| matches!(r.kind, RecordKind::Ws { .. }))
            .count();
        assert!(frames > 30, "{}: only {frames} frames", t.name());
    }

    // Go's NoPayload answer: present and empty (FlagPayloadIsZero), as in
    // typed.jsonl; the failing call's answer is the error text.
    let answers = responses_to(&callee_t, HandlerId::WRITE_ALL);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers[0]
            .flags
            .contains(Flags::EOF | Flags::PAYLOAD_IS_ZERO),
        "{:?}",
        answers[0]
    );
    assert!(!answers[0].flags.contains(Flags::PAYLOAD_IS_ERR));
    assert!(answers[0].payload.is_empty());
    assert!(answers[1].flags.contains(Flags::PAYLOAD_IS_ERR));
    assert_eq!(answers[1].payload, "refpeer: missing k");

    // Each replays, with the CLI, against every target in both roles.
    let out = Command::new(env!("CARGO_BIN_EXE_grid-conformance"))
        .args(["replay", "--target", "all"])
        .arg(&caller_dir)
        .arg(&callee_dir)
        .env_remove("GRID_TRANSCRIPTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("PASS ")).count(),
        12,
        "{stdout}"
    );
}

/// The responses the recorder of `t` sent to requests for `handler`, in order.
fn responses_to(t: &Transcript, handler: HandlerId) -> Vec<Message> {
    let messages = |want: Dir| {
        t.records
            .iter()
            .filter_map(move |r| match &r.kind {
                RecordKind::Ws { dir, payload, .. } if *dir == want => Some(payload.clone()),
                _ => None,
            })
            .flat_map(|frame| FrameDecoder::new(frame, usize::MAX).unwrap())
            .map(Result::unwrap)
    };
    let muxes: Vec<u64> = messages(Dir::In)
        .filter(|m| m.op == Op::Request && m.handler == handler)
        .map(|m| m.mux_id)
        .collect();
    messages(Dir::Out)
        .filter(|m| m.op == Op::Response && muxes.contains(&m.mux_id))
        .collect()
}

fn only(dir: &Path) -> Transcript {
    let mut all = load_path(dir).unwrap();
    assert_eq!(all.len(), 1, "one transcript in {}", dir.display());
    all.remove(0)
}
