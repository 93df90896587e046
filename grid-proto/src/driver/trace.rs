//! One record per call, in both directions, handed to the application's
//! hook ([`Options::trace`](crate::driver::Options::trace)): what Go's
//! `TraceTo` publishes (handler, subroute, hosts, start and duration,
//! sizes, error), for the requests and streams this node makes and for
//! those it serves.
//!
//! The connection task keeps a small entry per live call only while a hook
//! is set; without one every method here returns at once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hashbrown::HashMap;
use tracing::{debug, error};

use crate::connection::Connection as Core;
use crate::driver::conn_shared::{ConnShared, StreamKey};
use crate::driver::isolate;
use crate::error::{CallError, CancelReason};
use crate::handler::HandlerId;
use crate::subroute::SubrouteId;

/// The application's trace hook: called once per finished call, on the
/// connection's task, so it should be quick (hand the record to a channel
/// for anything slow). A panic in it is caught and logged; the call and
/// the connection go on.
pub type TraceFn = Arc<dyn Fn(&CallTrace) + Send + Sync>;

/// Who started a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This node called the remote.
    Outgoing,
    /// The remote called this node, which served the call.
    Incoming,
}

/// What kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A single request.
    Request,
    /// A stream.
    Stream,
}

/// The subroute a call addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceRoute {
    /// Known by name: the caller's route string, or the name a stream
    /// handler was registered under.
    Name(Arc<str>),
    /// Known only by its wire id (only the hash travels); shown as hex.
    Id(SubrouteId),
}

impl fmt::Display for TraceRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceRoute::Name(name) => f.write_str(name),
            TraceRoute::Id(id) => id.0.iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

/// Payloads that went one way during a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Payloads: a request or response, a stream's initial payload, each
    /// stream message.
    pub messages: u64,
    /// Their bytes (payload bytes only, not the envelope).
    pub bytes: u64,
}

impl Transfer {
    fn add(&mut self, bytes: usize) {
        self.messages = self.messages.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }
}

/// Why a traced call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceError {
    /// Outgoing: the call failed with this error, as the caller got it
    /// ([`CallError::Remote`] carries the remote handler's text).
    Failed(CallError),
    /// Outgoing: the application dropped the call (the request future, or
    /// both halves of the stream) before it ended; the callee was told.
    Cancelled,
    /// Incoming: the handler returned this error (or panicked, and this is
    /// the text sent for it); the caller got it as a remote error.
    Handler(String),
    /// Incoming: no handler is registered for the call's handler and
    /// subroute; the caller was refused.
    NoHandler,
    /// Incoming: the call was ended before the handler finished: the
    /// caller cancelled it, its deadline passed, the connection was lost.
    Ended(CancelReason),
}

impl TraceError {
    /// Whether the error came from the remote side of the call (as Go's
    /// trace tells a remote error, status 400, from a local one, 500).
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            TraceError::Failed(CallError::Remote(_) | CallError::Refused(_))
                | TraceError::Handler(_)
                | TraceError::NoHandler
        )
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Failed(e) => fmt::Display::fmt(e, f),
            TraceError::Cancelled => f.write_str("cancelled by the caller"),
            TraceError::Handler(text) => f.write_str(text),
            TraceError::NoHandler => f.write_str("no handler registered"),
            TraceError::Ended(reason) => fmt::Display::fmt(reason, f),
        }
    }
}

impl std::error::Error for TraceError {}

/// One finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallTrace {
    /// Who started it.
    pub direction: Direction,
    /// Request or stream.
    pub kind: CallKind,
    /// The handler addressed (its `Display` is MinIO's name).
    pub handler: HandlerId,
    /// The subroute addressed, if any.
    pub subroute: Option<TraceRoute>,
    /// This node's host string.
    pub local: Arc<str>,
    /// The other node's host string.
    pub remote: Arc<str>,
    /// When the connection took the call (outgoing) or the call arrived
    /// (incoming), by the wall clock.
    pub start: SystemTime,
    /// From `start` until the call ended.
    pub duration: Duration,
    /// What went from the caller to the callee: the request, or the
    /// stream's initial payload and the caller's messages.
    pub request: Transfer,
    /// What came back: the response, or the callee's stream messages.
    pub response: Transfer,
    /// `None` when the call succeeded.
    pub error: Option<TraceError>,
}

impl CallTrace {
    /// Go's name for the call: `<family>.<HandlerName>`, e.g.
    /// `storageR.DiskInfo` (see [`handler_family`]).
    pub fn name(&self) -> String {
        format!("{}.{}", handler_family(self.handler), self.handler)
    }

    /// The status Go's trace gives the call: 200 for success, 400 for an
    /// error from the remote side, 500 for a local one.
    pub fn status(&self) -> u16 {
        match &self.error {
            None => 200,
            Some(e) if e.is_remote() => 400,
            Some(_) => 500,
        }
    }
}

/// The family prefix MinIO's traces put before a handler's name: `lockR`,
/// `storageR`, `bootstrap`, `peer`, `peerS3`, `heal`, and `grid` for every
/// handler outside MinIO's table (the test handlers, unknown ids).
pub fn handler_family(handler: HandlerId) -> &'static str {
    match handler.0 {
        1..=6 => "lockR",
        7..=20 | 64 | 70 | 72..=75 | 77 => "storageR",
        21 => "bootstrap",
        39 => "heal",
        40..=42 | 71 => "peerS3",
        22..=38 | 43..=63 | 65..=69 | 76 => "peer",
        _ => "grid",
    }
}

/// How a call ended, as the task sees it (borrowed: turned into a
/// [`TraceError`] only when a record is made).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    Ok,
    Failed(&'a CallError),
    Cancelled,
    Handler(&'a str),
    NoHandler,
    Ended(&'a CancelReason),
}

impl Outcome<'_> {
    fn to_error(self) -> Option<TraceError> {
        match self {
            Outcome::Ok => None,
            Outcome::Failed(e) => Some(TraceError::Failed(e.clone())),
            Outcome::Cancelled => Some(TraceError::Cancelled),
            Outcome::Handler(text) => Some(TraceError::Handler(text.to_owned())),
            Outcome::NoHandler => Some(TraceError::NoHandler),
            Outcome::Ended(reason) => Some(TraceError::Ended(reason.clone())),
        }
    }
}

/// A call being traced.
#[derive(Debug)]
struct Live {
    kind: CallKind,
    handler: HandlerId,
    subroute: Option<TraceRoute>,
    start: Instant,
    request: Transfer,
    response: Transfer,
}

/// The calls of one connection being traced, and the hook.
pub(crate) struct Tracer {
    hook: Option<TraceFn>,
    live: HashMap<StreamKey, Live>,
    /// The hook panicked before: later panics are logged at debug level.
    hook_panicked: bool,
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("on", &self.hook.is_some())
            .field("live", &self.live.len())
            .finish()
    }
}

fn route(name: Option<&Arc<str>>, id: Option<SubrouteId>) -> Option<TraceRoute> {
    name.map(|n| TraceRoute::Name(Arc::clone(n)))
        .or(id.map(TraceRoute::Id))
}

/// A call's direction follows from the table it lives in.
fn direction(key: StreamKey) -> Direction {
    match key {
        StreamKey::Call(_) => Direction::Outgoing,
        StreamKey::Incoming(_) => Direction::Incoming,
    }
}

impl Tracer {
    pub(crate) fn new(hook: Option<TraceFn>) -> Tracer {
        Tracer {
            hook,
            live: HashMap::new(),
            hook_panicked: false,
        }
    }

    /// Whether a hook is set (else nothing is traced).
    pub(crate) fn is_on(&self) -> bool {
        self.hook.is_some()
    }

    /// A call began at `now`; `payload` is the size of the request or the
    /// stream's initial payload (`None`: the stream has none).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        key: StreamKey,
        kind: CallKind,
        handler: HandlerId,
        name: Option<&Arc<str>>,
        id: Option<SubrouteId>,
        now: Instant,
        payload: Option<usize>,
    ) {
        if self.hook.is_none() {
            return;
        }
        let mut request = Transfer::default();
        if let Some(len) = payload {
            request.add(len);
        }
        let live = Live {
            kind,
            handler,
            subroute: route(name, id),
            start: now,
            request,
            response: Transfer::default(),
        };
        self.live.insert(key, live);
    }

    /// The call's subroute turned out to have a name (a stream handler
    /// registered under one).
    pub(crate) fn name_route(&mut self, key: StreamKey, name: Option<&Arc<str>>) {
        if let (Some(live), Some(name)) = (self.get(key), name) {
            live.subroute = Some(TraceRoute::Name(Arc::clone(name)));
        }
    }

    /// This side sent a payload of `len` bytes on the call.
    pub(crate) fn sent(&mut self, key: StreamKey, len: usize) {
        if let Some(live) = self.get(key) {
            match key {
                StreamKey::Call(_) => live.request.add(len),
                StreamKey::Incoming(_) => live.response.add(len),
            }
        }
    }

    /// This side received a payload of `len` bytes on the call.
    pub(crate) fn received(&mut self, key: StreamKey, len: usize) {
        if let Some(live) = self.get(key) {
            match key {
                StreamKey::Call(_) => live.response.add(len),
                StreamKey::Incoming(_) => live.request.add(len),
            }
        }
    }

    fn get(&mut self, key: StreamKey) -> Option<&mut Live> {
        // Without a hook nothing is traced: skip hashing the key.
        self.hook.as_ref()?;
        self.live.get_mut(&key)
    }

    /// The call ended: hands its record to the hook. Only the first end
    /// of a call counts (a late answer after a cancel is no second call).
    pub(crate) fn end(
        &mut self,
        key: StreamKey,
        now: Instant,
        outcome: Outcome<'_>,
        conn: &ConnShared,
        core: &Core,
    ) {
        if self.hook.is_none() {
            return;
        }
        if let Some(live) = self.live.remove(&key) {
            self.emit(direction(key), live, now, outcome, conn, core);
        }
    }

    /// A call that ended as soon as it was made (refused before it went
    /// out: not connected, queue full, too large...).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn refused(
        &mut self,
        kind: CallKind,
        handler: HandlerId,
        name: Option<&Arc<str>>,
        id: Option<SubrouteId>,
        now: Instant,
        payload: Option<usize>,
        error: &CallError,
        conn: &ConnShared,
        core: &Core,
    ) {
        if self.hook.is_none() {
            return;
        }
        let mut request = Transfer::default();
        if let Some(len) = payload {
            request.add(len);
        }
        let live = Live {
            kind,
            handler,
            subroute: route(name, id),
            start: now,
            request,
            response: Transfer::default(),
        };
        self.emit(
            Direction::Outgoing,
            live,
            now,
            Outcome::Failed(error),
            conn,
            core,
        );
    }

    /// Ends every call still traced (the task is finishing or dying), in
    /// call order; `outcome` says how each ended.
    pub(crate) fn end_all(
        &mut self,
        now: Instant,
        outcome: impl Fn(StreamKey) -> Outcome<'static>,
        conn: &ConnShared,
        core: &Core,
    ) {
        if self.live.is_empty() {
            return;
        }
        let mut keys: Vec<StreamKey> = self.live.keys().copied().collect();
        keys.sort_unstable_by_key(|k| match *k {
            StreamKey::Call(id) => (0, id),
            StreamKey::Incoming(id) => (1, id),
        });
        for key in keys {
            self.end(key, now, outcome(key), conn, core);
        }
    }

    fn emit(
        &mut self,
        direction: Direction,
        live: Live,
        now: Instant,
        outcome: Outcome<'_>,
        conn: &ConnShared,
        core: &Core,
    ) {
        let Some(hook) = self.hook.as_ref() else {
            return;
        };
        let record = CallTrace {
            direction,
            kind: live.kind,
            handler: live.handler,
            subroute: live.subroute,
            local: Arc::clone(&conn.local),
            remote: Arc::clone(&conn.remote),
            start: core.wall_clock(live.start).to_system_time(),
            duration: now.saturating_duration_since(live.start),
            request: live.request,
            response: live.response,
            error: outcome.to_error(),
        };
        if let Err(panic) = isolate::call(|| hook(&record)) {
            if self.hook_panicked {
                debug!(remote = %conn.remote, %panic, "the trace hook panicked again");
            } else {
                error!(remote = %conn.remote, %panic, "the trace hook panicked; the call and the connection go on");
                self.hook_panicked = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_minio_prefixes() {
        let family = |id| handler_family(HandlerId(id));
        assert_eq!(family(1), "lockR");
        assert_eq!(family(9), "storageR");
        assert_eq!(family(21), "bootstrap");
        assert_eq!(family(22), "peer");
        assert_eq!(family(39), "heal");
        assert_eq!(family(40), "peerS3");
        assert_eq!(family(64), "storageR");
        assert_eq!(family(71), "peerS3");
        assert_eq!(family(78), "grid");
        assert_eq!(family(0), "grid");
        assert_eq!(family(200), "grid");
    }

    #[test]
    fn a_route_known_only_by_id_shows_as_hex() {
        let id = SubrouteId::zero(HandlerId(9));
        let shown = TraceRoute::Id(id).to_string();
        assert_eq!(shown.len(), 64);
        assert!(shown.starts_with("0900"));
        assert_eq!(
            TraceRoute::Name(Arc::from("/mnt/d1")).to_string(),
            "/mnt/d1"
        );
    }

    #[test]
    fn status_tells_remote_from_local_errors() {
        let status = |error| {
            CallTrace {
                direction: Direction::Outgoing,
                kind: CallKind::Request,
                handler: HandlerId(9),
                subroute: None,
                local: Arc::from("a"),
                remote: Arc::from("b"),
                start: SystemTime::UNIX_EPOCH,
                duration: Duration::ZERO,
                request: Transfer::default(),
                response: Transfer::default(),
                error,
            }
            .status()
        };
        assert_eq!(status(None), 200);
        let remote = TraceError::Failed(CallError::Remote("no".into()));
        assert_eq!(status(Some(remote)), 400);
        assert_eq!(status(Some(TraceError::Handler("no".into()))), 400);
        assert_eq!(
            status(Some(TraceError::Failed(CallError::Disconnected))),
            500
        );
        assert_eq!(status(Some(TraceError::Cancelled)), 500);
    }
}
