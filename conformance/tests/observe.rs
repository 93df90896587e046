//! Observability of the real tokio driver, on turmoil's simulated network
//! and clocks (the same run every time, no wall-clock waits):
//!
//! - the trace hook (`Options::trace`) gets one record per call on each
//!   side: requests and streams, made and served, for success, a remote
//!   error, an unknown handler, a cancel and a deadline, with the handler,
//!   subroute, hosts, start, duration and sizes each way;
//! - a hook that panics costs neither the call nor the connection;
//! - every outgoing call has a `tracing` span under the caller's span;
//! - `Manager::stats_total` sums the connections' stats.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use grid_tokio::turmoil::{Manager, Turmoil, serve};
use grid_tokio::{
    CallError, CallKind, CallTrace, CancelReason, Capacities, Direction, HandlerId, Options,
    RemoteError, Runtime, State, StreamCall, StreamOptions, SubrouteId, TraceError, TraceRoute,
    Transfer,
};

const ALPHA: &str = "http://alpha:9000";
const BETA: &str = "http://beta:9000";
const HOSTS: [&str; 2] = [ALPHA, BETA];
/// Single: answers with the payload. Stream: sends every message back.
const ECHO: HandlerId = HandlerId::TEST;
/// Single: fails with the payload as the remote error.
const FAIL: HandlerId = HandlerId::TEST2;
/// Single: never answers.
const NEVER: HandlerId = HandlerId(40);
/// Stream: never ends.
const HOLD: HandlerId = HandlerId(41);
/// Single and stream on the subroute [`DRIVE`], echoing.
const DISK: HandlerId = HandlerId(9);
/// Registered nowhere.
const MISSING: HandlerId = HandlerId(50);
const DRIVE: &str = "/mnt/drive1";

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

type Log = Arc<Mutex<Vec<CallTrace>>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn echo_stream(call: StreamCall) -> Result<(), RemoteError> {
    let (Some(mut input), mut output) = (call.input, call.output) else {
        return Ok(());
    };
    while let Some(message) = input.recv().await {
        let message = message.map_err(|e| RemoteError(e.to_string()))?;
        output
            .send(message)
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// A node on the current simulated host with every handler above.
async fn node(local: &str, options: Options) -> Result<Manager, Box<dyn Error>> {
    let manager = Manager::new(Turmoil::new(), local, &HOSTS, options)?;
    manager.register_single(ECHO, |p: Bytes| async move { Ok(p) })?;
    manager.register_stream(ECHO, Capacities::DEFAULT, echo_stream)?;
    manager.register_single(FAIL, |p: Bytes| async move {
        Err(RemoteError(String::from_utf8_lossy(&p).into_owned()))
    })?;
    manager.register_single(NEVER, |_| std::future::pending())?;
    manager.register_stream(HOLD, Capacities::DEFAULT, |call: StreamCall| async move {
        let _halves = (call.input, call.output);
        std::future::pending().await
    })?;
    manager.register_single_subroute(DISK, DRIVE, |p: Bytes| async move { Ok(p) })?;
    manager.register_stream_subroute(DISK, DRIVE, Capacities::DEFAULT, echo_stream)?;
    let listener = turmoil::net::TcpListener::bind("0.0.0.0:9000").await?;
    tokio::spawn(serve(manager.clone(), listener));
    manager.start();
    Ok(manager)
}

/// Options with a fixed seed whose trace hook appends to `log`.
fn traced(seed: u64, log: &Log) -> Options {
    let log = Arc::clone(log);
    Options {
        seed: Some(seed),
        trace: Some(Arc::new(move |t: &CallTrace| {
            log.lock().unwrap().push(t.clone())
        })),
        ..Options::default()
    }
}

fn sim(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(epoch())
        .simulation_duration(Duration::from_secs(120))
        .build()
}

/// The one record in `log` that `pick` selects.
fn one<'a>(log: &'a [CallTrace], what: &str, pick: impl Fn(&CallTrace) -> bool) -> &'a CallTrace {
    let found: Vec<_> = log.iter().filter(|t| pick(t)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nin {log:#?}");
    found[0]
}

fn is(t: &CallTrace, direction: Direction, kind: CallKind, handler: HandlerId) -> bool {
    t.direction == direction && t.kind == kind && t.handler == handler
}

fn sent(messages: u64, bytes: u64) -> Transfer {
    Transfer { messages, bytes }
}

/// The calls node beta makes to alpha (and alpha one to beta), with the
/// wall-clock span they ran in.
#[test]
fn every_call_leaves_one_record_on_each_side() {
    let alpha_log = Log::default();
    let beta_log = Log::default();
    let window = Arc::new(Mutex::new(None));
    let mut sim = sim(1);
    let log = Arc::clone(&alpha_log);
    sim.host("alpha", move || {
        let log = Arc::clone(&log);
        async move {
            let manager = node(ALPHA, traced(1, &log)).await?;
            let beta = manager.connection(BETA).ok_or("a known host")?;
            beta.wait_for_connect(Duration::from_secs(5)).await?;
            assert_eq!(beta.request(ECHO, "from alpha").await?, "from alpha");
            std::future::pending().await
        }
    });
    let log = Arc::clone(&beta_log);
    let times = Arc::clone(&window);
    sim.client("beta", async move {
        let manager = node(BETA, traced(2, &log)).await?;
        let alpha = manager.connection(ALPHA).ok_or("a known host")?;
        alpha.wait_for_connect(Duration::from_secs(5)).await?;
        let before = Turmoil::new().wall();

        assert_eq!(alpha.request(ECHO, "hello").await?, "hello");
        let failed = alpha.request(FAIL, "boom").await;
        assert_eq!(failed, Err(CallError::Remote("boom".into())));
        let late = alpha.request_with_timeout(NEVER, "", ms(200)).await;
        assert_eq!(late, Err(CallError::DeadlineExceeded));
        let dropped = tokio::time::timeout(ms(100), alpha.request(NEVER, "wait")).await;
        assert!(dropped.is_err(), "NEVER answered");
        assert!(matches!(
            alpha.request(MISSING, "x").await,
            Err(CallError::Refused(_))
        ));

        let (mut tx, mut rx) = alpha.open_stream(ECHO, Some(Bytes::from("p"))).await?;
        for message in ["a", "bb"] {
            tx.send(Bytes::from(message)).await?;
            assert_eq!(rx.recv().await.ok_or("ended early")??, message);
        }
        tx.close();
        assert!(rx.recv().await.is_none());

        let options = StreamOptions {
            timeout: Some(ms(300)),
            ..StreamOptions::default()
        };
        let (_tx, mut rx) = alpha.open_stream_with(HOLD, None, options).await?;
        assert_eq!(rx.recv().await, Some(Err(CallError::DeadlineExceeded)));

        let drive = alpha.subroute(DRIVE);
        assert_eq!(drive.request(DISK, "info").await?, "info");
        let (tx, mut rx) = drive.open_stream(DISK, None).await?;
        drop(tx);
        assert!(rx.recv().await.is_none());

        // Alpha's records of the last calls follow their answers.
        tokio::time::sleep(ms(500)).await;
        *times.lock().unwrap() = Some((before, Turmoil::new().wall()));
        Ok(())
    });
    sim.run().expect("the simulation passes");

    let (before, after) = window.lock().unwrap().expect("the client finished");
    let beta = beta_log.lock().unwrap().clone();
    let alpha = alpha_log.lock().unwrap().clone();
    // Beta's calls, and the one it served.
    assert_eq!(beta.len(), 10, "{beta:#?}");
    use CallKind::{Request, Stream};
    use Direction::{Incoming, Outgoing};
    for t in &beta {
        assert_eq!((&*t.local, &*t.remote), (BETA, ALPHA));
    }
    let echo = one(&beta, "echo", |t| is(t, Outgoing, Request, ECHO));
    assert_eq!((echo.request, echo.response), (sent(1, 5), sent(1, 5)));
    assert_eq!((echo.error.as_ref(), echo.status()), (None, 200));
    assert_eq!(echo.name(), "grid.handlerTest");
    assert_eq!(echo.subroute, None);
    assert!(echo.start >= before && echo.start + echo.duration <= after);

    let fail = one(&beta, "fail", |t| is(t, Outgoing, Request, FAIL));
    let remote = TraceError::Failed(CallError::Remote("boom".into()));
    assert_eq!(fail.error.as_ref(), Some(&remote));
    assert_eq!((fail.status(), fail.response), (400, sent(0, 0)));

    let late = one(&beta, "deadline", |t| {
        is(t, Outgoing, Request, NEVER)
            && t.error == Some(TraceError::Failed(CallError::DeadlineExceeded))
    });
    assert!(
        late.duration >= ms(200) && late.duration < ms(250),
        "{late:?}"
    );
    assert_eq!(late.status(), 500);
    let cancelled = one(&beta, "cancel", |t| {
        is(t, Outgoing, Request, NEVER) && t.error == Some(TraceError::Cancelled)
    });
    assert!(cancelled.duration >= ms(100) && cancelled.duration < ms(150));
    let missing = one(&beta, "unknown", |t| is(t, Outgoing, Request, MISSING));
    assert!(matches!(
        missing.error,
        Some(TraceError::Failed(CallError::Refused(_)))
    ));

    let stream = one(&beta, "stream", |t| is(t, Outgoing, Stream, ECHO));
    assert_eq!((stream.request, stream.response), (sent(3, 4), sent(2, 3)));
    assert_eq!(stream.error, None);
    let held = one(&beta, "stream deadline", |t| is(t, Outgoing, Stream, HOLD));
    let deadline = TraceError::Failed(CallError::DeadlineExceeded);
    assert_eq!(held.error.as_ref(), Some(&deadline));
    assert!(held.duration >= ms(300) && held.duration < ms(350));

    let named = Some(TraceRoute::Name(Arc::from(DRIVE)));
    let disk = one(&beta, "subroute", |t| is(t, Outgoing, Request, DISK));
    assert_eq!(
        (&disk.subroute, disk.name().as_str()),
        (&named, "storageR.DiskInfo")
    );
    let disk_stream = one(&beta, "subroute stream", |t| is(t, Outgoing, Stream, DISK));
    assert_eq!(disk_stream.subroute, named);

    let served = one(&beta, "served", |t| is(t, Incoming, Request, ECHO));
    assert_eq!(
        (served.request, served.response),
        (sent(1, 10), sent(1, 10))
    );

    // Alpha served every one of them, and made one call.
    assert_eq!(alpha.len(), 10, "{alpha:#?}");
    for t in &alpha {
        assert_eq!((&*t.local, &*t.remote), (ALPHA, BETA));
    }
    let echo = one(&alpha, "echo", |t| is(t, Incoming, Request, ECHO));
    assert_eq!((echo.request, echo.response), (sent(1, 5), sent(1, 5)));
    assert_eq!(echo.error, None);
    let fail = one(&alpha, "fail", |t| is(t, Incoming, Request, FAIL));
    assert_eq!(fail.error, Some(TraceError::Handler("boom".into())));
    assert_eq!((fail.status(), fail.response), (400, sent(0, 0)));
    let ended = |reason| Some(TraceError::Ended(reason));
    one(&alpha, "deadline", |t| {
        is(t, Incoming, Request, NEVER) && t.error == ended(CancelReason::DeadlineExceeded)
    });
    one(&alpha, "cancel", |t| {
        is(t, Incoming, Request, NEVER) && t.error == ended(CancelReason::CallerCancelled)
    });
    let missing = one(&alpha, "unknown", |t| is(t, Incoming, Request, MISSING));
    assert_eq!(missing.error, Some(TraceError::NoHandler));
    let stream = one(&alpha, "stream", |t| is(t, Incoming, Stream, ECHO));
    assert_eq!((stream.request, stream.response), (sent(3, 4), sent(2, 3)));
    assert_eq!(stream.error, None);
    // The caller's deadline fires first and cancels the stream, or the
    // callee's own (the same length, counted from a little later) does.
    let held = one(&alpha, "stream deadline", |t| is(t, Incoming, Stream, HOLD));
    assert!(
        matches!(
            held.error,
            Some(TraceError::Ended(
                CancelReason::DeadlineExceeded | CancelReason::CallerCancelled
            ))
        ),
        "{held:?}"
    );
    // Only the hash of a single request's subroute travels; a stream
    // handler registered under the name gives the name back.
    let disk = one(&alpha, "subroute", |t| is(t, Incoming, Request, DISK));
    let id = SubrouteId::new(DISK, DRIVE);
    assert_eq!(disk.subroute, Some(TraceRoute::Id(id)));
    let disk_stream = one(&alpha, "subroute stream", |t| is(t, Incoming, Stream, DISK));
    assert_eq!(disk_stream.subroute, named);
    let own = one(&alpha, "alpha's call", |t| is(t, Outgoing, Request, ECHO));
    assert_eq!((own.request, own.error.as_ref()), (sent(1, 10), None));
}

/// A hook that panics on every record: every call still gets its answer,
/// and the connection stays up.
#[test]
fn a_panicking_hook_costs_neither_the_call_nor_the_connection() {
    let calls = Arc::new(AtomicU64::new(0));
    let panicking = |seed| {
        let calls = Arc::clone(&calls);
        Options {
            seed: Some(seed),
            trace: Some(Arc::new(move |_: &CallTrace| {
                calls.fetch_add(1, Ordering::SeqCst);
                panic!("the hook fails")
            })),
            ..Options::default()
        }
    };
    let mut sim = sim(2);
    let alpha_options = panicking(1);
    sim.host("alpha", move || {
        let options = alpha_options.clone();
        async move {
            node(ALPHA, options).await?;
            std::future::pending().await
        }
    });
    let beta_options = panicking(2);
    sim.client("beta", async move {
        let manager = node(BETA, beta_options).await?;
        let alpha = manager.connection(ALPHA).ok_or("a known host")?;
        alpha.wait_for_connect(Duration::from_secs(5)).await?;
        for i in 0..3 {
            let payload = format!("call {i}");
            assert_eq!(alpha.request(ECHO, payload.clone()).await?, payload);
        }
        let (mut tx, mut rx) = alpha.open_stream(ECHO, None).await?;
        tx.send(Bytes::from("s")).await?;
        assert_eq!(rx.recv().await.ok_or("ended early")??, "s");
        tx.close();
        assert!(rx.recv().await.is_none());
        tokio::time::sleep(ms(100)).await;
        assert_eq!(alpha.state(), State::Connected);
        let stats = alpha.stats().ok_or("stats")?;
        assert_eq!((stats.connects, stats.reconnects), (1, 0));
        Ok(())
    });
    sim.run().expect("the simulation passes");
    // Both sides' hooks ran for every call (and panicked every time).
    assert_eq!(calls.load(Ordering::SeqCst), 8);
}

/// A span as the test subscriber saw it.
#[derive(Debug, Clone, Default)]
struct SeenSpan {
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<&'static str, String>,
}

/// A minimal subscriber keeping every span with its parent and fields.
/// turmoil runs every host on the test's thread, so one stack of entered
/// spans is the current span.
#[derive(Default)]
struct SpanLog {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, SeenSpan>>,
    stack: Mutex<Vec<u64>>,
}

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl tracing::Subscriber for SpanLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let parent = match attrs.parent() {
            Some(p) => Some(p.into_u64()),
            None if attrs.is_contextual() => self.stack.lock().unwrap().last().copied(),
            None => None,
        };
        let mut span = SeenSpan {
            name: attrs.metadata().name(),
            parent,
            fields: HashMap::new(),
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.spans.lock().unwrap().insert(id, span);
        tracing::span::Id::from_u64(id)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        if let Some(s) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, span: &tracing::span::Id) {
        self.stack.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, span: &tracing::span::Id) {
        let mut stack = self.stack.lock().unwrap();
        if let Some(i) = stack.iter().rposition(|s| *s == span.into_u64()) {
            stack.remove(i);
        }
    }
}

/// Each outgoing call (request or stream) has a `call` span under the
/// span the caller was in, naming the handler and subroute and, when the
/// call failed, the error.
#[test]
fn every_outgoing_call_has_a_span_under_the_callers() {
    let log = Arc::new(SpanLog::default());
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    tracing::subscriber::with_default(Arc::clone(&log), || {
        let mut sim = sim(3);
        sim.host("alpha", || async {
            node(ALPHA, Options::default()).await?;
            std::future::pending().await
        });
        sim.client("beta", async move {
            let manager = node(BETA, Options::default()).await?;
            let alpha = manager.connection(ALPHA).ok_or("a known host")?;
            alpha.wait_for_connect(Duration::from_secs(5)).await?;
            let work = async {
                alpha.request(ECHO, "hi").await?;
                let refused = alpha.subroute(DRIVE).request(FAIL, "no").await;
                assert!(matches!(refused, Err(CallError::Refused(_))));
                let (tx, mut rx) = alpha.open_stream(ECHO, None).await?;
                drop(tx);
                assert!(rx.recv().await.is_none());
                Ok::<_, Box<dyn Error>>(())
            };
            tracing::Instrument::instrument(work, tracing::info_span!("app")).await?;
            finished.store(true, Ordering::SeqCst);
            Ok(())
        });
        sim.run().expect("the simulation passes");
    });
    assert!(done.load(Ordering::SeqCst));
    let spans = log.spans.lock().unwrap().clone();
    let (&app, _) = spans
        .iter()
        .find(|(_, s)| s.name == "app")
        .expect("the app span");
    let mut calls: Vec<_> = spans.iter().filter(|(_, s)| s.name == "call").collect();
    calls.sort_by_key(|(id, _)| **id);
    assert_eq!(calls.len(), 3, "{spans:#?}");
    let field = |s: &SeenSpan, f: &str| s.fields.get(f).cloned();
    for (_, span) in &calls {
        assert_eq!(span.parent, Some(app));
        assert_eq!(field(span, "remote").as_deref(), Some(ALPHA));
    }
    let (request, refused, stream) = (calls[0].1, calls[1].1, calls[2].1);
    assert_eq!(field(request, "kind").as_deref(), Some("request"));
    assert_eq!(field(request, "handler").as_deref(), Some("handlerTest"));
    assert_eq!(field(request, "error"), None);
    assert_eq!(field(refused, "handler").as_deref(), Some("handlerTest2"));
    assert_eq!(field(refused, "subroute").as_deref(), Some(DRIVE));
    // FAIL is not served on that subroute: the callee refused the call.
    let error = field(refused, "error").unwrap_or_default();
    assert!(
        error.starts_with("call refused: Invalid Handler"),
        "{error}"
    );
    assert_eq!(field(stream, "kind").as_deref(), Some("stream"));
    assert_eq!(field(stream, "error"), None);
}

/// The manager's total is the sum of its connections' stats, shaped like
/// MinIO's RPC metrics: one connect at the simulated wall time, traffic
/// both ways, a last pong and round trip once the first ping came back.
#[test]
fn the_managers_total_sums_its_connections() {
    let mut sim = sim(4);
    sim.host("alpha", || async {
        node(ALPHA, Options::default()).await?;
        std::future::pending().await
    });
    sim.client("beta", async {
        let manager = node(BETA, Options::default()).await?;
        let before = Turmoil::new().wall();
        let alpha = manager.connection(ALPHA).ok_or("a known host")?;
        alpha.wait_for_connect(Duration::from_secs(5)).await?;
        for _ in 0..5 {
            alpha.request(ECHO, "x").await?;
        }
        // Past the first connection ping (every 10 s) and its pong, and
        // past the 100 ms in which the task publishes fresh stats.
        tokio::time::sleep(Duration::from_secs(11)).await;
        let total = manager.stats_total();
        let one = alpha.stats().ok_or("stats")?;
        assert_eq!((total.connections, total.connected), (1, 1));
        assert_eq!((total.connects, total.reconnects), (1, 0));
        assert_eq!(total.last_connected, one.last_connected);
        let connected = total.last_connected.ok_or("a connect time")?;
        assert!(connected.to_system_time() >= before);
        let pong = total.last_pong.ok_or("a pong")?.to_system_time();
        assert!(pong > connected.to_system_time() && pong <= Turmoil::new().wall());
        assert_eq!(total.last_rtt, one.rtt);
        assert!(total.last_rtt.is_some() && total.max_rtt == total.last_rtt);
        assert!(total.messages_sent >= 5 && total.messages_received >= 5);
        assert_eq!(total.bytes_sent, one.bytes_sent);
        assert_eq!(total.in_flight(), 0);
        Ok(())
    });
    sim.run().expect("the simulation passes");
}
