//! What the replay tests: a [`Subject`] is one grid node (the sans-IO core
//! today, a driver later) seen from the outside, on a clock the replay
//! controls.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use bytes::Bytes;
use grid_proto::{Capacities, HandlerId, SubrouteId, Timestamp};

use crate::core_subject::CoreSubject;

/// Everything a subject needs to be created.
#[derive(Debug, Clone)]
pub struct SubjectSetup {
    /// The subject's grid host name.
    pub local_host: String,
    /// The other peer's host name (the one the replay plays).
    pub remote_host: String,
    /// The auth token both sides use.
    pub token: String,
    /// The start of the virtual clock.
    pub start: Instant,
    /// The wall clock at `start`.
    pub wall: Timestamp,
}

/// A call the subject's application makes, derived from a recorded message
/// of the calling side. Streams are named by the wire mux id the subject
/// chose when it opened them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCall {
    /// A single request (`Request`).
    Request {
        /// The handler.
        handler: HandlerId,
        /// The subroute, if any.
        subroute: Option<SubrouteId>,
        /// The payload.
        payload: Bytes,
        /// `DeadlineMS`; `None` for the default (60 s, sent as 60000).
        deadline_ms: Option<u32>,
    },
    /// Opens a stream (`ConnectMux`).
    OpenStream {
        /// The handler.
        handler: HandlerId,
        /// The subroute, if any.
        subroute: Option<SubrouteId>,
        /// The initial payload (`None`: absent).
        payload: Option<Bytes>,
        /// `DeadlineMS`; `None` for no deadline.
        deadline_ms: Option<u32>,
        /// The callee handler's capacities.
        capacities: Capacities,
    },
    /// Sends a message on a stream (`MuxClientMsg`).
    Send {
        /// The stream's mux id.
        mux: u64,
        /// The message.
        payload: Bytes,
    },
    /// Ends the stream's input (`MuxClientMsg` with EOF).
    CloseInput {
        /// The stream's mux id.
        mux: u64,
    },
    /// The application took one stream message (`UnblockSrvMux`).
    Consume {
        /// The stream's mux id.
        mux: u64,
    },
    /// Cancels a call (`DisconnectServerMux` with a sequence number).
    Cancel {
        /// The call's mux id.
        mux: u64,
    },
}

/// A grid node under test.
///
/// The replay owns the clock: every method takes `now`, which never goes
/// backwards. After any method returns, the frames the subject sent because
/// of it must be available from [`Subject::poll_sent`]: an asynchronous
/// subject waits until it is idle before returning.
///
/// The subject serves the transcripts' handler table
/// ([`grid_proto::sim::RefPeer`]) for calls the other peer makes.
pub trait Subject {
    /// When the subject next needs [`Subject::handle_timeout`], if ever.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Runs the subject's timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// Dialer: the WebSocket upgrade succeeded (`Some(wall)`: start the
    /// handshake with the wall clock at `now`) or was refused (`None`).
    fn transport_opened(&mut self, now: Instant, wall: Option<Timestamp>);

    /// The other peer closed the transport.
    fn transport_closed(&mut self, now: Instant);

    /// A WebSocket binary frame from the other peer (for an acceptor, the
    /// first one is the `Connect`).
    fn receive(&mut self, now: Instant, frame: Bytes);

    /// Makes the subject's application call, or says why it could not.
    ///
    /// For a new call ([`AppCall::Request`], [`AppCall::OpenStream`]) it
    /// may return the mux id the subject picked; if it returns `None`, the
    /// replay takes the id from the subject's next opening message of that
    /// kind (calls must then go on the wire in the order they were made).
    fn call(&mut self, now: Instant, call: &AppCall) -> Result<Option<u64>, String>;

    /// The next WebSocket binary frame the subject sent.
    fn poll_sent(&mut self) -> Option<Bytes>;
}

/// Which implementation to replay against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The sans-IO core, `grid-proto`.
    Core,
    /// The tokio driver, `grid-tokio`.
    Tokio,
    /// The smol driver, `grid-smol`.
    Smol,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 3] = [Target::Core, Target::Tokio, Target::Smol];

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Target::Core => "core",
            Target::Tokio => "tokio",
            Target::Smol => "smol",
        }
    }

    /// Whether this build can replay against the target.
    pub fn is_available(self) -> bool {
        self == Target::Core
    }

    /// A fresh subject of this target, `None` if the target is not available.
    pub fn subject(self, setup: &SubjectSetup) -> Option<Box<dyn Subject>> {
        match self {
            Target::Core => Some(Box::new(CoreSubject::new(setup))),
            // The drivers plug in here once they exist.
            Target::Tokio | Target::Smol => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown target {s:?} (core, tokio, smol)"))
    }
}
