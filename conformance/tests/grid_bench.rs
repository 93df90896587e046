//! The benchmark tool runs end to end (one short measurement). Only that it
//! works is checked, never a figure: benchmarks do not pass or fail.

use std::process::Command;

#[test]
fn grid_bench_quick_single_tokio_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_grid-bench"))
        .args([
            "--quick",
            "--subject",
            "tokio",
            "--workload",
            "single",
            "--concurrency",
            "1",
            "--duration",
            "0.5",
            "--machine-readable",
        ])
        .output()
        .expect("grid-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert_eq!(rows[0].len(), 6, "{stdout}");
    assert_eq!(&rows[0][..3], ["single", "tokio", "1"], "{stdout}");
    assert!(rows[0][3].parse::<f64>().is_ok(), "{stdout}");
}
