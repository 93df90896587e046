//! A plain-data snapshot of a connection ([`crate::Connection::stats`]).

use std::time::Duration;

use crate::connection::State;
use crate::redial::DialFailure;

/// Counters and table sizes of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Where the connection is in its life.
    pub state: State,
    /// Round-trip time of the last connection ping.
    pub rtt: Option<Duration>,
    /// Time since the last connection pong (while connected).
    pub last_pong_age: Option<Duration>,
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
