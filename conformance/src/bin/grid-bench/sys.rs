//! What the benchmark reads from Linux's /proc: memory, CPU time, load.

use std::fs;

/// Resident memory of this process, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rss {
    /// `VmRSS`: everything resident (heap, stacks and the binary's pages).
    pub(crate) total: u64,
    /// `RssAnon`: anonymous memory only (heap, stacks), without the pages
    /// of the executable that happen to have been touched.
    pub(crate) anon: u64,
}

/// Reads `/proc/self/status`; zeros where it is unreadable (not Linux).
pub(crate) fn rss() -> Rss {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
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
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
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
