//! The manager: one per grid per node. It holds the host list, the handler
//! registry and the auth hooks, owns one connection task per remote host,
//! and takes incoming WebSockets.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::{Either, select};
use futures_util::{SinkExt, StreamExt};
use hashbrown::HashMap;
use tungstenite::Message as WsMessage;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::handshake::server::{
    Callback, ErrorResponse, Request as UpgradeRequest, Response as UpgradeResponse,
};
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;

use crate::capacities::Capacities;
use crate::config::{Backoff, CapacityTable, Config};
use crate::connection::Connection as Core;
use crate::dial::should_dial;
use crate::driver::conn::Connection;
use crate::driver::conn_shared::ConnShared;
use crate::driver::context::HandlerContext;
use crate::driver::isolate;
use crate::driver::mailbox::Mailbox;
#[cfg(feature = "recorder")]
use crate::driver::recorder::Recorder;
use crate::driver::refusals::{RefusalLog, Refusals};
use crate::driver::registry::{RegisterError, Registry, RemoteError, StreamCall};
use crate::driver::runtime::Runtime;
use crate::driver::task::{ConnTask, Incoming};
use crate::driver::trace::TraceFn;
use crate::handler::HandlerId;
use crate::handshake::{HandshakeError, IncomingHandshake};
use crate::payload::InstanceId;
use crate::state::State;
use crate::stats::{Stats, StatsTotal};
use crate::subroute::Subroute;
use crate::time::Timestamp;
use crate::upgrade;
pub use crate::upgrade::{DEFAULT_ROUTE, LOCK_ROUTE, MAX_HTTP_CLOCK_SKEW, UpgradeError, ws_url};

/// The check of an incoming upgrade request, as a tungstenite server
/// callback (see [`Manager::upgrade_check`]).
pub struct UpgradeCheck<'a, R: Runtime> {
    manager: &'a Manager<R>,
}

impl<R: Runtime> fmt::Debug for UpgradeCheck<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeCheck").finish_non_exhaustive()
    }
}

impl<R: Runtime> Callback for UpgradeCheck<'_, R> {
    fn on_request(
        self,
        request: &UpgradeRequest,
        response: UpgradeResponse,
    ) -> Result<UpgradeResponse, ErrorResponse> {
        match self.manager.check_upgrade(request) {
            Ok(()) => Ok(response),
            Err(e) => {
                // A bare status, as MinIO answers: the reason is logged and
                // counted here, not told to whoever knocked.
                let mut refusal = ErrorResponse::new(None);
                *refusal.status_mut() =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
                Err(refusal)
            }
        }
    }
}

/// How much tungstenite reads (and zero-fills) per read call.
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// Produces the token for an outgoing connection to the given host.
pub type AuthFn = Arc<dyn Fn(&str) -> String + Send + Sync>;
/// Validates the token of an incoming connection.
pub type ValidateFn = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Manager settings; [`Options::default`] has Go's values.
#[derive(Clone)]
pub struct Options {
    /// The HTTP path of the grid (default [`DEFAULT_ROUTE`]).
    pub route: String,
    /// Token for outgoing connections (default: empty).
    pub auth_token: AuthFn,
    /// Check of incoming tokens (default: accept any).
    pub validate_token: ValidateFn,
    /// Dial + upgrade timeout (Go: 2 s).
    pub dial_timeout: Duration,
    /// A write blocked this long drops the connection (Go: about 4 s).
    pub write_timeout: Duration,
    /// How long an acceptor waits for the HTTP upgrade and then for
    /// `Connect`, and a dialer for the answer.
    pub handshake_timeout: Duration,
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Limits and timers of each connection's core (hosts are filled in).
    pub core: Config,
    /// Reconnect spacing.
    pub backoff: Backoff,
    /// Check `X-Minio-Time` on incoming upgrades (MinIO's 15 min rule).
    pub check_upgrade_time: bool,
    /// Seed of the managers' randomness (instance id, jitter); `None`: from
    /// the clock.
    pub seed: Option<u64>,
    /// Record every connection in the transcript format of the
    /// conformance suite (default: off; see [`Recorder`]).
    #[cfg(feature = "recorder")]
    pub recorder: Option<Recorder>,
    /// Called with a record of every call, made or served, when it ends
    /// (Go's `TraceTo`; default: off, and then tracing costs nothing). A
    /// call refused by its handle before it reached the connection (not
    /// connected, shutting down) leaves no record, as in Go.
    pub trace: Option<TraceFn>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Options");
        d.field("route", &self.route)
            .field("dial_timeout", &self.dial_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("trace", &self.trace.is_some());
        #[cfg(feature = "recorder")]
        d.field("recorder", &self.recorder.is_some());
        d.finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        let core = Config::new("", "");
        Options {
            route: DEFAULT_ROUTE.to_owned(),
            auth_token: Arc::new(|_| String::new()),
            validate_token: Arc::new(|_| Ok(())),
            dial_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(4),
            handshake_timeout: core.handshake_timeout,
            max_message_size: core.max_message_size,
            backoff: core.backoff,
            core,
            check_upgrade_time: true,
            seed: None,
            #[cfg(feature = "recorder")]
            recorder: None,
            trace: None,
        }
    }
}

/// Why a manager could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The local host is not in the host list, or appears twice.
    LocalHost(String),
    /// A host appears twice.
    DuplicateHost(String),
    /// A host string is not an `http://`, `https://`, `ws://` or `wss://` URL.
    BadHost(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::LocalHost(h) => write!(
                f,
                "local host {h} must appear exactly once in the host list"
            ),
            ConfigError::DuplicateHost(h) => write!(f, "host {h} appears twice"),
            ConfigError::BadHost(h) => write!(f, "host {h} is not an http(s):// or ws(s):// URL"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why an incoming connection was not taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptError {
    /// The handshake was refused (the peer was told why).
    Handshake(HandshakeError),
    /// The peer did not finish the upgrade, or send `Connect`, in time
    /// ([`Options::handshake_timeout`] each).
    Timeout,
    /// The transport failed or closed during the handshake.
    Transport(String),
    /// The manager is shut down.
    Shutdown,
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Handshake(e) => write!(f, "handshake refused: {e}"),
            AcceptError::Timeout => f.write_str("handshake timed out"),
            AcceptError::Transport(e) => write!(f, "transport: {e}"),
            AcceptError::Shutdown => f.write_str("manager shut down"),
        }
    }
}

impl std::error::Error for AcceptError {}

/// What connection tasks share with their manager (not runtime-specific).
pub(crate) struct ManagerShared {
    pub(crate) local: Arc<str>,
    pub(crate) options: Options,
    pub(crate) registry: Registry,
    pub(crate) refusals: RefusalLog,
}

impl ManagerShared {
    /// The upgrade request to `remote`: its URL with the route, the bearer
    /// token and `X-Minio-Time`, as Go sends them.
    pub(crate) fn dial_request(
        &self,
        remote: &str,
        token: &str,
        wall: SystemTime,
    ) -> Result<Request, String> {
        let url =
            ws_url(remote, &self.options.route).ok_or_else(|| format!("bad host {remote}"))?;
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        let wall = Timestamp::from_system_time(wall);
        for (name, value) in upgrade::dial_headers(token, wall) {
            let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            req.headers_mut().insert(name, value);
        }
        Ok(req)
    }

    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        let max = self.options.max_message_size;
        // tungstenite zero-fills up to `read_buffer_size` before every read
        // attempt; its 128 KiB default made that memset the top cost of small
        // messages. 16 KiB keeps it small and still reads many messages at once.
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_SIZE)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .write_buffer_size(128 * 1024)
            .max_write_buffer_size(usize::MAX)
    }
}

struct Peer<R: Runtime> {
    handle: Connection,
    incoming: Arc<Mailbox<Incoming<R::Socket>>>,
    task: Mutex<Option<ConnTask<R>>>,
}

struct Inner<R: Runtime> {
    rt: R,
    shared: Arc<ManagerShared>,
    instance_id: InstanceId,
    peers: HashMap<Arc<str>, Peer<R>>,
    started: AtomicBool,
}

/// A grid manager: build one with [`Manager::new`], register handlers,
/// [`start`](Manager::start) it, then call other hosts through
/// [`connection`](Manager::connection) and hand incoming WebSockets to
/// [`accept`](Manager::accept).
pub struct Manager<R: Runtime> {
    inner: Arc<Inner<R>>,
}

impl<R: Runtime> Clone for Manager<R> {
    fn clone(&self) -> Self {
        Manager {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R: Runtime> fmt::Debug for Manager<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("local", &self.inner.shared.local)
            .field("peers", &self.inner.peers.len())
            .finish()
    }
}

fn check_host(h: &str) -> Result<(), ConfigError> {
    if ws_url(h, "").is_some() {
        Ok(())
    } else {
        Err(ConfigError::BadHost(h.to_owned()))
    }
}

impl<R: Runtime> Manager<R> {
    /// A manager for `local` among `hosts` (which must include `local`
    /// once). Host strings are URLs such as `http://10.0.0.1:9000` and must
    /// be identical on every node: they decide who dials.
    pub fn new(
        rt: R,
        local: &str,
        hosts: &[impl AsRef<str>],
        options: Options,
    ) -> Result<Manager<R>, ConfigError> {
        check_host(local)?;
        let mut seen = std::collections::HashSet::new();
        for h in hosts {
            let h = h.as_ref();
            check_host(h)?;
            if !seen.insert(h.to_owned()) {
                return Err(if h == local {
                    ConfigError::LocalHost(h.to_owned())
                } else {
                    ConfigError::DuplicateHost(h.to_owned())
                });
            }
        }
        if !seen.contains(local) {
            return Err(ConfigError::LocalHost(local.to_owned()));
        }
        let seed = options.seed.unwrap_or_else(|| {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        });
        let instance_id = InstanceId::from_seed(seed);
        let local: Arc<str> = Arc::from(local);
        let shared = Arc::new(ManagerShared {
            local: Arc::clone(&local),
            registry: Registry::new(options.core.capacities.clone()),
            refusals: RefusalLog::default(),
            options,
        });
        let now = rt.now();
        let wall = Timestamp::from_system_time(rt.wall());
        let mut peers = HashMap::new();
        for (i, h) in hosts
            .iter()
            .map(AsRef::as_ref)
            .filter(|h| *h != &*local)
            .enumerate()
        {
            let remote: Arc<str> = Arc::from(h);
            let mut cfg = shared.options.core.clone();
            cfg.local_host = local.to_string();
            cfg.remote_host = remote.to_string();
            cfg.seed = seed.wrapping_add(i as u64 + 1);
            cfg.max_message_size = shared.options.max_message_size;
            cfg.handshake_timeout = shared.options.handshake_timeout;
            cfg.backoff = shared.options.backoff;
            let core = Core::new(cfg, instance_id, now, wall);
            let rt_sleep = rt.clone();
            let rt_clock = rt.clone();
            let conn_shared = Arc::new(ConnShared::new(
                Arc::clone(&local),
                Arc::clone(&remote),
                Arc::new(move |at| Box::pin(rt_sleep.sleep_until(at))),
                Arc::new(move || rt_clock.now()),
            ));
            let incoming = Arc::new(Mailbox::new());
            let task = ConnTask::new(
                rt.clone(),
                core,
                Arc::clone(&conn_shared),
                Arc::clone(&shared),
                Arc::clone(&incoming),
            );
            peers.insert(
                remote,
                Peer {
                    handle: Connection::new(conn_shared),
                    incoming,
                    task: Mutex::new(Some(task)),
                },
            );
        }
        Ok(Manager {
            inner: Arc::new(Inner {
                rt,
                shared,
                instance_id,
                peers,
                started: AtomicBool::new(false),
            }),
        })
    }

    /// This node's host string.
    pub fn local_host(&self) -> &str {
        &self.inner.shared.local
    }

    /// This manager's instance id (new on every start of the process).
    pub fn instance_id(&self) -> InstanceId {
        self.inner.instance_id
    }

    /// The remote hosts.
    pub fn remote_hosts(&self) -> impl Iterator<Item = &str> {
        self.inner.peers.keys().map(|h| &**h)
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.inner.shared.options
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.shared.registry
    }

    /// Registers a single-request handler. Its response always travels as
    /// a present payload (an empty one with `FlagPayloadIsZero`), as Go
    /// answers. For a typed handler see
    /// [`SingleHandler`](crate::driver::SingleHandler); to see the caller,
    /// the deadline or the cancellation,
    /// [`register_single_with_context`](Self::register_single_with_context).
    pub fn register_single<F, Fut>(&self, handler: HandlerId, f: F) -> Result<(), RegisterError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.registry().add_single(handler, None, move |_, p| f(p))
    }

    /// Registers a single-request handler on a subroute: a drive path such
    /// as `"/data1"` (Go also answers it on the handler's zero alias), or a
    /// [`SubrouteId`](crate::SubrouteId) as it travels.
    pub fn register_single_subroute<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: impl Into<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.registry()
            .add_single(handler, Some(subroute.into()), move |_, p| f(p))
    }

    /// Registers a single-request handler (on a subroute, if given) that
    /// also gets the call's [`HandlerContext`]: the caller's host, the
    /// subroute, the deadline and the cancellation.
    ///
    /// ```
    /// # fn demo<R: grid_proto::driver::Runtime>(manager: &grid_proto::driver::Manager<R>) {
    /// use bytes::Bytes;
    /// use grid_proto::HandlerId;
    ///
    /// manager
    ///     .register_single_with_context(HandlerId::TEST, None, |ctx, _payload| async move {
    ///         Ok(Bytes::from(format!("hello {}", ctx.caller())))
    ///     })
    ///     .unwrap();
    /// # }
    /// ```
    pub fn register_single_with_context<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(HandlerContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.registry().add_single(handler, subroute, f)
    }

    /// Registers a stream handler with its capacities (also used for this
    /// node's own calls to that handler, as in Go). The handler's
    /// [`StreamCall::context`] tells who called and when the call is
    /// cancelled. For a typed handler see
    /// [`StreamHandler`](crate::driver::StreamHandler).
    pub fn register_stream<F, Fut>(
        &self,
        handler: HandlerId,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.registry().add_stream(handler, None, capacities, f)
    }

    /// Registers a stream handler on a subroute (a route string, or a
    /// [`SubrouteId`](crate::SubrouteId) as it travels).
    pub fn register_stream_subroute<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: impl Into<Subroute>,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.registry()
            .add_stream(handler, Some(subroute.into()), capacities, f)
    }

    /// Declares the capacities of a remote stream handler this node calls
    /// but does not serve (docs/protocol.md#streams-capacities), on a
    /// subroute or on all of them.
    pub fn set_capacities(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        capacities: Capacities,
    ) {
        self.registry()
            .set_capacities(handler, subroute.as_ref(), capacities);
    }

    /// The WebSocket settings grid needs (message size limits raised to
    /// [`Options::max_message_size`], a large write buffer): use them when
    /// upgrading a connection yourself.
    pub fn websocket_config(&self) -> WebSocketConfig {
        self.inner.shared.ws_config()
    }

    /// The capacity table of this manager's calls, for inspection.
    pub fn capacities(&self, handler: HandlerId, subroute: Option<Subroute>) -> Option<Capacities> {
        let sub = subroute.map(|s| s.id(handler));
        self.registry().capacities(handler, sub.as_ref())
    }

    /// Starts the connection tasks: dialers start dialing. Calling it again
    /// does nothing.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        // In host order, not the map's (randomly seeded) order: the spawn
        // order decides who dials first, and a seeded run must repeat.
        let mut peers: Vec<_> = self.inner.peers.iter().collect();
        peers.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (remote, peer) in peers {
            if let Some(task) = peer.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                // Everything the connection task logs, and every handler it
                // spawns, is under this span.
                let span =
                    tracing::info_span!("grid", local = %self.inner.shared.local, remote = %remote);
                self.inner
                    .rt
                    .spawn(tracing::Instrument::instrument(task.supervise(), span));
            }
        }
    }

    /// The connection to `host`, if it is one of the remote hosts.
    pub fn connection(&self, host: &str) -> Option<Connection> {
        self.inner.peers.get(host).map(|p| p.handle.clone())
    }

    /// Statistics of every connection, by remote host.
    pub fn stats(&self) -> Vec<(String, Option<Stats>)> {
        let mut all: Vec<_> = self
            .inner
            .peers
            .iter()
            .map(|(h, p)| (h.to_string(), p.handle.stats()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every connection's last published stats summed up, as MinIO
    /// aggregates its RPC metrics (connections whose task has not published
    /// yet, before [`start`](Self::start), are left out).
    pub fn stats_total(&self) -> StatsTotal {
        let mut total = StatsTotal::default();
        for peer in self.inner.peers.values() {
            if let Some(s) = peer.handle.stats() {
                total.add(&s);
            }
        }
        total
    }

    /// Incoming connections refused so far, and why the latest was (the
    /// peer itself is told only "403" or a generic rejection).
    pub fn refusals(&self) -> Refusals {
        self.inner.shared.refusals.snapshot()
    }

    /// The checks of an incoming upgrade request before it is upgraded:
    /// the route, the bearer token and `X-Minio-Time` (like MinIO's). On an
    /// error, answer with [`UpgradeError::status`] and nothing more; the
    /// reason is logged and counted in [`refusals`](Self::refusals).
    pub fn check_upgrade<B>(
        &self,
        request: &tungstenite::http::Request<B>,
    ) -> Result<(), UpgradeError> {
        let checked = self.check_upgrade_quietly(request);
        if let Err(e) = &checked {
            self.inner.shared.refusals.record("upgrade", e.to_string());
        }
        checked
    }

    fn check_upgrade_quietly<B>(
        &self,
        request: &tungstenite::http::Request<B>,
    ) -> Result<(), UpgradeError> {
        let opts = &self.inner.shared.options;
        let header = |name| request.headers().get(name).map(HeaderValue::as_bytes);
        let checked = upgrade::UpgradeRequest {
            path: request.uri().path(),
            authorization: header(upgrade::AUTHORIZATION),
            minio_time: header(upgrade::MINIO_TIME),
        };
        let clock = opts
            .check_upgrade_time
            .then(|| Timestamp::from_system_time(self.inner.rt.wall()));
        upgrade::check_upgrade(&checked, &opts.route, clock, |t| validate(opts, t))
    }

    /// The upgrade callback for tungstenite's `accept_hdr_async`: runs
    /// [`check_upgrade`](Self::check_upgrade) and refuses with its status.
    pub fn upgrade_check(&self) -> UpgradeCheck<'_, R> {
        UpgradeCheck { manager: self }
    }

    /// Takes an upgraded incoming WebSocket (Go's `IncomingConn`): reads the
    /// peer's `Connect`, checks it, and hands the transport to the peer's
    /// connection task, or refuses it and closes the transport.
    pub async fn accept(&self, mut socket: R::Socket) -> Result<(), AcceptError> {
        if !self.inner.started.load(Ordering::Acquire) {
            self.start();
        }
        let rt = &self.inner.rt;
        let shared = &self.inner.shared;
        let mut handshake = IncomingHandshake::new(
            rt.now(),
            shared.options.handshake_timeout,
            &shared.local,
            self.inner.instance_id,
        );
        // The core decides on the first binary frame or at its deadline;
        // other WebSocket messages are skipped (Go reads on past them).
        let (outcome, first) = loop {
            let Some(deadline) = handshake.poll_timeout() else {
                let outcome = handshake.poll_outcome();
                break (
                    outcome.unwrap_or(Err(HandshakeError::Timeout)),
                    Bytes::new(),
                );
            };
            let next = select(socket.next(), Box::pin(rt.sleep_until(deadline))).await;
            match next {
                Either::Left((Some(Ok(WsMessage::Binary(frame))), _)) => {
                    let wall = Timestamp::from_system_time(rt.wall());
                    handshake.handle_frame(
                        &frame,
                        wall,
                        |h| self.inner.peers.contains_key(h),
                        |t| validate(&shared.options, t),
                    );
                    if let Some(outcome) = handshake.poll_outcome() {
                        break (outcome, frame);
                    }
                }
                Either::Left((Some(Ok(WsMessage::Close(_))) | None, _)) => {
                    return Err(AcceptError::Transport("closed before connect".into()));
                }
                Either::Left((Some(Ok(_)), _)) => {}
                Either::Left((Some(Err(e)), _)) => {
                    return Err(AcceptError::Transport(e.to_string()));
                }
                Either::Right(_) => handshake.handle_timeout(rt.now()),
            }
        };
        let req = match outcome {
            Ok(req) => req,
            Err(HandshakeError::Timeout) => return Err(AcceptError::Timeout),
            Err(e) => {
                shared.refusals.record("handshake", e.to_string());
                if let Some(reject) = handshake.poll_transmit() {
                    let _ = socket.send(WsMessage::Binary(reject)).await;
                }
                let _ = socket.close().await;
                return Err(AcceptError::Handshake(e));
            }
        };
        let Some(peer) = self.inner.peers.get(req.host.as_str()) else {
            return Err(AcceptError::Handshake(HandshakeError::UnknownHost(
                req.host,
            )));
        };
        debug_assert!(!should_dial(&shared.local, &req.host));
        peer.incoming
            .push((socket, req, first))
            .map_err(|_| AcceptError::Shutdown)
    }

    /// Stops for good: with `grace`, new calls are refused at once and
    /// in-flight calls get up to `grace` to finish; then every connection is
    /// closed and whatever is left fails with [`crate::CallError::Shutdown`].
    pub async fn shutdown(&self, grace: Option<Duration>) {
        for peer in self.inner.peers.values() {
            peer.handle.begin_close();
        }
        if let Some(grace) = grace {
            let rt = &self.inner.rt;
            let deadline = rt.now() + grace;
            let step = Duration::from_millis(10);
            while rt.now() < deadline && self.inner.peers.values().any(|p| p.handle.busy()) {
                rt.sleep_until((rt.now() + step).min(deadline)).await;
            }
        }
        for peer in self.inner.peers.values() {
            peer.handle.shutdown();
        }
        let rt = &self.inner.rt;
        let deadline = rt.now() + Duration::from_secs(1);
        while rt.now() < deadline
            && self
                .inner
                .peers
                .values()
                .any(|p| p.handle.state() != State::Shutdown)
        {
            rt.sleep_until(rt.now() + Duration::from_millis(1)).await;
        }
    }
}

/// Runs the application's token check; a panic in it refuses the token.
fn validate(options: &Options, token: &str) -> Result<(), String> {
    isolate::call(|| (options.validate_token)(token)).unwrap_or_else(|panic| {
        tracing::error!(%panic, "the validate_token hook panicked; refusing the token");
        Err(format!("token check panicked: {panic}"))
    })
}

/// A capacity table with MinIO's defaults, for [`Options::core`].
pub fn default_capacities() -> CapacityTable {
    CapacityTable::default()
}

/// Compile-time check: `accept` can run on a multi-threaded executor.
#[allow(dead_code)]
fn _accept_is_send<R: Runtime>(
    m: &Manager<R>,
    s: R::Socket,
) -> impl Future<Output = Result<(), AcceptError>> + Send + '_ {
    m.accept(s)
}
