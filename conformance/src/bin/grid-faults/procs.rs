//! The processes of a fault run: the serving node (`grid-conformance
//! serve`) and the load (`grid-bench --remote`), with what they print
//! stamped with the wall-clock time it arrived, and the signals the suite
//! sends them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: the clock the suite and the load's event
/// lines share.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Lines a process printed, each with when it was read.
pub(crate) type Lines = Arc<Mutex<Vec<(f64, String)>>>;

fn collect(pipe: impl std::io::Read + Send + 'static, into: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((unix_now(), line));
        }
    });
}

/// A child process, killed (after a SIGCONT, should it be stopped) when
/// dropped.
pub(crate) struct Proc {
    child: Child,
    pub(crate) stdout: Lines,
    pub(crate) stderr: Lines,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Result<Proc, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let (stdout, stderr) = (Lines::default(), Lines::default());
        collect(child.stdout.take().expect("piped"), Arc::clone(&stdout));
        collect(child.stderr.take().expect("piped"), Arc::clone(&stderr));
        Ok(Proc {
            child,
            stdout,
            stderr,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) with kill(1).
    pub(crate) fn signal(&self, signal: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("kill -{signal}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {}: {status}", self.pid()))
        }
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until it exits, at most `limit`: its exit code (`None` if it
    /// was killed by a signal), or `Err` if it is still running.
    pub(crate) fn wait(&mut self, limit: Duration) -> Result<Option<i32>, ()> {
        let until = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status.code()),
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return Err(()),
            }
        }
    }

    /// Waits until a line of stderr contains `text`, at most `limit`.
    pub(crate) fn wait_stderr(&self, text: &str, limit: Duration) -> Option<(f64, String)> {
        let until = Instant::now() + limit;
        loop {
            let found = self
                .stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(_, l)| l.contains(text))
                .cloned();
            if found.is_some() || Instant::now() >= until {
                return found;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Resident memory (`VmRSS`) in bytes; 0 when unreadable.
    pub(crate) fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Everything it printed to stderr, for a failure report.
    pub(crate) fn stderr_text(&self) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped process would not die until continued.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.signal("CONT");
        }
        self.kill();
    }
}

/// Where the suite finds its sibling binaries (the directory it runs from).
pub(crate) fn bin_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no executable path: {e}"))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "the executable has no directory".into())
}

/// The connection timers both nodes run with (Go: 10 s and 20 s): short,
/// so that a silent peer is found out in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timers {
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
}

impl Timers {
    fn args(&self) -> [String; 4] {
        [
            "--ping-interval".into(),
            self.ping_interval.as_secs_f64().to_string(),
            "--pong-timeout".into(),
            self.pong_timeout.as_secs_f64().to_string(),
        ]
    }
}

/// `grid-conformance serve` for `local` among `hosts`, once it listens.
pub(crate) fn serve(
    bin: &Path,
    runtime: &str,
    local: &str,
    peer: &str,
    timers: Timers,
) -> Result<Proc, String> {
    let mut cmd = Command::new(bin.join("grid-conformance"));
    cmd.args(["serve", "--local", local, "--hosts"])
        .arg(format!("{local},{peer}"))
        .args(["--runtime", runtime])
        .args(timers.args())
        .env("SMOL_THREADS", "2");
    let p = Proc::spawn(cmd)?;
    if p.wait_stderr("listening", Duration::from_secs(10))
        .is_none()
    {
        return Err(format!(
            "grid-conformance serve did not listen within 10 s:\n{}",
            p.stderr_text()
        ));
    }
    Ok(p)
}

/// What the load runs.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) runtime: String,
    pub(crate) workload: String,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) deadline: Duration,
    pub(crate) timers: Timers,
}

/// Starts `grid-bench --remote` as node `local` (listening on `listen` if
/// given) against `remote`.
pub(crate) fn spawn_load(
    bin: &Path,
    l: &Load,
    remote: &str,
    local: &str,
    listen: Option<&str>,
) -> Result<Proc, String> {
    let mut cmd = Command::new(bin.join("grid-bench"));
    cmd.args(["--remote", remote, "--local", local])
        .args(["--runtime", &l.runtime, "--workload", &l.workload])
        .args(["--concurrency", &l.concurrency.to_string()])
        .args(["--duration", &l.duration.as_secs_f64().to_string()])
        .args(["--deadline", &l.deadline.as_secs_f64().to_string()])
        .args(l.timers.args())
        .arg("--machine-readable");
    if let Some(listen) = listen {
        cmd.args(["--listen", listen]);
    }
    Proc::spawn(cmd)
}

/// Waits until the load's clock starts (it first waits, at most 10 s, for
/// its connection); the Unix time it started.
pub(crate) fn load_started(p: &Proc) -> Result<f64, String> {
    let Some((_, line)) = p.wait_stderr("started at unix", Duration::from_secs(20)) else {
        return Err(format!(
            "grid-bench --remote did not start within 20 s:\n{}",
            p.stderr_text()
        ));
    };
    line.rsplit(' ')
        .next()
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| format!("no start time in {line:?}"))
}
