//! The benchmark tool runs end to end. Only that it works, and the shape of
//! what it prints, are checked, never a figure: benchmarks do not pass or
//! fail.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

#[test]
fn grid_bench_quick_single_tokio_runs_in_two_processes() {
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
    assert_eq!(rows[0].len(), 7, "{stdout}");
    assert_eq!(&rows[0][..3], ["single", "tokio", "1"], "{stdout}");
    assert!(rows[0][3].parse::<f64>().is_ok_and(|v| v > 0.0), "{stdout}");
    assert_eq!(rows[0][6], "two-process", "{stdout}");
}

/// Kills the serving node when the test ends, however it ends.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two free loopback host names: (server, client), such that the client
/// dials (it connects at once, whatever the server's redial spacing).
fn host_pair() -> (String, String) {
    let port = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let a = format!("http://127.0.0.1:{}", port());
    let b = format!("http://127.0.0.1:{}", port());
    if grid_proto::should_dial(&b, &a) {
        (a, b)
    } else {
        (b, a)
    }
}

/// `grid-conformance serve` on `host`, once it listens.
fn serve(host: &str, peer: &str) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grid-conformance"))
        .args([
            "serve",
            "--local",
            host,
            "--hosts",
            &format!("{host},{peer}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grid-conformance serve starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let serving = Serving(child);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening") => break,
            Some(Ok(_)) => {}
            _ => panic!("grid-conformance serve ended before listening"),
        }
    }
    // Keep draining what it logs, so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    serving
}

/// Runs `grid-bench --remote` and checks its machine-readable report:
/// one progress line per second, then the totals, every call resolved.
fn remote_run(server: &str, client: &str, extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_grid-bench"))
        .args(["--remote", server, "--local", client])
        .args([
            "--duration",
            "2",
            "--concurrency",
            "4",
            "--machine-readable",
        ])
        .args(extra)
        .output()
        .expect("grid-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let mut ok_by_second = 0;
    for (i, line) in lines[..2].iter().enumerate() {
        assert_eq!(line.len(), 6, "{stdout}");
        assert_eq!(line[0], "progress", "{stdout}");
        assert_eq!(line[1], (i + 1).to_string(), "{stdout}");
        ok_by_second += line[2].parse::<u64>().expect("ok count");
        line[3].parse::<u64>().expect("error count");
        for q in &line[4..] {
            assert!(*q == "-" || q.parse::<f64>().is_ok(), "{stdout}");
        }
    }
    let total = &lines[2];
    assert_eq!(total.len(), 4, "{stdout}");
    assert_eq!(total[0], "total", "{stdout}");
    let ok: u64 = total[1].parse().expect("total ok");
    let errors: u64 = total[2].parse().expect("total errors");
    assert!(ok > 0 && ok >= ok_by_second, "{stdout}\n{stderr}");
    assert_eq!(
        errors, 0,
        "a healthy pair has no errors:\n{stdout}\n{stderr}"
    );
    assert_eq!(total[3], "0", "every call resolves:\n{stdout}\n{stderr}");
}

#[test]
fn remote_mode_against_a_serving_node_resolves_every_call() {
    let (server, client) = host_pair();
    let _serving = serve(&server, &client);
    remote_run(&server, &client, &["--workload", "single"]);
    remote_run(
        &server,
        &client,
        &["--workload", "stream", "--runtime", "smol"],
    );
}
