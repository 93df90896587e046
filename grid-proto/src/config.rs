//! Connection configuration: timers with Go's defaults, limits that keep
//! memory bounded, and the stream capacity table.

use std::time::Duration;

use hashbrown::HashMap;

use crate::capacities::Capacities;
use crate::handler::HandlerId;
use crate::merge::DEFAULT_MAX_MESSAGE_SIZE;
use crate::subroute::SubrouteId;

/// The callee capacities a caller assumes per handler (and subroute), so it
/// sizes its windows like the remote handler (docs/protocol.md#streams-capacities,
/// docs/protocol.md#appendix-capacities).
#[derive(Debug, Clone)]
pub struct CapacityTable {
    by_handler: HashMap<HandlerId, Capacities>,
    by_subroute: HashMap<SubrouteId, Capacities>,
}

impl Default for CapacityTable {
    /// MinIO's streaming handlers with the capacities MinIO registers them
    /// with (the catalogue's streams, docs/protocol.md#appendix-capacities:
    /// WalkDir, NSScanner, Trace, Listen, ConsoleLog, ListDir, CheckParts3,
    /// none of which take input). Any other stream handler a node calls
    /// needs its capacities set here, or given per call.
    fn default() -> Self {
        let mut t = CapacityTable::empty();
        for info in &crate::catalogue::CATALOGUE {
            if let Some(caps) = info.stream {
                t.set(info.id, caps);
            }
        }
        t
    }
}

impl CapacityTable {
    /// A table with no entries.
    pub fn empty() -> CapacityTable {
        CapacityTable {
            by_handler: HashMap::new(),
            by_subroute: HashMap::new(),
        }
    }

    /// Sets the capacities of `handler` (on every subroute without its own entry).
    pub fn set(&mut self, handler: HandlerId, caps: Capacities) {
        self.by_handler.insert(handler, caps);
    }

    /// Sets the capacities of a handler on one subroute.
    pub fn set_subroute(&mut self, sub: SubrouteId, caps: Capacities) {
        self.by_subroute.insert(sub, caps);
    }

    /// The capacities to use when calling `handler` (on `sub`), if known.
    pub fn get(&self, handler: HandlerId, sub: Option<&SubrouteId>) -> Option<Capacities> {
        sub.and_then(|s| self.by_subroute.get(s))
            .or_else(|| self.by_handler.get(&handler))
            .copied()
    }
}

/// How a dialer spaces its attempts after a failure (see
/// [`crate::DialFailure::is_rejection`] for which failures are which).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Spacing of attempts while the peer cannot be reached (refused,
    /// reset, timed out): each delay is drawn from
    /// `[retry * (1 - jitter), retry]`, so a peer that comes back is found
    /// within `retry`.
    pub retry: Duration,
    /// Delay before the first retry after the peer refused us.
    pub initial: Duration,
    /// Upper bound of the delay after refusals.
    pub max: Duration,
    /// Growth factor per consecutive refusal.
    pub multiplier: f64,
    /// Random spread: a refusal's delay is scaled by a factor uniform in
    /// `[1 - jitter, 1 + jitter)`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// An unreachable peer is tried every 0.72–0.9 s; a refusing one after
    /// 1 s ± 20 %, doubling per refusal up to 30 s.
    fn default() -> Self {
        Backoff {
            retry: Duration::from_millis(900),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// The timers and limits of a connection, the same for every connection
/// of a node (a driver's manager takes one for all of them); the defaults
/// are Go's timers and this crate's limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connection ping interval (Go: 10 s).
    pub ping_interval: Duration,
    /// A connection with no pong for longer than this is lost (Go: 20 s).
    pub pong_timeout: Duration,
    /// How long the dialer waits for `ConnectResponse` (and the acceptor for
    /// `Connect`).
    pub handshake_timeout: Duration,
    /// Timeout of single requests made without a deadline (Go: 60 s).
    pub default_request_timeout: Duration,
    /// Largest frame accepted from the peer; larger drops the connection.
    pub max_message_size: usize,
    /// Most streams the peer may have open towards us at once; more are
    /// refused with a `MuxConnectError`.
    pub max_incoming_streams: usize,
    /// Most single requests of the peer being served at once; more are
    /// refused with a `MuxConnectError`.
    pub max_incoming_requests: usize,
    /// Most bytes of queued outgoing frames before new requests, streams and
    /// stream messages are refused with [`crate::CallError::QueueFull`] /
    /// [`crate::SendError::QueueFull`]. The driver also stops reading from
    /// the peer while more than this is queued.
    pub max_queued_bytes: usize,
    /// Callee capacities assumed when calling a handler.
    pub capacities: CapacityTable,
    /// Retry spacing of the dialer.
    pub backoff: Backoff,
    /// Send `DisconnectServerMux` where Go sends `DisconnectClientMux` for an
    /// unknown caller-side mux (docs/protocol.md#quirk-q2-unknown-mux-reply, a
    /// deliberate deviation).
    pub fix_q2: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            default_request_timeout: Duration::from_secs(60),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_incoming_streams: 16_384,
            max_incoming_requests: 65_536,
            max_queued_bytes: 256 << 20,
            capacities: CapacityTable::default(),
            backoff: Backoff::default(),
            fix_q2: true,
        }
    }
}

/// Everything a [`crate::Connection`] needs to know up front: which pair of
/// hosts it joins, the seed of its randomness, and its [`Settings`].
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's host string (e.g. `http://10.0.0.1:9000`).
    pub local_host: String,
    /// The remote node's host string.
    pub remote_host: String,
    /// Seed for all randomness (instance id, jitter): same seed, same run.
    pub seed: u64,
    /// Timers and limits.
    pub settings: Settings,
}

impl Config {
    /// A configuration with seed 0 and the default [`Settings`].
    pub fn new(local_host: impl Into<String>, remote_host: impl Into<String>) -> Config {
        Config {
            local_host: local_host.into(),
            remote_host: remote_host.into(),
            seed: 0,
            settings: Settings::default(),
        }
    }
}
