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
use tungstenite::handshake::server::{
    Callback, ErrorResponse, Request as UpgradeRequest, Response as UpgradeResponse,
};
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;

use crate::config::Config;
use crate::connection::Connection as Core;
use crate::dial::should_dial;
use crate::driver::conn::Connection;
use crate::driver::conn_shared::ConnShared;
use crate::driver::error::{AcceptError, ConfigError};
use crate::driver::mailbox::Mailbox;
use crate::driver::manager_shared::ManagerShared;
use crate::driver::options::Options;
use crate::driver::refusals::{RefusalLog, Refusals};
use crate::driver::registry::Registry;
use crate::driver::runtime::Runtime;
use crate::driver::task::{ConnTask, Incoming};
use crate::handshake::{HandshakeError, IncomingHandshake};
use crate::payload::InstanceId;
use crate::state::State;
use crate::stats::{Stats, StatsTotal};
use crate::time::Timestamp;
use crate::upgrade::{self, UpgradeError, ws_url};

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
            registry: Registry::new(options.connection.capacities.clone()),
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
            let cfg = Config {
                local_host: local.to_string(),
                remote_host: remote.to_string(),
                seed: seed.wrapping_add(i as u64 + 1),
                settings: shared.options.connection.clone(),
            };
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

    /// The WebSocket settings grid needs (message size limits raised to
    /// `Options::connection.max_message_size`, a large write buffer): use them when
    /// upgrading a connection yourself.
    pub fn websocket_config(&self) -> WebSocketConfig {
        self.inner.shared.ws_config()
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
        upgrade::check_upgrade(&checked, &opts.route, clock, |t| {
            self.inner.shared.validate_token(t)
        })
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
            shared.options.connection.handshake_timeout,
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
                        |t| shared.validate_token(t),
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

/// Compile-time check: `accept` can run on a multi-threaded executor.
#[allow(dead_code)]
fn _accept_is_send<R: Runtime>(
    m: &Manager<R>,
    s: R::Socket,
) -> impl Future<Output = Result<(), AcceptError>> + Send + '_ {
    m.accept(s)
}
