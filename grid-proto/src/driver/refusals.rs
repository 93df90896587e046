//! Incoming connections a manager refused. The peer is told no more than
//! MinIO tells it (a bare HTTP 403, a generic `Connect` rejection), so the
//! exact reason lives here and in the log, where this node's operator
//! looks.

use std::sync::Mutex;

use tracing::warn;

/// What a manager refused so far ([`crate::driver::Manager::refusals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusals {
    /// Incoming upgrades and handshakes refused since the manager started.
    pub total: u64,
    /// Why the latest one was refused, in full.
    pub last_reason: Option<String>,
}

/// The shared tally behind [`Refusals`].
#[derive(Debug, Default)]
pub(crate) struct RefusalLog(Mutex<Refusals>);

impl RefusalLog {
    /// Counts a refusal and logs its reason.
    pub(crate) fn record(&self, stage: &'static str, reason: String) {
        warn!(stage, %reason, "refused an incoming grid connection");
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        r.total = r.total.saturating_add(1);
        r.last_reason = Some(reason);
    }

    pub(crate) fn snapshot(&self) -> Refusals {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
