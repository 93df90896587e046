//! The real tokio driver in a deterministic cluster simulation (turmoil).
//!
//! Each seed draws a cluster of 5 to 16 nodes, each a turmoil host running
//! a grid-tokio `Manager` (over [`grid_tokio::turmoil::Turmoil`]) with echo,
//! failing, slow and stream-echo handlers, and callers on every node making
//! random single calls (with and without deadlines, some cancelled by drop)
//! and streams (some dropped half-way). Meanwhile the harness partitions and
//! heals links (both ways and one way), crashes hosts and restarts them (a
//! new manager, a new instance id; like a power loss, so the peers find out
//! from timeouts and new connections), over links with random latency and
//! hosts with skewed wall clocks (one host, now and then, beyond the 5-min
//! `Connect` tolerance). Then it heals everything and checks:
//!
//! 1. every call resolves exactly once, with success or a typed error
//!    (issued = resolved + lost with a crashed caller), and every success
//!    carries the right answer;
//! 2. after the heal every pair of nodes whose clocks agree works again
//!    (a call succeeds) within [`harness::RECONNECT_BOUND`]; a pair whose
//!    clocks disagree never connects;
//! 3. once every call has resolved, no request or stream entry is left in
//!    any connection's tables ([`grid_tokio::Stats`]);
//! 4. the same seed gives the same run (the first seeds run twice and their
//!    event traces must match event by event).
//!
//! `GRID_SIM_SEEDS` sets how many seeds run (default 50; CI runs 1 000),
//! `GRID_SIM_FIRST_SEED` the first one (default 1),
//! `GRID_SIM_RECONNECT_BOUND_MS` another reconnect bound; `GRID_SIM_VERBOSE=1`
//! prints each seed's scenario and outcome. A failing seed is printed with
//! the command that replays it alone. Seeds run on every core.

#[path = "turmoil_cluster/harness.rs"]
mod harness;
#[path = "turmoil_cluster/ledger.rs"]
mod ledger;
#[path = "turmoil_cluster/node.rs"]
mod node;
#[path = "turmoil_cluster/scenario.rs"]
mod scenario;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::{Harness, Report, reconnect_bound, run_seed};
use ledger::HEALED;
use scenario::Scenario;

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn describe_failure(r: &Report) -> String {
    let sc = Scenario::draw(r.seed);
    let mut s = format!(
        "seed {} ({} nodes, outlier {:?}, faults {:?}):\n",
        r.seed, sc.nodes, sc.outlier, sc.faults
    );
    for v in r.violations.iter().take(20) {
        let _ = writeln!(s, "  - {v}");
    }
    let _ = writeln!(
        s,
        "  replay: GRID_SIM_FIRST_SEED={} GRID_SIM_SEEDS=1 GRID_SIM_VERBOSE=1 \
         cargo test -p conformance --test turmoil_cluster \
         -- --nocapture cluster_invariants",
        r.seed
    );
    s
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[test]
fn cluster_invariants_hold_over_many_seeds() {
    let count = env_u64("GRID_SIM_SEEDS", 50);
    let first = env_u64("GRID_SIM_FIRST_SEED", 1);
    let verbose = env_u64("GRID_SIM_VERBOSE", 0) != 0;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count.max(1) as usize);
    let started = Instant::now();
    let next = AtomicU64::new(first);
    let stop = AtomicBool::new(false);
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + count {
                        return;
                    }
                    let report = run_seed(seed);
                    if verbose {
                        println!(
                            "{:?}\n  -> {} calls {:?}, slowest reconnect {:?}, \
                             simulated {:?}, violations {:?}",
                            Scenario::draw(seed),
                            report.issued,
                            report.outcomes,
                            report.reconnect.last(),
                            report.simulated,
                            report.violations
                        );
                    }
                    if !report.violations.is_empty() {
                        // Fail fast: the first bad seed is the news.
                        stop.store(true, Ordering::Relaxed);
                    }
                    reports.lock().unwrap().push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by_key(|r| r.seed);

    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut reconnect = Vec::new();
    let (mut issued, mut lost, mut nodes) = (0, 0, 0);
    let mut simulated = Duration::ZERO;
    for r in &reports {
        issued += r.issued;
        lost += r.lost_with_caller;
        nodes += r.nodes;
        simulated += r.simulated;
        reconnect.extend_from_slice(&r.reconnect);
        for (k, v) in &r.outcomes {
            *outcomes.entry(k.clone()).or_default() += v;
        }
    }
    reconnect.sort_unstable();
    let resolved: u64 = outcomes.values().sum();
    println!(
        "turmoil cluster: {} seeds from {first}, {nodes} nodes, {issued} calls \
         ({resolved} resolved, {lost} lost with a crashed caller)",
        reports.len()
    );
    println!("  outcomes: {outcomes:?}");
    println!(
        "  reconnect after heal, per pair ({} pairs): p50 {:?}, p99 {:?}, max {:?} (bound {:?})",
        reconnect.len(),
        percentile(&reconnect, 0.50),
        percentile(&reconnect, 0.99),
        reconnect.last().copied().unwrap_or_default(),
        reconnect_bound(),
    );
    println!(
        "  simulated {:.0?} in {:.1?} on {threads} threads",
        simulated,
        started.elapsed()
    );

    let failures: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(describe_failure)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        issued,
        resolved + lost,
        "every call resolves once, or is lost with its caller"
    );
    assert!(resolved > 0, "the callers made calls");
}

#[test]
fn same_seed_gives_the_same_run() {
    let first = env_u64("GRID_SIM_FIRST_SEED", 1);
    for seed in first..first + 3 {
        let a = run_seed(seed);
        let b = run_seed(seed);
        assert!(a.issued > 0, "seed {seed} made calls");
        if let Some(i) =
            (0..a.trace.len().max(b.trace.len())).find(|&i| a.trace.get(i) != b.trace.get(i))
        {
            panic!(
                "seed {seed} ran differently twice: event {i} is {:?}, then {:?}",
                a.trace.get(i),
                b.trace.get(i)
            );
        }
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
}

/// A node that restarts after a power loss dials a peer that still holds
/// their old session: the peer swaps the session for the new connection,
/// and the pair works at once, not only after the peer's pong timeout
/// (20 s) has ended the old session.
#[test]
fn a_restarted_dialer_replaces_the_session_its_peer_kept() {
    let (a, b) = if grid_proto::should_dial(&scenario::url(0), &scenario::url(1)) {
        (0, 1)
    } else {
        (1, 0)
    };
    let mut h = Harness::new(std::sync::Arc::new(Scenario::quiet(7, 2)), HEALED);
    let shared = h.shared.clone();
    assert!(h.run_until(Duration::from_secs(5), |l| l.reconnected.len() == 2));
    shared.ledger().reconnected.clear();

    h.isolated(a, |sim| sim.bounce(scenario::name(a)));
    let restarted = h.sim.elapsed();
    assert!(
        h.run_until(Duration::from_secs(10), |l| l
            .reconnected
            .contains_key(&(a, b))),
        "the restarted dialer n{a} never got a working connection to n{b}"
    );
    let took = shared.ledger().reconnected[&(a, b)].saturating_sub(restarted);
    assert!(
        took < Duration::from_secs(3),
        "the restarted dialer needed {took:?} to call its peer"
    );
    h.finish();
    let violations = shared.ledger().violations.clone();
    assert!(violations.is_empty(), "{violations:?}");
}
