//! The harness: builds a scenario's cluster, steps the simulation, strikes
//! the faults, heals, and checks the invariants.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use grid_tokio::State;

use crate::ledger::{CHAOS, HEALED, Ledger, Shared};
use crate::node::{SLOW_MAX_MS, node_software};
use crate::scenario::{Fault, Scenario, derive, name, url};

/// After the heal, every pair of nodes that can talk must complete a call
/// within this much simulated time.
///
/// With today's reconnect policy the slowest case is a dialer that kept
/// failing during a long partition: its next attempt may be up to the
/// backoff cap away (30 s, +1/3 jitter: 40 s), plus the dial. A connection
/// that died silently (turmoil drops the segments of a partitioned link and
/// never retransmits, so the stream stalls) is found by the ping within
/// ping interval + pong timeout (30 s) and redialled at once. Tighten this
/// when the reconnect policy promises less (issue 12: 1 s p99), or try a
/// bound with `GRID_SIM_RECONNECT_BOUND_MS` ([`reconnect_bound`]).
pub(crate) const RECONNECT_BOUND: Duration = Duration::from_secs(45);

/// [`RECONNECT_BOUND`], unless `GRID_SIM_RECONNECT_BOUND_MS` sets another.
pub(crate) fn reconnect_bound() -> Duration {
    std::env::var("GRID_SIM_RECONNECT_BOUND_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(RECONNECT_BOUND, Duration::from_millis)
}
/// Simulated time per turmoil step: the network delivers at step
/// boundaries, so this is also the latency granularity.
const TICK: Duration = Duration::from_millis(10);
/// How long, after the heal, calls get to resolve: the longest a call can
/// stay open (Go's 60 s default request timeout, or a stream's 30 s
/// liveness check after a reconnect) plus the reconnect bound.
const QUIESCE_BOUND: Duration = Duration::from_secs(110);

/// What one seed did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) seed: u64,
    pub(crate) nodes: usize,
    pub(crate) issued: u64,
    pub(crate) lost_with_caller: u64,
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// Per pair that can connect: time from the heal to its first
    /// successful call.
    pub(crate) reconnect: Vec<Duration>,
    pub(crate) simulated: Duration,
    /// Every event of the run, in order (for the same-seed check).
    pub(crate) trace: Vec<String>,
    pub(crate) violations: Vec<String>,
}

/// Runs one seed's scenario and checks the invariants.
pub(crate) fn run_seed(seed: u64) -> Report {
    let sc = Arc::new(Scenario::draw(seed));
    let mut harness = Harness::new(sc.clone(), CHAOS);
    let shared = harness.shared.clone();
    harness.chaos();
    let healed_at = harness.heal();
    let reconnected = harness.await_reconnects(healed_at);
    harness.await_quiescence(healed_at);
    // Probes still calling the pairs that failed would show in the tables.
    if reconnected {
        harness.check_tables();
    }
    let simulated = harness.sim.elapsed();
    harness.finish();

    let mut l = shared.ledger();
    let mut reconnect: Vec<Duration> = l
        .reconnected
        .values()
        .map(|at| at.saturating_sub(healed_at))
        .collect();
    reconnect.sort_unstable();
    Report {
        seed,
        nodes: sc.nodes,
        issued: l.issued,
        lost_with_caller: l.lost_with_caller,
        outcomes: l.outcomes.clone(),
        reconnect,
        simulated,
        trace: std::mem::take(&mut l.trace),
        violations: l.violations.clone(),
    }
}

/// A scenario's cluster under test: the simulation, the links the faults
/// cut or hold, and the nodes that are down.
pub(crate) struct Harness<'a> {
    pub(crate) sim: turmoil::Sim<'a>,
    sc: Arc<Scenario>,
    pub(crate) shared: Shared,
    /// Cut directions of links (from, to).
    cut: Vec<(usize, usize)>,
    /// Held links (lower node first).
    held: Vec<(usize, usize)>,
    /// Crashed nodes and when they come back.
    down_until: BTreeMap<usize, Duration>,
    /// The simulation itself failed (a host's software returned an error).
    failed: Option<String>,
}

impl<'a> Harness<'a> {
    /// The scenario's cluster, every node started, nothing run yet.
    pub(crate) fn new(sc: Arc<Scenario>, phase: u8) -> Harness<'a> {
        let shared = Shared {
            ledger: Arc::new(Mutex::new(Ledger::new(sc.nodes))),
            phase: Arc::new(AtomicU8::new(phase)),
        };
        let mut sim = turmoil::Builder::new()
            .rng_seed(derive(sc.seed, &[4]))
            .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .tick_duration(TICK)
            .min_message_latency(sc.min_latency)
            .max_message_latency(sc.max_latency)
            .simulation_duration(Duration::from_secs(3_600))
            .enable_random_order()
            .build();
        for node in 0..sc.nodes {
            let runs = AtomicU64::new(0);
            let (sc, shared) = (sc.clone(), shared.clone());
            sim.host(name(node), move || {
                let run = runs.fetch_add(1, Ordering::Relaxed);
                node_software(sc.clone(), shared.clone(), node, run)
            });
        }
        if let Some((a, b, latency)) = sc.slow_link {
            sim.set_link_max_message_latency(name(a), name(b), latency);
        }
        Harness {
            sim,
            sc,
            shared,
            cut: Vec::new(),
            held: Vec::new(),
            down_until: BTreeMap::new(),
            failed: None,
        }
    }

    /// Ends the simulation: its hosts' tasks are dropped, which settles
    /// (and counts) whatever calls they still had.
    pub(crate) fn finish(mut self) {
        if let Some(e) = self.failed.take() {
            self.shared.ledger().violations.push(e);
        }
        for node in 0..self.sc.nodes {
            self.set_down(node, true);
        }
    }

    fn step(&mut self) -> bool {
        if self.failed.is_some() {
            return false;
        }
        if let Err(e) = self.sim.step() {
            self.failed = Some(format!("simulation failed: {e}"));
            return false;
        }
        true
    }

    /// Steps until `done` holds for the ledger, at most `limit` of
    /// simulated time. Returns whether it came to hold.
    pub(crate) fn run_until(&mut self, limit: Duration, done: impl Fn(&Ledger) -> bool) -> bool {
        let end = self.sim.elapsed() + limit;
        while !done(&self.shared.ledger()) {
            if self.sim.elapsed() >= end || !self.step() {
                return false;
            }
        }
        true
    }

    fn set_down(&self, node: usize, down: bool) {
        self.shared.ledger().down[node] = down;
    }

    /// Traces the calls a node lost when its software was killed.
    fn trace_lost(&self, node: usize) {
        let mut l = self.shared.ledger();
        let mut lost = std::mem::take(&mut l.lost);
        lost.sort_unstable();
        l.event(format_args!("n{node} killed, lost {lost:?}"));
    }

    /// Calls run while the seed's faults strike on schedule.
    fn chaos(&mut self) {
        let faults = self.sc.faults.clone();
        let mut next = 0;
        while self.sim.elapsed() < self.sc.chaos {
            let now = self.sim.elapsed();
            while next < faults.len() && faults[next].0 <= now {
                self.apply(now, &faults[next].1);
                next += 1;
            }
            let back: Vec<usize> = self
                .down_until
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(n, _)| *n)
                .collect();
            for node in back {
                self.bring_back(node);
            }
            if !self.step() {
                return;
            }
        }
    }

    fn apply(&mut self, now: Duration, fault: &Fault) {
        let n = self.sc.nodes;
        match fault {
            Fault::Partition { side, hold } => {
                for a in side.iter().copied() {
                    for b in (0..n).filter(|b| !side.contains(b)) {
                        let link = (a.min(b), a.max(b));
                        if !hold {
                            // Drops what a held link kept, too.
                            self.sim.partition(name(a), name(b));
                            self.held.retain(|l| *l != link);
                            self.cut.extend([(a, b), (b, a)]);
                        } else if !self.is_cut(a, b) && !self.held.contains(&link) {
                            self.sim.hold(name(a), name(b));
                            self.held.push(link);
                        }
                    }
                }
            }
            Fault::PartitionOneWay { from, to } => {
                // turmoil has no one-way cut of a held link.
                if !self.held.contains(&(*from.min(to), *from.max(to))) {
                    self.sim.partition_oneway(name(*from), name(*to));
                    self.cut.push((*from, *to));
                }
            }
            Fault::Repair { node } => self.repair(|a, b| a == *node || b == *node),
            Fault::Crash { node, down } => {
                if !self.down_until.contains_key(node) {
                    self.set_down(*node, true);
                    self.isolated(*node, |sim| sim.crash(name(*node)));
                    self.trace_lost(*node);
                    self.down_until.insert(*node, now + *down);
                }
            }
            Fault::Restart { node } => {
                if !self.down_until.contains_key(node) {
                    self.set_down(*node, true);
                    self.isolated(*node, |sim| sim.bounce(name(*node)));
                    self.trace_lost(*node);
                    self.set_down(*node, false);
                }
            }
        }
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a, b)) || self.cut.contains(&(b, a))
    }

    /// Repairs the links between the nodes `which` picks: cut ones carry
    /// traffic again, held ones deliver what they kept.
    fn repair(&mut self, which: impl Fn(usize, usize) -> bool) {
        let (cut, keep): (Vec<_>, Vec<_>) = self.cut.iter().partition(|(a, b)| which(*a, *b));
        self.cut = keep;
        for (a, b) in cut {
            self.sim.repair_oneway(name(a), name(b));
        }
        let (held, keep): (Vec<_>, Vec<_>) = self.held.iter().partition(|(a, b)| which(*a, *b));
        self.held = keep;
        for (a, b) in held {
            self.sim.release(name(a), name(b));
        }
    }

    /// Kills `node`'s software (`kill` crashes or restarts it) like a
    /// power loss: nothing its dying sockets send reaches the network.
    ///
    /// That is also what keeps runs repeatable: the runtime drops a killed
    /// host's tasks in an order of its own (by process-wide task ids), and
    /// every segment sent draws its latency from the simulation's one
    /// random generator. Segments on a cut link draw nothing.
    pub(crate) fn isolated(&mut self, node: usize, kill: impl FnOnce(&mut turmoil::Sim<'_>)) {
        let others: Vec<usize> = (0..self.sc.nodes).filter(|&m| m != node).collect();
        for &m in &others {
            self.sim.partition(name(node), name(m));
        }
        kill(&mut self.sim);
        for &m in &others {
            if self.held.contains(&(node.min(m), node.max(m))) {
                // What the link held for the dead host went with it.
                self.sim.hold(name(node), name(m));
                continue;
            }
            for (a, b) in [(node, m), (m, node)] {
                if !self.cut.contains(&(a, b)) {
                    self.sim.repair_oneway(name(a), name(b));
                }
            }
        }
    }

    fn bring_back(&mut self, node: usize) {
        self.down_until.remove(&node);
        self.sim.bounce(name(node));
        self.set_down(node, false);
    }

    /// Repairs every link, restarts every crashed node, stops new calls and
    /// starts the probes. Returns when.
    fn heal(&mut self) -> Duration {
        self.repair(|_, _| true);
        let down: Vec<usize> = self.down_until.keys().copied().collect();
        for node in down {
            self.bring_back(node);
        }
        self.shared.phase.store(HEALED, Ordering::Release);
        self.sim.elapsed()
    }

    /// Invariant 2: every pair that can talk does again within the bound.
    /// Returns whether they all did.
    fn await_reconnects(&mut self, healed_at: Duration) -> bool {
        let n = self.sc.nodes;
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .filter(|&(a, b)| a != b && self.sc.can_connect(a, b))
            .collect();
        let bound = reconnect_bound();
        while self.shared.ledger().reconnected.len() < pairs.len() {
            if self.sim.elapsed() > healed_at + bound {
                let mut l = self.shared.ledger();
                let missing: Vec<String> = pairs
                    .iter()
                    .filter(|p| !l.reconnected.contains_key(p))
                    .map(|&(a, b)| {
                        let state = l.managers[a]
                            .as_ref()
                            .and_then(|m| m.connection(&url(b)))
                            .map(|c| c.state());
                        format!("n{a} -> n{b} ({state:?})")
                    })
                    .collect();
                let e = format!(
                    "{} pairs not working {bound:?} after the heal: {}",
                    missing.len(),
                    missing.join(", ")
                );
                l.violations.push(e);
                return false;
            }
            if !self.step() {
                return false;
            }
        }
        true
    }

    /// Invariant 1: every call resolves (with the bound of the longest
    /// call), then time for handlers to finish and stats to be published.
    fn await_quiescence(&mut self, healed_at: Duration) {
        while !self.shared.ledger().open.is_empty() {
            if self.sim.elapsed() > healed_at + QUIESCE_BOUND {
                let mut l = self.shared.ledger();
                let open: Vec<String> = l.open.values().take(10).cloned().collect();
                let e = format!(
                    "{} calls unresolved {QUIESCE_BOUND:?} after the heal, e.g. {}",
                    l.open.len(),
                    open.join("; ")
                );
                l.violations.push(e);
                return;
            }
            if !self.step() {
                return;
            }
        }
        let settle = self.sim.elapsed() + Duration::from_millis(SLOW_MAX_MS + 500);
        while self.sim.elapsed() < settle {
            if !self.step() {
                return;
            }
        }
    }

    /// Invariant 3: no request or stream entry outlives its call; and a
    /// pair whose clocks disagree never connected.
    fn check_tables(&mut self) {
        let mut l = self.shared.ledger();
        let mut found = Vec::new();
        let mut trace = Vec::new();
        for (node, manager) in l.managers.iter().enumerate() {
            let Some(manager) = manager else { continue };
            for (peer, stats) in manager.stats() {
                let Some(s) = stats else { continue };
                let left = [
                    s.outgoing_requests,
                    s.outgoing_streams,
                    s.incoming_requests,
                    s.incoming_streams,
                ];
                if left != [0; 4] {
                    found.push(format!(
                        "n{node} -> {peer}: {left:?} (out req, out streams, in req, in streams) left"
                    ));
                }
                trace.push(format!(
                    "n{node} {peer} {:?} {} {} {} {} {}",
                    s.state,
                    s.messages_sent,
                    s.messages_received,
                    s.frames_sent,
                    s.bytes_sent,
                    s.reconnects
                ));
            }
            if let Some(outlier) = self.sc.outlier.filter(|&o| o != node) {
                let conn = manager.connection(&url(outlier)).expect("a known host");
                if conn.state() == State::Connected {
                    found.push(format!(
                        "n{node} connected to n{outlier} despite a clock {:?} vs {:?}",
                        self.sc.skews[node], self.sc.skews[outlier]
                    ));
                }
            }
        }
        l.violations.extend(found);
        for line in trace {
            l.event(format_args!("{line}"));
        }
    }
}
