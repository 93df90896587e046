//! One fault scenario: a serving node and a load in real processes, a
//! fault at a fixed point of the load's clock, its repair, and what the
//! load and the processes show afterwards.
//!
//! Timeline (seconds of the load's clock): 0–3 baseline (its RSS taken at
//! 2.5), fault at 3, repair after the fault's length (at most 3 s), RSS
//! again 4.5 s after the repair; the load runs [`DURATION`].

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use crate::observed::Observed;
use crate::procs::{self, Load, Proc, Timers, unix_now};
use crate::proxy::{Fault, Proxy};

/// The load's clock at the fault.
const FAULT_AT: f64 = 3.0;
/// When the baseline RSS is read.
const BASELINE_RSS_AT: f64 = 2.5;
/// After the repair, when the RSS is read again.
const AFTER_RSS: f64 = 4.5;
/// The whole load.
pub(crate) const DURATION: Duration = Duration::from_secs(12);
/// The progress seconds (by end) the baseline throughput is the median of.
const BASELINE_SECONDS: std::ops::RangeInclusive<u32> = 1..=3;
/// Throughput must be back this long after the repair...
const BACK_WITHIN: f64 = 2.0;
/// ... to at least this share of the baseline: a link still down shows
/// none, and on a shared two-core machine a healthy second is often half
/// of another.
const BACK_SHARE: f64 = 0.3;
/// A resident set may grow by this share of its baseline, or by
/// [`RSS_SLACK_BYTES`], whichever is more, and still count as back.
const RSS_SLACK_SHARE: f64 = 0.25;
const RSS_SLACK_BYTES: u64 = 8 << 20;
/// Latency and bandwidth of the slow scenario, each way.
const SLOW: Fault = Fault::Slow {
    latency: Duration::from_millis(50),
    bytes_per_sec: 64 * 1024,
};

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// SIGKILL the serving node, restart it (same address, new instance)
    /// one second later.
    Kill,
    /// SIGSTOP the serving node for longer than the pong timeout, then
    /// SIGCONT it.
    Stop,
    /// The proxy stops forwarding for 3 s, keeping the sockets open.
    Blackhole,
    /// The proxy resets both sides of the connection.
    Reset,
    /// The proxy adds latency and caps bandwidth for 3 s.
    Slow,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 5] = [
        Scenario::Kill,
        Scenario::Stop,
        Scenario::Blackhole,
        Scenario::Reset,
        Scenario::Slow,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Stop => "stop",
            Scenario::Blackhole => "blackhole",
            Scenario::Reset => "reset",
            Scenario::Slow => "slow",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Whether the fault is the proxy's (else the serving process's).
    fn proxied(self) -> bool {
        matches!(self, Scenario::Blackhole | Scenario::Reset | Scenario::Slow)
    }

    /// What is done, for the report.
    pub(crate) fn describe(self, timers: Timers) -> String {
        match self {
            Scenario::Kill => {
                "kill -9 the serving node, restart it 1 s later (same address)".into()
            }
            Scenario::Stop => format!(
                "SIGSTOP the serving node for 3 s (pong timeout {:?}), then SIGCONT",
                timers.pong_timeout
            ),
            Scenario::Blackhole => "proxy forwards nothing for 3 s, sockets kept open".into(),
            Scenario::Reset => "proxy resets both sides of every connection".into(),
            Scenario::Slow => "proxy adds 50 ms each way and caps 64 KiB/s each way for 3 s".into(),
        }
    }
}

/// What one run showed.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Why it failed; empty when it passed.
    pub(crate) problems: Vec<String>,
    /// Seconds from the repair to the first success (see
    /// [`Observed::recovery`]).
    pub(crate) recovery: Option<f64>,
    /// Seconds from the fault to the first error it caused.
    pub(crate) detected: Option<f64>,
    /// Throughput of the first whole second 2 s after the repair, as a
    /// share of the baseline.
    pub(crate) back: Option<f64>,
    /// The load's totals: ok, errors, unresolved.
    pub(crate) totals: Option<(u64, u64, u64)>,
    /// Resident memory (bytes) before the fault and after the repair:
    /// server, load.
    pub(crate) rss: [(u64, u64); 2],
    /// Anything else worth printing.
    pub(crate) notes: Vec<String>,
}

/// A free port on 127.0.0.1 (free when asked; nothing holds it).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn host(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Sleeps until Unix time `t`.
fn sleep_until(t: f64) {
    let d = t - unix_now();
    if d > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(d));
    }
}

/// Where the nodes and the proxy live.
struct Layout {
    /// The serving node's host name (and address).
    server: String,
    /// The load's host name; behind a proxy, the proxy's address.
    client: String,
    /// Where the load listens when a proxy holds its host's address.
    client_listen: Option<String>,
}

/// Host names such that the load dials the server (no proxy: a restarted
/// server is found by the load's redials), or, with a proxy, the server
/// dials the load through the proxy, which holds the load's address (the
/// load listens elsewhere): between them the two kinds of fault exercise
/// both dialers.
fn layout(proxied: bool) -> Result<Layout, String> {
    let (a, b) = (host(free_port()?), host(free_port()?));
    let (server, client) = match (proxied, grid_proto::should_dial(&b, &a)) {
        (false, true) | (true, false) => (a, b),
        (false, false) | (true, true) => (b, a),
    };
    let client_listen = if proxied {
        Some(format!("127.0.0.1:{}", free_port()?))
    } else {
        None
    };
    Ok(Layout {
        server,
        client,
        client_listen,
    })
}

/// Runs scenario `s` with the load `load`; the binaries are in `bin`.
pub(crate) fn run(s: Scenario, bin: &Path, load: &Load) -> Outcome {
    let mut out = Outcome::default();
    if let Err(e) = run_inner(s, bin, load, &mut out) {
        out.problems.push(e);
    }
    out
}

fn run_inner(s: Scenario, bin: &Path, load: &Load, out: &mut Outcome) -> Result<(), String> {
    let l = layout(s.proxied())?;
    let proxy = match &l.client_listen {
        Some(listen) => {
            let at = procs_addr(&l.client)?;
            let upstream = listen.parse().map_err(|e| format!("{listen}: {e}"))?;
            let proxy = Proxy::start(at, upstream).map_err(|e| format!("proxy: {e}"))?;
            out.notes.push(format!(
                "{} dials {} through the proxy at {}",
                l.server, l.client, proxy.addr
            ));
            Some(proxy)
        }
        None => None,
    };
    let serve = || procs::serve(bin, &load.runtime, &l.server, &l.client, load.timers);
    // The dialer starts last, so that its first dial finds the other up.
    let (mut server, client, start) = if s.proxied() {
        let client =
            procs::spawn_load(bin, load, &l.server, &l.client, l.client_listen.as_deref())?;
        let server = serve()?;
        let start = procs::load_started(&client)?;
        (server, client, start)
    } else {
        let server = serve()?;
        let client = procs::spawn_load(bin, load, &l.server, &l.client, None)?;
        let start = procs::load_started(&client)?;
        (server, client, start)
    };
    let mut client = client;

    sleep_until(start + BASELINE_RSS_AT);
    let rss_before = [server.rss(), client.rss()];
    sleep_until(start + FAULT_AT);
    let fault = unix_now();
    let repair = match s {
        Scenario::Kill => {
            server.kill();
            sleep_until(fault + 1.0);
            let repair = unix_now();
            server = serve()?;
            repair
        }
        Scenario::Stop => {
            server.signal("STOP")?;
            sleep_until(fault + 3.0);
            // Stamped first: the process runs again while kill(1) exits.
            let repair = unix_now();
            server.signal("CONT")?;
            repair
        }
        Scenario::Blackhole | Scenario::Slow => {
            let proxy = proxy.as_ref().ok_or("no proxy")?;
            proxy.set(if s == Scenario::Slow {
                SLOW
            } else {
                Fault::Blackhole
            });
            sleep_until(fault + 3.0);
            proxy.set(Fault::None);
            unix_now()
        }
        Scenario::Reset => {
            let n = proxy.as_ref().ok_or("no proxy")?.reset();
            out.notes.push(format!("{n} connection(s) reset"));
            fault
        }
    };
    sleep_until(repair + AFTER_RSS);
    let rss_after = [server.rss(), client.rss()];
    out.rss = [(rss_before[0], rss_after[0]), (rss_before[1], rss_after[1])];

    // The load ends on its own; every call it has in flight resolves
    // within its deadline plus 1 s.
    let end = start + DURATION.as_secs_f64();
    let limit = (end - unix_now()).max(0.0) + load.deadline.as_secs_f64() + 6.0;
    let status = client.wait(Duration::from_secs_f64(limit));
    if status.is_err() {
        out.problems.push(format!(
            "HANG: the load was still running {limit:.0} s later, past its end plus its deadline plus 6 s"
        ));
        client.kill();
    }
    check(s, out, &client, status, start, fault, repair);
    if !server.running() {
        out.problems
            .push(format!("the serving node died:\n{}", server.stderr_text()));
    }
    drop(server);
    drop(proxy);
    Ok(())
}

/// The socket address of a host name `http://127.0.0.1:PORT`.
fn procs_addr(host: &str) -> Result<std::net::SocketAddr, String> {
    host.trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("{host}: {e}"))
}

/// Reads what the load printed and checks it against the suite's rules.
fn check(
    s: Scenario,
    out: &mut Outcome,
    client: &Proc,
    status: Result<Option<i32>, ()>,
    start: f64,
    fault: f64,
    repair: f64,
) {
    let stdout = client.stdout.lock().unwrap_or_else(|e| e.into_inner());
    let stderr = client.stderr.lock().unwrap_or_else(|e| e.into_inner());
    let o = Observed::parse(
        stdout.iter().map(|(_, l)| l.as_str()),
        stderr.iter().map(|(_, l)| l.as_str()),
    );
    let problem = |out: &mut Outcome, p: String| out.problems.push(p);
    match status {
        Ok(Some(0)) => {}
        Ok(Some(1)) => problem(out, "the load reports unresolved calls (exit 1)".into()),
        Ok(code) => problem(out, format!("the load failed (exit {code:?})")),
        Err(()) => {}
    }
    match o.total {
        Some(t) => {
            out.totals = Some((t.ok, t.errors, t.unresolved));
            if t.unresolved > 0 {
                problem(
                    out,
                    format!(
                        "{} calls unresolved (neither success nor typed error within deadline + 1 s)",
                        t.unresolved
                    ),
                );
            }
        }
        None => problem(out, "the load printed no total".into()),
    }
    out.detected = o.first_error_after(fault).map(|t| t - fault);
    out.recovery = o.recovery(fault, repair, 2.0);
    if out.recovery.is_none() {
        problem(out, "no success after the repair".into());
    }
    let baseline = o.baseline(BASELINE_SECONDS);
    match (baseline, o.second_from(start, repair + BACK_WITHIN)) {
        (Some(b), Some(sec)) if b > 0.0 => {
            let share = sec.ok as f64 / b;
            out.back = Some(share);
            if share < BACK_SHARE {
                problem(
                    out,
                    format!(
                        "throughput not back {BACK_WITHIN} s after the repair: second {} had {} ok, {:.0}% of the baseline {b:.0}",
                        sec.elapsed,
                        sec.ok,
                        share * 100.0
                    ),
                );
            }
        }
        (b, sec) => problem(
            out,
            format!("cannot compare throughput (baseline {b:?}, second after the repair {sec:?})"),
        ),
    }
    if s != Scenario::Slow && out.detected.is_none() {
        problem(
            out,
            "the fault caused no error at all: did it happen?".into(),
        );
    }
    for (what, (before, after)) in ["server", "load"].into_iter().zip(out.rss) {
        let allowed = before + ((before as f64 * RSS_SLACK_SHARE) as u64).max(RSS_SLACK_BYTES);
        if before == 0 || after == 0 {
            problem(out, format!("{what} RSS unreadable"));
        } else if after > allowed {
            problem(
                out,
                format!(
                    "{what} RSS did not come back: {:.1} MiB before the fault, {:.1} MiB after the repair",
                    mib(before),
                    mib(after)
                ),
            );
        }
    }
    if let Some(k) = &o.kinds {
        out.notes.push(format!("errors by kind: {k}"));
    }
    if !out.problems.is_empty() {
        let tail: Vec<&str> = stderr
            .iter()
            .rev()
            .take(12)
            .map(|(_, l)| l.as_str())
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        out.notes.push(format!(
            "load stderr (last lines):\n      {}",
            tail.join("\n      ")
        ));
        let progress: Vec<&str> = stdout.iter().map(|(_, l)| l.as_str()).collect();
        out.notes
            .push(format!("load stdout:\n      {}", progress.join("\n      ")));
    }
}

pub(crate) fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}
