//! The cluster harness: real managers on loopback, on tokio, smol or both,
//! and the bounded waits every scenario uses.
//!
//! A scenario is an `async fn(Setup)`. [`run`] gives it an executor (a
//! tokio runtime when any node runs on tokio, else `smol::block_on`) and a
//! hard time limit. Waits use async-io timers ([`smol::Timer`]), which work
//! under either executor.

use std::future::{Future, poll_fn};
use std::net::{SocketAddr, TcpListener};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::register_reference_handlers;
use grid_proto::driver::{
    Connection, Manager, Options, Refusals, RegisterError, RemoteError, Runtime, SingleHandler,
    StreamCall,
};
use grid_proto::{Backoff, Capacities, HandlerId, Settings, State, Stats, SubrouteId, should_dial};
use smol::channel::{Receiver, Sender};

/// How long anything that should happen may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// The limit of a whole scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(60);
/// The token every node sends and expects.
pub(crate) const TOKEN: &str = "drivers-test-token";

/// Which runtime a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tokio,
    Smol,
}

/// The runtimes of a two-node cluster. In the mixed setups the dial rule
/// decides which node gets which runtime, so both WebSocket client/server
/// combinations across runtimes are covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    Tokio,
    Smol,
    /// The tokio node dials the smol node.
    MixedTokioDials,
    /// The smol node dials the tokio node.
    MixedSmolDials,
}

impl Setup {
    /// The runtime of the dialing node and of the accepting node.
    fn kinds(self) -> (Kind, Kind) {
        match self {
            Setup::Tokio => (Kind::Tokio, Kind::Tokio),
            Setup::Smol => (Kind::Smol, Kind::Smol),
            Setup::MixedTokioDials => (Kind::Tokio, Kind::Smol),
            Setup::MixedSmolDials => (Kind::Smol, Kind::Tokio),
        }
    }

    fn uses_tokio(self) -> bool {
        self != Setup::Smol
    }
}

/// Runs one scenario to completion on the executor `setup` needs.
pub(crate) fn run<F, Fut>(setup: Setup, scenario: F)
where
    F: FnOnce(Setup) -> Fut,
    Fut: Future<Output = ()>,
{
    let body = within(SCENARIO_LIMIT, "the whole scenario", scenario(setup));
    if setup.uses_tokio() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(body);
    } else {
        smol::block_on(body);
    }
}

// ---- bounded waits ----

/// `fut`'s output, or a panic naming `what` if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut timer = smol::Timer::after(limit);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(_) => panic!("timed out after {limit:?}: {what}"),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// [`within`] with the default limit.
pub(crate) async fn wait<F: Future>(what: &str, fut: F) -> F::Output {
    within(WAIT, what, fut).await
}

/// Polls `cond` until it holds, panicking after [`WAIT`].
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {what}"
        );
        smol::Timer::after(Duration::from_millis(2)).await;
    }
}

/// Waits for `until` while also driving `fut`, which must not finish first
/// (e.g. a request whose remote handler must start before it is dropped).
pub(crate) async fn drive_until<F: Future, T>(
    fut: Pin<&mut F>,
    until: impl Future<Output = T>,
) -> T {
    let mut fut = fut;
    let mut until = pin!(until);
    wait(
        "the awaited event while driving a call",
        poll_fn(|cx| {
            if let Poll::Ready(v) = until.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            if fut.as_mut().poll(cx).is_ready() {
                panic!("the driven call finished before the awaited event");
            }
            Poll::Pending
        }),
    )
    .await
}

/// Runs every future concurrently on the current task; outputs in order.
pub(crate) async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}

// ---- handler probes ----

/// Reports when a handler starts and when its future is dropped (it
/// finished or was aborted): what lets a test see the remote side.
#[derive(Clone)]
pub(crate) struct Probe {
    started: (Sender<()>, Receiver<()>),
    dropped: (Sender<()>, Receiver<()>),
}

/// Held by a running handler; reports the drop.
pub(crate) struct Guard(Sender<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

impl Probe {
    pub(crate) fn new() -> Probe {
        Probe {
            started: smol::channel::unbounded(),
            dropped: smol::channel::unbounded(),
        }
    }

    /// Called by the handler when it starts; keep the guard in its future.
    pub(crate) fn enter(&self) -> Guard {
        let _ = self.started.0.try_send(());
        Guard(self.dropped.0.clone())
    }

    /// Waits until a handler has started.
    pub(crate) async fn started(&self) {
        wait("a handler to start", self.started.1.recv())
            .await
            .expect("probe open");
    }

    /// Waits until a handler's future has been dropped.
    pub(crate) async fn dropped(&self) {
        wait("a handler future to be dropped", self.dropped.1.recv())
            .await
            .expect("probe open");
    }
}

/// A gate handlers wait at until the test opens it once per handler.
#[derive(Clone)]
pub(crate) struct Gate(Sender<()>, Receiver<()>);

impl Gate {
    pub(crate) fn new() -> Gate {
        let (tx, rx) = smol::channel::unbounded();
        Gate(tx, rx)
    }

    pub(crate) async fn pass(&self) {
        self.1.recv().await.expect("gate open");
    }

    pub(crate) fn open(&self, times: usize) {
        for _ in 0..times {
            self.0.try_send(()).expect("gate open");
        }
    }
}

/// A counter shared between a handler and the test.
#[derive(Clone, Default)]
pub(crate) struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

// ---- custom handlers ----

type SingleFn =
    Arc<dyn Fn(Bytes) -> grid_proto::driver::BoxFuture<Result<Bytes, RemoteError>> + Send + Sync>;
type StreamFn =
    Arc<dyn Fn(StreamCall) -> grid_proto::driver::BoxFuture<Result<(), RemoteError>> + Send + Sync>;

type RawSingleFn = Arc<
    dyn Fn(Option<Bytes>) -> grid_proto::driver::BoxFuture<Result<Option<Bytes>, RemoteError>>
        + Send
        + Sync,
>;

/// Registers handlers on a manager of any runtime (typed descriptors need
/// the manager's concrete type).
pub(crate) trait Registration: Send + Sync + 'static {
    fn register<R: Runtime>(&self, m: &Manager<R>) -> Result<(), RegisterError>;
}

type TokioRegisterFn =
    Arc<dyn Fn(&Manager<grid_tokio::Tokio>) -> Result<(), RegisterError> + Send + Sync>;
type SmolRegisterFn =
    Arc<dyn Fn(&Manager<grid_smol::Smol>) -> Result<(), RegisterError> + Send + Sync>;

#[derive(Clone)]
enum Custom {
    /// A [`Registration`], instantiated for both runtimes.
    Any(TokioRegisterFn, SmolRegisterFn),
    Single(HandlerId, SingleFn),
    Stream(HandlerId, Capacities, StreamFn),
    Typed(HandlerId, fn(u32) -> u32),
    SingleRaw(HandlerId, Option<SubrouteId>, RawSingleFn),
    StreamRaw(HandlerId, Option<SubrouteId>, Capacities, StreamFn),
}

/// Handlers every node registers besides the transcripts' table.
#[derive(Clone, Default)]
pub(crate) struct Handlers(Vec<Custom>);

impl Handlers {
    pub(crate) fn single<F, Fut>(mut self, id: HandlerId, f: F) -> Handlers
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.0
            .push(Custom::Single(id, Arc::new(move |p| Box::pin(f(p)))));
        self
    }

    pub(crate) fn stream<F, Fut>(mut self, id: HandlerId, caps: Capacities, f: F) -> Handlers
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.0
            .push(Custom::Stream(id, caps, Arc::new(move |c| Box::pin(f(c)))));
        self
    }

    /// Whatever `r` registers.
    pub(crate) fn with(mut self, r: impl Registration) -> Handlers {
        let r = Arc::new(r);
        let on_smol = Arc::clone(&r);
        self.0.push(Custom::Any(
            Arc::new(move |m| r.register(m)),
            Arc::new(move |m| on_smol.register(m)),
        ));
        self
    }

    /// A typed handler `u32 -> u32` (msgpack), computed by `f`.
    pub(crate) fn typed(mut self, id: HandlerId, f: fn(u32) -> u32) -> Handlers {
        self.0.push(Custom::Typed(id, f));
        self
    }

    /// A handler registered with [`Manager::register_single_raw`].
    pub(crate) fn single_raw<F, Fut>(
        mut self,
        id: HandlerId,
        sub: Option<SubrouteId>,
        f: F,
    ) -> Handlers
    where
        F: Fn(Option<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Bytes>, RemoteError>> + Send + 'static,
    {
        self.0.push(Custom::SingleRaw(
            id,
            sub,
            Arc::new(move |p| Box::pin(f(p))),
        ));
        self
    }

    /// A handler registered with [`Manager::register_stream_raw`].
    pub(crate) fn stream_raw<F, Fut>(
        mut self,
        id: HandlerId,
        sub: Option<SubrouteId>,
        caps: Capacities,
        f: F,
    ) -> Handlers
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.0.push(Custom::StreamRaw(
            id,
            sub,
            caps,
            Arc::new(move |c| Box::pin(f(c))),
        ));
        self
    }

    fn register<R: Runtime>(&self, m: &Manager<R>) {
        register_reference_handlers(m).expect("reference handlers");
        for h in &self.0 {
            match h.clone() {
                Custom::Any(on_tokio, on_smol) => {
                    let any: &dyn std::any::Any = m;
                    if let Some(m) = any.downcast_ref::<Manager<grid_tokio::Tokio>>() {
                        on_tokio(m)
                    } else if let Some(m) = any.downcast_ref::<Manager<grid_smol::Smol>>() {
                        on_smol(m)
                    } else {
                        panic!("a node on a runtime the harness does not know")
                    }
                }
                Custom::Single(id, f) => m.register_single(id, move |p| f(p)),
                Custom::Stream(id, caps, f) => m.register_stream(id, caps, move |c| f(c)),
                Custom::Typed(id, f) => {
                    SingleHandler::<u32, u32>::new(id).register(m, move |_, n: u32| async move {
                        Ok::<_, RemoteError>(f(n))
                    })
                }
                Custom::SingleRaw(id, sub, f) => m.register_single_raw(id, sub, move |p| f(p)),
                Custom::StreamRaw(id, sub, caps, f) => {
                    m.register_stream_raw(id, sub, caps, move |c| f(c))
                }
            }
            .expect("custom handler");
        }
    }
}

// ---- nodes ----

/// The options of test nodes: a token both ways, quick redials.
pub(crate) fn test_options() -> Options {
    Options {
        auth_token: Arc::new(|_| TOKEN.to_owned()),
        validate_token: Arc::new(|t| {
            if t == TOKEN {
                Ok(())
            } else {
                Err(format!("unexpected token {t:?}"))
            }
        }),
        connection: Settings {
            backoff: Backoff {
                retry: Duration::from_millis(40),
                initial: Duration::from_millis(40),
                max: Duration::from_millis(200),
                multiplier: 2.0,
                jitter: 0.25,
            },
            ..Settings::default()
        },
        ..Options::default()
    }
}

/// A runtime the harness can serve a node on.
pub(crate) trait Driver: Runtime + Default {
    fn serve(manager: Manager<Self>, listener: TcpListener) -> Server;
}

impl Driver for grid_tokio::Tokio {
    fn serve(manager: Manager<Self>, listener: TcpListener) -> Server {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        Server::Tokio(tokio::spawn(grid_tokio::serve(manager, listener)))
    }
}

impl Driver for grid_smol::Smol {
    fn serve(manager: Manager<Self>, listener: TcpListener) -> Server {
        let listener = async_net::TcpListener::try_from(listener).expect("async-net listener");
        Server::Smol(smol::spawn(grid_smol::serve(manager, listener)))
    }
}

/// A node's accept loop; dropping it stops accepting and frees the port.
pub(crate) enum Server {
    Tokio(tokio::task::JoinHandle<std::io::Result<()>>),
    Smol(#[allow(dead_code)] smol::Task<std::io::Result<()>>),
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Tokio(h) = self {
            h.abort();
        }
    }
}

/// What the harness needs of a manager, whatever its runtime.
pub(crate) trait AnyManager: Send + Sync {
    fn connection(&self, host: &str) -> Option<Connection>;
    fn stats(&self) -> Vec<(String, Option<Stats>)>;
    fn shutdown(&self, grace: Option<Duration>) -> Pin<Box<dyn Future<Output = ()> + '_>>;
    fn refusals(&self) -> Refusals;
}

impl<R: Runtime> AnyManager for Manager<R> {
    fn connection(&self, host: &str) -> Option<Connection> {
        Manager::connection(self, host)
    }

    fn stats(&self) -> Vec<(String, Option<Stats>)> {
        Manager::stats(self)
    }

    fn shutdown(&self, grace: Option<Duration>) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(Manager::shutdown(self, grace))
    }

    fn refusals(&self) -> Refusals {
        Manager::refusals(self)
    }
}

/// One running node.
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) manager: Arc<dyn AnyManager>,
    server: Option<Server>,
}

impl Node {
    /// Starts a node of `kind` serving on `listener`.
    pub(crate) fn start(
        kind: Kind,
        listener: TcpListener,
        hosts: &[String],
        options: Options,
        handlers: &Handlers,
    ) -> Node {
        let host = host_of(&listener);
        match kind {
            Kind::Tokio => {
                launch::<grid_tokio::Tokio>(kind, host, listener, hosts, options, handlers)
            }
            Kind::Smol => launch::<grid_smol::Smol>(kind, host, listener, hosts, options, handlers),
        }
    }

    /// Shuts the manager down and stops accepting.
    pub(crate) async fn stop(&mut self) {
        wait("a manager shutdown", self.manager.shutdown(None)).await;
        self.server = None;
    }
}

fn launch<R: Driver>(
    kind: Kind,
    host: String,
    listener: TcpListener,
    hosts: &[String],
    options: Options,
    handlers: &Handlers,
) -> Node {
    let m = Manager::new(R::default(), &host, hosts, options).expect("a manager");
    handlers.register(&m);
    let server = R::serve(m.clone(), listener);
    m.start();
    Node {
        kind,
        manager: Arc::new(m),
        server: Some(server),
    }
}

/// A loopback listener on an ephemeral port.
pub(crate) fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("a loopback listener")
}

/// The grid host string of a listener.
pub(crate) fn host_of(listener: &TcpListener) -> String {
    format!("http://{}", listener.local_addr().expect("bound"))
}

/// Binds `addr` again once its previous listener is gone.
pub(crate) async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => assert!(Instant::now() < deadline, "cannot rebind {addr}: {e}"),
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
}

/// Two nodes, connected both ways.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    pub(crate) hosts: Vec<String>,
    handlers: Handlers,
    options: Options,
}

impl Cluster {
    /// Two connected nodes with the reference handlers and `handlers`.
    pub(crate) async fn start(setup: Setup, handlers: Handlers) -> Cluster {
        Cluster::start_with(setup, handlers, test_options()).await
    }

    /// [`Cluster::start`] with other options.
    pub(crate) async fn start_with(setup: Setup, handlers: Handlers, options: Options) -> Cluster {
        let c = Cluster::launch(setup, handlers, options);
        c.wait_connected().await;
        c
    }

    /// Starts the nodes without waiting for them to connect.
    pub(crate) fn launch(setup: Setup, handlers: Handlers, options: Options) -> Cluster {
        let listeners = [listen(), listen()];
        let hosts: Vec<String> = listeners.iter().map(host_of).collect();
        let (dialer, acceptor) = setup.kinds();
        let kinds = if should_dial(&hosts[0], &hosts[1]) {
            [dialer, acceptor]
        } else {
            [acceptor, dialer]
        };
        let nodes = listeners
            .into_iter()
            .zip(kinds)
            .map(|(l, kind)| Node::start(kind, l, &hosts, options.clone(), &handlers))
            .collect();
        Cluster {
            nodes,
            hosts,
            handlers,
            options,
        }
    }

    /// The handle of node `from` on node `to`.
    pub(crate) fn conn(&self, from: usize, to: usize) -> Connection {
        self.nodes[from]
            .manager
            .connection(&self.hosts[to])
            .expect("a known host")
    }

    /// Both directions: (caller, callee).
    pub(crate) fn directions(&self) -> [(usize, usize); 2] {
        [(0, 1), (1, 0)]
    }

    /// Waits until every node is connected to the other.
    pub(crate) async fn wait_connected(&self) {
        for (from, to) in self.directions() {
            let c = self.conn(from, to);
            wait("the nodes to connect", c.wait_for_connect(WAIT))
                .await
                .unwrap_or_else(|e| panic!("node {from} not connected to node {to}: {e}"));
        }
    }

    /// The latest stats of node `from`'s connection to node `to`.
    pub(crate) fn stats(&self, from: usize, to: usize) -> Stats {
        self.nodes[from]
            .manager
            .stats()
            .into_iter()
            .find(|(h, _)| *h == self.hosts[to])
            .and_then(|(_, s)| s)
            .expect("stats of a started connection")
    }

    /// Shuts node `i` down and stops its listener.
    pub(crate) async fn stop_node(&mut self, i: usize) {
        self.nodes[i].stop().await;
    }

    /// Starts a new manager (new instance id) for node `i` on its address.
    pub(crate) async fn restart_node(&mut self, i: usize) {
        let addr: SocketAddr = self.hosts[i]
            .trim_start_matches("http://")
            .parse()
            .expect("a socket address");
        let listener = rebind(addr).await;
        let kind = self.nodes[i].kind;
        self.nodes[i] = Node::start(
            kind,
            listener,
            &self.hosts,
            self.options.clone(),
            &self.handlers,
        );
    }

    /// Shuts every node down.
    pub(crate) async fn shutdown(mut self) {
        for n in &mut self.nodes {
            n.stop().await;
        }
        for (from, to) in self.directions() {
            assert_eq!(self.conn(from, to).state(), State::Shutdown);
            assert_eq!(self.stats(from, to).state, State::Shutdown);
        }
    }
}

/// A connection to echo on, for round trips used as a barrier: messages on
/// one connection are delivered in order.
pub(crate) async fn round_trips(conn: &Connection, n: usize) {
    for i in 0..n {
        let p = Bytes::from(format!("barrier {i}"));
        let r = wait(
            "a barrier round trip",
            conn.request(HandlerId::TEST, p.clone()),
        )
        .await;
        assert_eq!(r.as_ref(), Ok(&p));
    }
}
