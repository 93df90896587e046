//! What the benchmark reads from Linux's /proc: memory, CPU time, load,
//! of this process and of the server process of a two-process measurement.

use std::fs;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server process of the running measurement (0: none). One
/// measurement runs at a time in a process, so one slot does.
static SERVER_PID: AtomicU32 = AtomicU32::new(0);

/// Notes (or, with `None`, forgets) the server process of the running
/// measurement, whose CPU time [`server_cpu_seconds`] then reads.
pub(crate) fn set_server(pid: Option<u32>) {
    SERVER_PID.store(pid.unwrap_or(0), Ordering::Relaxed);
}

/// CPU time of the running measurement's server process, if it has one.
pub(crate) fn server_cpu_seconds() -> Option<f64> {
    match SERVER_PID.load(Ordering::Relaxed) {
        0 => None,
        pid => cpu_seconds_of(&pid.to_string()),
    }
}

/// Resident memory of this process, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rss {
    /// `VmRSS`: everything resident (heap, stacks and the binary's pages).
    pub(crate) total: u64,
    /// `RssAnon`: anonymous memory only (heap, stacks), without the pages
    /// of the executable that happen to have been touched.
    pub(crate) anon: u64,
}

/// Resident memory of both ends of a measurement: this process and, in a
/// two-process measurement, the server's.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sides {
    pub(crate) client: Rss,
    pub(crate) server: Option<Rss>,
}

impl Sides {
    /// Reads this process and the running measurement's server, if any.
    pub(crate) fn now() -> Sides {
        Sides {
            client: rss(),
            server: match SERVER_PID.load(Ordering::Relaxed) {
                0 => None,
                pid => Some(rss_of(&pid.to_string())),
            },
        }
    }

    /// The sum of both ends.
    pub(crate) fn total(&self) -> Rss {
        let server = self.server.unwrap_or_default();
        Rss {
            total: self.client.total + server.total,
            anon: self.client.anon + server.anon,
        }
    }
}

/// Reads `/proc/self/status`; zeros where it is unreadable (not Linux).
pub(crate) fn rss() -> Rss {
    rss_of("self")
}

/// [`rss`] of process `pid` (a number, or `self`).
pub(crate) fn rss_of(pid: &str) -> Rss {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Rss::default();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
    }
}

/// User + system CPU time this process (all threads) has used, in seconds;
/// `None` when /proc is unreadable. Resolution: one clock tick (10 ms).
pub(crate) fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of("self")
}

/// [`cpu_seconds`] of process `pid` (a number, or `self`).
pub(crate) fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold
    // spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture Rust supports.
    Some((utime + stime) as f64 / 100.0)
}

/// The 1, 5 and 15 minute load averages, as Linux prints them.
pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Number of CPUs the process may use.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
