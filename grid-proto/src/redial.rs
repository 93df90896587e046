//! The dialer's reconnect policy: how long to wait before the next attempt,
//! decided from why the last one failed.
//!
//! A peer that cannot be reached (restarting, frozen, cut off) is tried
//! again about once per second: it costs one cheap attempt per second while
//! it is down and is found again within a second of coming back. A peer
//! that answers and refuses (bad token, unknown host, clock skew) will not
//! change its mind soon: attempts back off exponentially up to
//! [`Backoff::max`]. An established session that ends is redialed at once.

use std::fmt;
use std::time::Duration;

use crate::config::Backoff;
use crate::error::DisconnectReason;
use crate::rng::Rng;

/// Why an attempt to establish a session failed, as the driver (dial,
/// HTTP upgrade) or the core (handshake) saw it. Decides how soon the
/// dialer tries again ([`DialFailure::is_rejection`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialFailure {
    /// The peer could not be reached: the TCP connection was refused,
    /// reset or timed out, the name did not resolve, or the transport
    /// closed before the handshake finished. Retried about once per second.
    Unreachable(String),
    /// The peer did not answer `Connect` within the handshake timeout (a
    /// frozen or overloaded peer). Retried about once per second.
    HandshakeTimeout,
    /// The peer's HTTP server refused the WebSocket upgrade with this
    /// status: 401/403 when it refused our token or clock, 404 for a wrong
    /// route. A 5xx (a server still starting) counts as unreachable.
    UpgradeRefused(u16),
    /// The peer refused our `Connect` with this reason (unknown host,
    /// clock skew, bad token, wrong side).
    Rejected(String),
    /// The peer answered `Connect` with something that is not a valid
    /// `ConnectResponse`: not a grid peer, or an incompatible one.
    BadAnswer(String),
    /// No attempt could be made: the host or token does not fit in an
    /// upgrade request, or the application's token hook panicked.
    Local(String),
}

impl DialFailure {
    /// Whether the peer (or this node) refused rather than failed to
    /// answer: retrying soon will not help, so attempts back off
    /// exponentially.
    pub fn is_rejection(&self) -> bool {
        match self {
            DialFailure::Unreachable(_) | DialFailure::HandshakeTimeout => false,
            DialFailure::UpgradeRefused(status) => *status < 500,
            DialFailure::Rejected(_) | DialFailure::BadAnswer(_) | DialFailure::Local(_) => true,
        }
    }

    /// The failure a session that ended during its handshake stands for.
    pub(crate) fn from_handshake(reason: &DisconnectReason) -> DialFailure {
        match reason {
            DisconnectReason::HandshakeTimeout => DialFailure::HandshakeTimeout,
            DisconnectReason::Rejected(why) => DialFailure::Rejected(why.clone()),
            DisconnectReason::HandshakeFailed(why) => DialFailure::BadAnswer(why.clone()),
            DisconnectReason::Decode(e) => DialFailure::BadAnswer(e.to_string()),
            other => DialFailure::Unreachable(other.to_string()),
        }
    }
}

impl fmt::Display for DialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialFailure::Unreachable(why) => write!(f, "peer unreachable: {why}"),
            DialFailure::HandshakeTimeout => f.write_str("peer did not answer the handshake"),
            DialFailure::UpgradeRefused(401 | 403) => write!(
                f,
                "peer refused the upgrade (HTTP 403): our token or clock was not accepted"
            ),
            DialFailure::UpgradeRefused(404) => {
                f.write_str("peer refused the upgrade (HTTP 404): no grid on this route")
            }
            DialFailure::UpgradeRefused(status) => {
                write!(f, "peer refused the upgrade (HTTP {status})")
            }
            DialFailure::Rejected(why) => write!(f, "peer rejected the connection: {why}"),
            DialFailure::BadAnswer(why) => write!(f, "peer's handshake answer is invalid: {why}"),
            DialFailure::Local(why) => write!(f, "cannot dial: {why}"),
        }
    }
}

impl std::error::Error for DialFailure {}

/// The pacing state of one dialer: consecutive refusals and the jitter
/// source. Pure: the same seed and failures give the same delays.
#[derive(Debug, Clone)]
pub(crate) struct Redial {
    backoff: Backoff,
    rng: Rng,
    /// Refusals since the last established session.
    rejections: u32,
}

impl Redial {
    pub(crate) fn new(backoff: Backoff, seed: u64) -> Redial {
        Redial {
            backoff,
            rng: Rng::new(seed),
            rejections: 0,
        }
    }

    /// How long after the start of the failed attempt the next one starts.
    pub(crate) fn delay_after(&mut self, failure: &DialFailure) -> Duration {
        let b = self.backoff;
        let jitter = b.jitter.clamp(0.0, 1.0);
        let u = self.rng.next_f64();
        if !failure.is_rejection() {
            // Never above `retry`: a peer that comes back is found within
            // one interval.
            return b.retry.mul_f64(1.0 - jitter * u);
        }
        let growth = b.multiplier.max(1.0).powi(self.rejections.min(32) as i32);
        self.rejections = self.rejections.saturating_add(1);
        let base = b.initial.as_secs_f64() * growth;
        let spread = 1.0 + jitter * (2.0 * u - 1.0);
        Duration::from_secs_f64((base * spread).clamp(0.0, b.max.as_secs_f64()))
    }

    /// A session was established: refusals start over.
    pub(crate) fn reset(&mut self) {
        self.rejections = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(!DialFailure::Unreachable("refused".into()).is_rejection());
        assert!(!DialFailure::HandshakeTimeout.is_rejection());
        assert!(!DialFailure::UpgradeRefused(503).is_rejection());
        assert!(DialFailure::UpgradeRefused(403).is_rejection());
        assert!(DialFailure::UpgradeRefused(404).is_rejection());
        assert!(DialFailure::Rejected("unknown incoming host".into()).is_rejection());
        assert!(DialFailure::Local("token hook panicked".into()).is_rejection());
    }
}
