//! User code that panics costs only its own call: handler closures and the
//! futures they return (plain, stream, typed), the token hooks and the
//! recorder's sink. And a connection task that dies anyway (a bug) fails
//! what it held at once, tells the truth in `state()`, and comes back.

use std::future::Future;
use std::io::{self, Write};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use conformance::register_reference_handlers;
use grid_proto::driver::{
    BoxFuture, Manager, Recorder, RemoteError, Runtime, StreamCall, tungstenite,
};
use grid_proto::{CallError, Capacities, HandlerId, State};

use crate::harness::{
    Cluster, Counter, Handlers, Kind, Node, Probe, Setup, WAIT, drive_until, host_of, listen,
    test_options, wait,
};

const ECHO: HandlerId = HandlerId::TEST;
/// Panics in the closure, before it returns its future (empty payload).
const EARLY: HandlerId = HandlerId(30);
/// Panics in the future it returns (empty payload).
const LATE: HandlerId = HandlerId(31);
/// A stream handler whose closure panics without an initial payload.
const STREAM_EARLY: HandlerId = HandlerId(32);
/// A stream handler whose future panics.
const STREAM_LATE: HandlerId = HandlerId(33);
/// A typed handler that panics on 0.
const TYPED: HandlerId = HandlerId(34);
/// Never answers (a call in flight).
const NEVER: HandlerId = HandlerId(35);

const OUT_ONLY: Capacities = Capacities {
    in_capacity: 0,
    out_capacity: 1,
};

fn panicking_handlers() -> Handlers {
    Handlers::default()
        .single(EARLY, |p: Bytes| {
            let first = p[0];
            async move { Ok(Bytes::from(vec![first])) }
        })
        .single(LATE, |p: Bytes| async move {
            assert!(!p.is_empty(), "empty payload");
            Ok(p)
        })
        .stream(STREAM_EARLY, OUT_ONLY, |call: StreamCall| {
            let first = call.payload.as_ref().expect("an initial payload")[0];
            async move {
                let mut out = call.output;
                out.send(Bytes::from(vec![first]))
                    .await
                    .map_err(|e| RemoteError(e.to_string()))
            }
        })
        .stream(STREAM_LATE, OUT_ONLY, |call: StreamCall| async move {
            if call.payload.is_none() {
                panic!("stream without payload");
            }
            Ok(())
        })
        .typed(TYPED, |n| {
            assert_ne!(n, 0, "zero");
            n * 2
        })
}

fn assert_panic_text(r: Result<Bytes, CallError>, prefix: &str, what: &str) {
    match r {
        Err(CallError::Remote(text)) => {
            assert!(
                text.starts_with(prefix),
                "{text:?} should start with {prefix:?}"
            );
            assert!(text.contains(what), "{text:?} should say {what:?}");
        }
        other => panic!("expected a remote error starting {prefix:?}, got {other:?}"),
    }
}

/// Every kind of handler panics on bad input: the caller gets Go's text
/// for a recovered panic, and the same handler, the connection and every
/// other call go on.
pub(crate) async fn handler_panics(setup: Setup) {
    let c = Cluster::start(setup, panicking_handlers()).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let r = wait("early panic", conn.request(EARLY, Bytes::new())).await;
        assert_panic_text(
            r,
            "handleMessages: panic recovered: ",
            "index out of bounds",
        );
        let r = wait("late panic", conn.request(LATE, Bytes::new())).await;
        assert_panic_text(r, "handleMessages: panic recovered: ", "empty payload");
        let r = wait("typed panic", conn.request(TYPED, typed(0u32))).await;
        assert_panic_text(r, "handleMessages: panic recovered: ", "zero");

        for handler in [STREAM_EARLY, STREAM_LATE] {
            let (_tx, mut rx) = wait("open", conn.open_stream(handler, None))
                .await
                .expect("the stream opens");
            let r = wait("the stream's end", rx.recv()).await.expect("an end");
            assert_panic_text(r, "handler panic: ", "payload");
        }

        // The same handlers still serve good input, and so does the rest.
        let r = wait("early ok", conn.request(EARLY, Bytes::from_static(b"x"))).await;
        assert_eq!(r, Ok(Bytes::from_static(b"x")));
        let r = wait("late ok", conn.request(LATE, Bytes::from_static(b"y"))).await;
        assert_eq!(r, Ok(Bytes::from_static(b"y")));
        let r = wait("typed ok", conn.request(TYPED, typed(21u32))).await;
        assert_eq!(r, Ok(typed(42u32)));
        let (_tx, mut rx) = wait(
            "open",
            conn.open_stream(STREAM_EARLY, Some(Bytes::from_static(b"z"))),
        )
        .await
        .expect("the stream opens");
        assert_eq!(
            wait("a message", rx.recv()).await,
            Some(Ok(Bytes::from_static(b"z")))
        );
        let r = wait("echo", conn.request(ECHO, Bytes::from_static(b"on"))).await;
        assert_eq!(r, Ok(Bytes::from_static(b"on")));
        assert!(conn.is_connected());
        assert_eq!(c.stats(from, to).reconnects, 0);
    }
    c.shutdown().await;
}

fn typed(n: u32) -> Bytes {
    grid_proto::driver::encode(&n).expect("encodes")
}

/// `auth_token` panics on the first attempts: those attempts fail (a
/// local failure, not the task), and the next one connects.
pub(crate) async fn auth_token_panics(setup: Setup) {
    let calls = Counter::default();
    let counted = calls.clone();
    let mut options = test_options();
    options.auth_token = Arc::new(move |_| {
        let n = counted.get();
        counted.add();
        assert!(n >= 2, "no token yet");
        crate::harness::TOKEN.to_owned()
    });
    let c = Cluster::start_with(setup, Handlers::default(), options).await;
    assert!(calls.get() >= 3);
    let dialer = if c.stats(0, 1).dial_failures > 0 {
        0
    } else {
        1
    };
    assert_eq!(c.stats(dialer, 1 - dialer).dial_failures, 2);
    for (from, to) in c.directions() {
        let r = wait("echo", c.conn(from, to).request(ECHO, Bytes::new())).await;
        assert_eq!(r, Ok(Bytes::new()));
    }
    c.shutdown().await;
}

/// `validate_token` panics on the first checks: the acceptor refuses
/// those connections (and says why), then accepts.
pub(crate) async fn validate_token_panics(setup: Setup) {
    let calls = Counter::default();
    let counted = calls.clone();
    let mut options = test_options();
    options.validate_token = Arc::new(move |t| {
        let n = counted.get();
        counted.add();
        assert!(n >= 2, "cannot check tokens yet");
        if t == crate::harness::TOKEN {
            Ok(())
        } else {
            Err("wrong token".into())
        }
    });
    let c = Cluster::start_with(setup, Handlers::default(), options).await;
    let refusals: Vec<_> = c.nodes.iter().map(|n| n.manager.refusals()).collect();
    let acceptor = if refusals[0].total > 0 { 0 } else { 1 };
    let r = &refusals[acceptor];
    assert!(r.total >= 1, "{r:?}");
    let reason = r.last_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("panicked: cannot check tokens yet"),
        "{reason}"
    );
    for (from, to) in c.directions() {
        let r = wait("echo", c.conn(from, to).request(ECHO, Bytes::new())).await;
        assert_eq!(r, Ok(Bytes::new()));
    }
    c.shutdown().await;
}

/// A sink that panics on its third write (mid-recording) and on drop.
struct Bomb(usize);

impl Write for Bomb {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += 1;
        assert!(self.0 < 3, "the disk is on fire");
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("cannot close the transcript");
    }
}

/// The recorder's open hook panics on one node, its sink on the other:
/// the recordings go, the connection stays.
pub(crate) async fn recorder_panics(setup: Setup) {
    let opened = Counter::default();
    let counted = opened.clone();
    let mut options = test_options();
    options.recorder = Some(Recorder::new(move |_| {
        let n = counted.get();
        counted.add();
        assert!(n % 2 == 1, "cannot open a transcript");
        Ok(Box::new(Bomb(0)) as Box<dyn Write + Send>)
    }));
    let c = Cluster::start_with(setup, Handlers::default(), options).await;
    for (from, to) in c.directions() {
        for _ in 0..3 {
            let r = wait("echo", c.conn(from, to).request(ECHO, Bytes::new())).await;
            assert_eq!(r, Ok(Bytes::new()));
        }
        assert_eq!(c.stats(from, to).reconnects, 0);
    }
    assert!(opened.get() >= 2);
    c.shutdown().await;
}

// ---- a connection task that dies anyway ----

/// A runtime whose `spawn` panics once when armed: the connection task
/// calls it to start a handler that waits (one that answers at once runs
/// inline), so arming it makes that task panic, as a bug inside the task
/// would.
#[derive(Clone, Default)]
struct Trap<R> {
    inner: R,
    armed: Arc<AtomicBool>,
}

impl<R: Runtime> Runtime for Trap<R> {
    type Socket = R::Socket;
    type Sleep = R::Sleep;

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn wall(&self) -> std::time::SystemTime {
        self.inner.wall()
    }

    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        assert!(
            !self.armed.swap(false, Ordering::SeqCst),
            "trap: a bug in the connection task"
        );
        self.inner.spawn(task);
    }

    fn sleep_until(&self, at: Instant) -> Self::Sleep {
        self.inner.sleep_until(at)
    }

    fn dial(
        &self,
        request: tungstenite::handshake::client::Request,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> BoxFuture<Result<Self::Socket, tungstenite::Error>> {
        self.inner.dial(request, config)
    }
}

/// The trapped node's connection task panics while it has a request and
/// a stream in flight: both fail at once with `Disconnected`, `state()`
/// stops saying `Connected`, new calls are refused instead of hanging, and
/// a fresh task reconnects so calls work again both ways.
pub(crate) async fn task_panic(setup: Setup) {
    let kind = match setup {
        Setup::Tokio => Kind::Tokio,
        Setup::Smol => Kind::Smol,
        _ => unreachable!("one runtime per run"),
    };
    let probe = Probe::new();
    let p = probe.clone();
    let handlers = Handlers::default().single(NEVER, move |_| {
        let p = p.clone();
        async move {
            let _guard = p.enter();
            std::future::pending::<Result<Bytes, RemoteError>>().await
        }
    });
    let (trapped_listener, other_listener) = (listen(), listen());
    let hosts = vec![host_of(&trapped_listener), host_of(&other_listener)];
    let armed = Arc::new(AtomicBool::new(false));
    let trapped = match kind {
        Kind::Tokio => TrappedNode::start(
            Trap {
                inner: grid_tokio::Tokio,
                armed: Arc::clone(&armed),
            },
            trapped_listener,
            &hosts,
        ),
        Kind::Smol => TrappedNode::start(
            Trap {
                inner: grid_smol::Smol,
                armed: Arc::clone(&armed),
            },
            trapped_listener,
            &hosts,
        ),
    };
    let mut other = Node::start(kind, other_listener, &hosts, test_options(), &handlers);
    let to_other = trapped.connection(&hosts[1]);
    let to_trapped = other.manager.connection(&hosts[0]).expect("a known host");
    for c in [&to_other, &to_trapped] {
        wait("connected", c.wait_for_connect(WAIT))
            .await
            .expect("connected");
    }

    let (_tx, mut stream) = wait("open", to_other.open_stream(ECHO, None))
        .await
        .expect("the stream opens");
    let mut call = pin!(to_other.request(NEVER, Bytes::new()));
    drive_until(call.as_mut(), probe.started()).await;

    armed.store(true, Ordering::SeqCst);
    let r = wait(
        "the call that trips the bug",
        to_trapped.request(NEVER, Bytes::new()),
    )
    .await;
    assert_eq!(r, Err(CallError::Disconnected));
    assert_eq!(
        wait("the call in flight", call).await,
        Err(CallError::Disconnected)
    );
    // The state said so before the call was answered, and new calls are
    // refused, not queued to a task that is gone (the new one starts after
    // a pause).
    assert_eq!(to_other.state(), State::ConnectionError);
    let r = wait("a call meanwhile", to_other.request(ECHO, Bytes::new())).await;
    assert_eq!(r, Err(CallError::NotConnected));
    assert_eq!(
        wait("the stream in flight", stream.recv()).await,
        Some(Err(CallError::Disconnected))
    );
    probe.dropped().await;

    // Back by itself: a fresh task, a new session.
    for c in [&to_other, &to_trapped] {
        wait("reconnected", c.wait_for_connect(WAIT))
            .await
            .expect("reconnected");
    }
    for c in [&to_other, &to_trapped] {
        let r = wait(
            "echo after the restart",
            c.request(ECHO, Bytes::from_static(b"again")),
        )
        .await;
        assert_eq!(r, Ok(Bytes::from_static(b"again")));
    }
    assert_ne!(to_other.state(), State::Shutdown);
    other.stop().await;
    trapped.stop().await;
}

/// What the test needs of the trapped node, whatever its runtime.
struct TrappedNode {
    manager: Arc<dyn crate::harness::AnyManager>,
    _server: crate::harness::Server,
}

impl TrappedNode {
    fn start<R: Runtime<Socket = grid_proto::driver::BoxSocket>>(
        rt: Trap<R>,
        listener: std::net::TcpListener,
        hosts: &[String],
    ) -> TrappedNode
    where
        Trap<R>: crate::harness::Driver,
    {
        let mut options = test_options();
        // A pause before the restart long enough to look at the dead task.
        options.connection.backoff.retry = std::time::Duration::from_millis(500);
        let m = Manager::new(rt, &host_of(&listener), hosts, options).expect("a manager");
        register_reference_handlers(&m).expect("reference handlers");
        // Waits once before it answers, so it runs on a task of its own.
        m.register_single(NEVER, |p: Bytes| async move {
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if std::mem::replace(&mut yielded, true) {
                    std::task::Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            Ok(p)
        })
        .expect("a waiting handler");
        let server = <Trap<R> as crate::harness::Driver>::serve(m.clone(), listener);
        m.start();
        TrappedNode {
            manager: Arc::new(m),
            _server: server,
        }
    }

    fn connection(&self, host: &str) -> grid_proto::driver::Connection {
        self.manager.connection(host).expect("a known host")
    }

    async fn stop(&self) {
        wait("a manager shutdown", self.manager.shutdown(None)).await;
    }
}

impl crate::harness::Driver for Trap<grid_tokio::Tokio> {
    fn serve(manager: Manager<Self>, listener: std::net::TcpListener) -> crate::harness::Server {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        crate::harness::Server::Tokio(tokio::spawn(grid_tokio::serve(manager, listener)))
    }
}

impl crate::harness::Driver for Trap<grid_smol::Smol> {
    fn serve(manager: Manager<Self>, listener: std::net::TcpListener) -> crate::harness::Server {
        let listener = async_net::TcpListener::try_from(listener).expect("async-net listener");
        crate::harness::Server::Smol(smol::spawn(grid_smol::serve(manager, listener)))
    }
}
