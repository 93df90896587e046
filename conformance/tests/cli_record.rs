//! `grid-conformance record` writes transcripts that `replay` passes.

use std::process::Command;

#[test]
fn recorded_scenarios_replay_clean_on_every_target() {
    let exe = env!("CARGO_BIN_EXE_grid-conformance");
    let dir = std::env::temp_dir().join(format!("grid-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(exe)
        .args(["record", "--out"])
        .arg(&dir)
        .args([
            "--runtime",
            "smol",
            "--scenario",
            // A group among the names: the three typed scenarios.
            "echo,stream-echo,stream-cancel,typed-mss,typed",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "record failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("PASS ").count(), 7, "{stdout}");
    let replay = Command::new(exe)
        .arg("replay")
        .arg(dir.join("serve"))
        .arg(dir.join("call"))
        .args(["--target", "all"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "replay failed:\n{text}");
    // Two transcripts (one per side) × three targets × two roles.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("PASS ")).count(),
        12,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
