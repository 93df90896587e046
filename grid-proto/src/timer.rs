//! Timers. The connection-wide ones sit in a fixed table; per-mux ones
//! (deadlines, stream pings, idle checks) in an ordered set, removed when
//! their mux ends so the set never holds more than the live muxes.

use std::collections::BTreeSet;
use std::time::Instant;

/// A connection-wide timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// Handshake answer overdue.
    Handshake = 0,
    /// Time for the next connection ping (and the pong-age check).
    Ping = 1,
    /// The dialer may try again.
    Redial = 2,
}

const CONN_TIMERS: usize = 3;

/// A per-mux timer. Outgoing and incoming muxes have separate id spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum MuxTimer {
    /// An outgoing call's deadline.
    CallDeadline(u64),
    /// An outgoing stream's ping / liveness tick.
    CallPing(u64),
    /// An incoming call's deadline (`DeadlineMS`).
    IncomingDeadline(u64),
    /// An incoming stream's idle check.
    IncomingIdle(u64),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    conn: [Option<Instant>; CONN_TIMERS],
    mux: BTreeSet<(Instant, MuxTimer)>,
}

impl Timers {
    pub(crate) fn set(&mut self, t: ConnTimer, at: Instant) {
        self.conn[t as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, t: ConnTimer) {
        self.conn[t as usize] = None;
    }

    pub(crate) fn add_mux(&mut self, at: Instant, t: MuxTimer) {
        self.mux.insert((at, t));
    }

    pub(crate) fn remove_mux(&mut self, at: Instant, t: MuxTimer) {
        self.mux.remove(&(at, t));
    }

    pub(crate) fn clear_mux(&mut self) {
        self.mux.clear();
    }

    pub(crate) fn mux_len(&self) -> usize {
        self.mux.len()
    }

    /// The earliest armed timer.
    pub(crate) fn next(&self) -> Option<Instant> {
        let conn = self.conn.iter().flatten().min().copied();
        let mux = self.mux.first().map(|(at, _)| *at);
        match (conn, mux) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes a connection timer that is due at `now`.
    pub(crate) fn take_expired_conn(&mut self, now: Instant) -> Option<ConnTimer> {
        for t in [ConnTimer::Handshake, ConnTimer::Ping, ConnTimer::Redial] {
            if matches!(self.conn[t as usize], Some(at) if at <= now) {
                self.conn[t as usize] = None;
                return Some(t);
            }
        }
        None
    }

    /// Takes the earliest mux timer that is due at `now`.
    pub(crate) fn take_expired_mux(&mut self, now: Instant) -> Option<MuxTimer> {
        match self.mux.first() {
            Some((at, _)) if *at <= now => self.mux.pop_first().map(|(_, t)| t),
            _ => None,
        }
    }
}
