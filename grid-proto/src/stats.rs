//! Plain-data snapshots of a connection ([`crate::Connection::stats`]) and
//! their sum over many connections ([`StatsTotal`]), shaped like MinIO's
//! RPC metrics. Wall-clock fields are derived from the wall time the driver
//! passed in; nothing here reads a clock.

use std::time::Duration;

use crate::redial::DialFailure;
use crate::state::State;
use crate::time::Timestamp;

/// Counters and table sizes of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Where the connection is in its life.
    pub state: State,
    /// Round-trip time of the last connection ping.
    pub rtt: Option<Duration>,
    /// Time since the last connection pong (while connected).
    pub last_pong_age: Option<Duration>,
    /// When the last connection pong arrived (or the session began), by
    /// the wall clock; `None` before the first session (MinIO's
    /// `LastPongTime`).
    pub last_pong: Option<Timestamp>,
    /// When the latest session was established, by the wall clock (MinIO's
    /// `LastConnectTime`).
    pub last_connected: Option<Timestamp>,
    /// Sessions established since creation (the first one included).
    pub connects: u64,
    /// Single requests this side is waiting on.
    pub outgoing_requests: usize,
    /// Streams this side opened that are live.
    pub outgoing_streams: usize,
    /// Requests of the peer being served.
    pub incoming_requests: usize,
    /// Streams of the peer being served.
    pub incoming_streams: usize,
    /// Bytes queued for sending, not yet taken by `poll_transmit`.
    pub queued_bytes: usize,
    /// Frames queued for sending.
    pub queued_frames: usize,
    /// Armed per-mux timers (deadlines, pings, idle checks).
    pub timers: usize,
    /// Messages queued for sending since creation.
    pub messages_sent: u64,
    /// Messages received since creation.
    pub messages_received: u64,
    /// Bytes of frames taken for sending.
    pub bytes_sent: u64,
    /// Bytes of frames received.
    pub bytes_received: u64,
    /// Frames taken for sending.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Sessions established after the first.
    pub reconnects: u64,
    /// Received messages ignored (unknown ops, duplicates).
    pub ignored_messages: u64,
    /// Attempts to establish a session that failed (dialer only).
    pub dial_failures: u64,
    /// Why the latest attempt failed; `None` once a session is established.
    pub last_dial_failure: Option<DialFailure>,
}

impl Stats {
    /// Calls in flight either way: requests and streams this side made,
    /// and those of the peer it serves.
    pub fn in_flight(&self) -> usize {
        self.outgoing_requests
            + self.outgoing_streams
            + self.incoming_requests
            + self.incoming_streams
    }
}

/// The sum of many connections' [`Stats`] (a manager's, see
/// `driver::Manager::stats_total`), as MinIO aggregates its RPC metrics:
/// counters and table sizes add up; for the wall-clock times the latest
/// wins, and the round-trip time is that of the connection whose pong is
/// the latest, next to the largest of all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsTotal {
    /// Connections summed up.
    pub connections: usize,
    /// Of those, the ones connected now.
    pub connected: usize,
    /// Sessions established, over all connections.
    pub connects: u64,
    /// Sessions established after each connection's first.
    pub reconnects: u64,
    /// The latest time any session was established.
    pub last_connected: Option<Timestamp>,
    /// The latest connection pong of any connection.
    pub last_pong: Option<Timestamp>,
    /// The round-trip time measured with [`last_pong`](Self::last_pong)
    /// (MinIO's `LastPingMS`).
    pub last_rtt: Option<Duration>,
    /// The largest last round-trip time of any connection (MinIO's
    /// `MaxPingDurMS`).
    pub max_rtt: Option<Duration>,
    /// Single requests this node is waiting on.
    pub outgoing_requests: usize,
    /// Streams this node opened that are live.
    pub outgoing_streams: usize,
    /// Requests of peers being served.
    pub incoming_requests: usize,
    /// Streams of peers being served.
    pub incoming_streams: usize,
    /// Bytes queued for sending (MinIO's `OutQueue` counts messages; this
    /// is the byte depth, frames are next).
    pub queued_bytes: usize,
    /// Frames queued for sending.
    pub queued_frames: usize,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Bytes of frames sent.
    pub bytes_sent: u64,
    /// Bytes of frames received.
    pub bytes_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Received messages ignored.
    pub ignored_messages: u64,
    /// Failed attempts to establish a session.
    pub dial_failures: u64,
}

impl StatsTotal {
    /// Adds one connection's snapshot.
    pub fn add(&mut self, s: &Stats) {
        self.connections += 1;
        self.connected += usize::from(s.state == State::Connected);
        self.connects = self.connects.saturating_add(s.connects);
        self.reconnects = self.reconnects.saturating_add(s.reconnects);
        self.last_connected = self.last_connected.max(s.last_connected);
        if s.last_pong.is_some() && s.last_pong >= self.last_pong {
            self.last_pong = s.last_pong;
            self.last_rtt = s.rtt.or(self.last_rtt);
        }
        self.max_rtt = self.max_rtt.max(s.rtt);
        self.outgoing_requests += s.outgoing_requests;
        self.outgoing_streams += s.outgoing_streams;
        self.incoming_requests += s.incoming_requests;
        self.incoming_streams += s.incoming_streams;
        self.queued_bytes += s.queued_bytes;
        self.queued_frames += s.queued_frames;
        self.messages_sent = self.messages_sent.saturating_add(s.messages_sent);
        self.messages_received = self.messages_received.saturating_add(s.messages_received);
        self.bytes_sent = self.bytes_sent.saturating_add(s.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(s.bytes_received);
        self.frames_sent = self.frames_sent.saturating_add(s.frames_sent);
        self.frames_received = self.frames_received.saturating_add(s.frames_received);
        self.ignored_messages = self.ignored_messages.saturating_add(s.ignored_messages);
        self.dial_failures = self.dial_failures.saturating_add(s.dial_failures);
    }

    /// Calls in flight either way, over all connections.
    pub fn in_flight(&self) -> usize {
        self.outgoing_requests
            + self.outgoing_streams
            + self.incoming_requests
            + self.incoming_streams
    }
}

impl<'a> FromIterator<&'a Stats> for StatsTotal {
    fn from_iter<I: IntoIterator<Item = &'a Stats>>(iter: I) -> StatsTotal {
        let mut total = StatsTotal::default();
        for s in iter {
            total.add(s);
        }
        total
    }
}
