//! What the replay tests: a [`Subject`] is one grid node seen from the
//! outside: the sans-IO core on a clock the replay controls, or a driver on
//! real time and a real socket.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::{Capacities, HandlerId, SubrouteId, Timestamp};

use crate::core_subject::CoreSubject;
use crate::driver_subject::DriverSubject;
use crate::node::RuntimeKind;
use crate::script::{Answers, Script};

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
    /// The grid route (the upgrade's path).
    pub route: String,
    /// Real-time subjects: the connection ping interval to use instead of
    /// the default (the replay shortens it when the subject must ping, so
    /// it need not sit idle for 10 s).
    pub ping_interval: Option<Duration>,
    /// Real-time subjects: how long to wait for anything the subject should
    /// do (dial, answer, put a call on the wire).
    pub wait: Duration,
    /// The subject runs on real time (a driver), not on the replay's clock.
    pub real_time: bool,
    /// What the recorded applications did.
    pub script: Arc<Script>,
    /// How the subject's application answers the other side's calls.
    pub answers: Arc<Answers>,
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
        /// Virtual-time subjects: how much later than `deadline_ms` the
        /// local deadline lies (under 1 ms, so `DeadlineMS` is unchanged),
        /// to fire where the recorded caller's did.
        deadline_slack: Duration,
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
/// backwards. A virtual-time subject (the core) has every frame it sent
/// because of a method ready in [`Subject::poll_sent`] when the method
/// returns. A real-time subject (a driver) runs on its own clock and
/// timers: it has no [`Subject::poll_timeout`], its calls return once what
/// they cause is on the wire, and the replay waits for the rest with
/// [`Subject::wait_sent`].
///
/// The subject's application answers the calls the other peer makes as the
/// recording says ([`SubjectSetup::answers`], see [`crate::scripted`]).
pub trait Subject {
    /// When the subject next needs [`Subject::handle_timeout`], if ever.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Runs the subject's timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// Dialer: the WebSocket upgrade succeeded (`Some(wall)`: start the
    /// handshake with the wall clock at `now`) or was refused (`None`).
    /// Fails if the subject's side of the upgrade is wrong or missing.
    fn transport_opened(&mut self, now: Instant, wall: Option<Timestamp>) -> Result<(), String>;

    /// Acceptor: the other peer sent its upgrade request (the recorded
    /// text). A subject that speaks HTTP is dialed now; the core ignores it.
    fn upgrade_requested(&mut self, now: Instant, request: &str) -> Result<(), String> {
        let _ = (now, request);
        Ok(())
    }

    /// The other peer closed the transport.
    fn transport_closed(&mut self, now: Instant);

    /// A WebSocket binary frame from the other peer (for an acceptor, the
    /// first one is the `Connect`). Fails if it cannot be delivered.
    fn receive(&mut self, now: Instant, frame: Bytes) -> Result<(), String>;

    /// Makes the subject's application call, or says why it could not.
    ///
    /// For a new call ([`AppCall::Request`], [`AppCall::OpenStream`]) it
    /// may return the mux id the subject picked; if it returns `None`, the
    /// replay takes the id from the subject's next opening message of that
    /// kind (calls must then go on the wire in the order they were made).
    fn call(&mut self, now: Instant, call: &AppCall) -> Result<Option<u64>, String>;

    /// The next WebSocket binary frame the subject sent.
    fn poll_sent(&mut self) -> Option<Bytes>;

    /// Real-time subjects: waits up to `timeout` for the subject to send
    /// another frame; returns whether one is ready for
    /// [`Subject::poll_sent`]. A virtual-time subject sends nothing unless
    /// the replay acts, so the default returns `false` at once.
    fn wait_sent(&mut self, timeout: Duration) -> bool {
        let _ = timeout;
        false
    }
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

    /// Whether the target runs on real time (a driver).
    pub fn is_real_time(self) -> bool {
        self != Target::Core
    }

    /// The runtime of a driver target.
    pub fn runtime(self) -> Option<RuntimeKind> {
        match self {
            Target::Core => None,
            Target::Tokio => Some(RuntimeKind::Tokio),
            Target::Smol => Some(RuntimeKind::Smol),
        }
    }

    /// A fresh subject of this target (a driver's is started: listening or
    /// dialing), or why it could not be created.
    pub fn subject(self, setup: &SubjectSetup) -> Result<Box<dyn Subject>, String> {
        match self.runtime() {
            None => Ok(Box::new(CoreSubject::new(setup))),
            Some(kind) => Ok(Box::new(DriverSubject::new(kind, setup)?)),
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
