//! The record of a run, shared by the harness and every simulated node:
//! each call from issue to resolution, the managers, the reconnect times,
//! the violations and the event trace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use grid_tokio::CallError;
use grid_tokio::turmoil::Manager;

/// Where the run is: nodes call while `CHAOS`, probe while `HEALED`.
pub(crate) const CHAOS: u8 = 0;
pub(crate) const HEALED: u8 = 1;

/// What a run records, shared by the harness and every simulated node.
#[derive(Default)]
pub(crate) struct Ledger {
    next_call: u64,
    /// Calls issued and not resolved yet: id → what it is.
    pub(crate) open: BTreeMap<u64, String>,
    /// Resolved calls by outcome ("ok", "cancelled", or the error's kind).
    pub(crate) outcomes: BTreeMap<String, u64>,
    pub(crate) issued: u64,
    /// Calls whose caller crashed before they resolved.
    pub(crate) lost_with_caller: u64,
    /// Their ids, since the harness last traced them.
    pub(crate) lost: Vec<u64>,
    /// Nodes whose software is down (their calls may vanish).
    pub(crate) down: Vec<bool>,
    /// The manager each node runs now.
    pub(crate) managers: Vec<Option<Manager>>,
    /// When each pair first completed a call after the heal (from, to).
    pub(crate) reconnected: BTreeMap<(usize, usize), Duration>,
    pub(crate) violations: Vec<String>,
    /// Every event, in order, with its simulated time.
    pub(crate) trace: Vec<String>,
}

impl Ledger {
    pub(crate) fn new(nodes: usize) -> Ledger {
        Ledger {
            down: vec![false; nodes],
            managers: vec![None; nodes],
            ..Ledger::default()
        }
    }

    pub(crate) fn event(&mut self, what: std::fmt::Arguments<'_>) {
        let at = turmoil::sim_elapsed().unwrap_or_default().as_nanos();
        self.trace.push(format!("{at} {what}"));
    }
}

#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) phase: Arc<AtomicU8>,
}

impl Shared {
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn healed(&self) -> bool {
        self.phase.load(Ordering::Acquire) == HEALED
    }

    pub(crate) fn issue(&self, node: usize, peer: usize, what: &str) -> Call {
        let mut l = self.ledger();
        let id = l.next_call;
        l.next_call += 1;
        l.issued += 1;
        l.open.insert(id, format!("n{node} -> n{peer} {what}"));
        l.event(format_args!("issue {id} n{node} n{peer} {what}"));
        Call {
            shared: self.clone(),
            id,
            node,
            resolved: false,
        }
    }
}

/// One call in flight: resolved exactly once ([`Call::resolve`] takes it),
/// or lost with its crashed caller; dropped otherwise, it is a violation.
pub(crate) struct Call {
    shared: Shared,
    pub(crate) id: u64,
    node: usize,
    resolved: bool,
}

impl Call {
    pub(crate) fn resolve(mut self, outcome: &str) {
        self.resolved = true;
        let mut l = self.shared.ledger();
        l.open.remove(&self.id);
        *l.outcomes.entry(outcome.to_owned()).or_default() += 1;
        l.event(format_args!("resolve {} {outcome}", self.id));
    }

    pub(crate) fn violation(&self, what: String) {
        self.shared.ledger().violations.push(what);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.resolved {
            return;
        }
        let mut l = self.shared.ledger();
        let what = l.open.remove(&self.id).unwrap_or_default();
        if l.down[self.node] {
            // Traced by the harness in order: the runtime drops a crashed
            // host's tasks in an order of its own.
            l.lost_with_caller += 1;
            l.lost.push(self.id);
        } else {
            l.violations
                .push(format!("call {} ({what}) dropped unresolved", self.id));
        }
    }
}

/// The outcome name of an error: its variant, which is what the invariants
/// and the summary care about.
pub(crate) fn kind(e: &CallError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Errors a call may end with under partitions, crashes and deadlines;
/// anything else means a protocol bug.
pub(crate) fn expected_error(e: &CallError) -> bool {
    matches!(
        e,
        CallError::NotConnected
            | CallError::Disconnected
            | CallError::DeadlineExceeded
            | CallError::RemoteTerminated
            | CallError::Unresponsive
            | CallError::Shutdown
    )
}
