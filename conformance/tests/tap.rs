//! A tap between two of our nodes (tokio and smol, each dialing the other
//! in turn) under a randomized workload of handlers the reference table
//! does not have: other handler ids, subroutes, single answers absent,
//! empty and failing, streams of every shape (outputs before any input,
//! one-way, two-way with wider windows, endless), cancels at random points
//! and deadlines that expire. Whatever interleaving the run produced, the
//! tap's recording must replay clean against the core and both drivers, in
//! both roles.
//!
//! The seed is fixed per setup; `GRID_TAP_SEED` picks another one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::node::{Handlers, Node, Registrar, RuntimeKind, with_timeout};
use conformance::tap::{Tap, TapOptions};
use conformance::transcript::{RecordKind, WsKind};
use conformance::{Outcome, ReplayOptions, Role, Target, Transcript, frame::flatten, replay};
use futures_util::future::join_all;
use grid_proto::driver::{
    Connection, Manager, Options, RegisterError, RemoteError, Runtime, StreamCall, StreamOptions,
};
use grid_proto::{CallError, Capacities, Flags, HandlerId, Op, SubrouteId, should_dial};

const TOKEN: &str = "tap-test";
/// Calls each node makes.
const CALLS: usize = 28;
/// Calls in flight at once, per node.
const CONCURRENCY: usize = 4;
/// Longest any one call may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, max: u64) -> Bytes {
        let n = self.below(max + 1);
        Bytes::from((0..n).map(|_| self.next() as u8).collect::<Vec<u8>>())
    }

    fn caps(&mut self, min_in: u32) -> Capacities {
        Capacities {
            in_capacity: min_in + self.below(3) as u32,
            out_capacity: 1 + self.below(3) as u32,
        }
    }
}

/// What a workload handler does.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Single: answers the request as it came (an absent one stays absent).
    Echo,
    /// Single: answers present and empty.
    Empty,
    /// Single: fails with the request as text.
    Fail,
    /// Single: never answers.
    Slow,
    /// Stream: echoes each input (prefixed) until the input ends.
    StreamEcho(Capacities),
    /// One-way stream: payload `[n, fail]`, n outputs, then the end or an
    /// error.
    Count(Capacities),
    /// Stream: `k` outputs before reading any input, then echoes.
    First(u8, Capacities),
    /// Stream: `m` outputs, then holds until cancelled.
    Hold(u8, Capacities),
}

/// A handler both nodes register.
#[derive(Debug, Clone)]
struct Route {
    id: HandlerId,
    sub: Option<String>,
    shape: Shape,
}

/// The workload's handlers: distinct ids outside the reference table (78,
/// 79), half of them on subroutes.
fn routes(rng: &mut Rng) -> Vec<Route> {
    let mut ids: Vec<u8> = (1..=77).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut shapes = vec![
        Shape::Echo,
        Shape::Echo,
        Shape::Empty,
        Shape::Fail,
        Shape::Slow,
        Shape::Slow,
    ];
    for _ in 0..2 {
        shapes.push(Shape::StreamEcho(rng.caps(1)));
        shapes.push(Shape::Count(Capacities {
            in_capacity: 0,
            out_capacity: 1 + rng.below(3) as u32,
        }));
        shapes.push(Shape::First(1 + rng.below(3) as u8, rng.caps(1)));
        shapes.push(Shape::Hold(rng.below(3) as u8, rng.caps(0)));
    }
    shapes
        .into_iter()
        .zip(ids)
        .map(|(shape, id)| Route {
            id: HandlerId(id),
            sub: (rng.below(2) == 0).then(|| format!("/tap/disk{}", rng.below(100))),
            shape,
        })
        .collect()
}

fn cat(a: &[u8], b: &[u8]) -> Bytes {
    let mut v = a.to_vec();
    v.extend_from_slice(b);
    Bytes::from(v)
}

fn remote(e: impl std::fmt::Display) -> RemoteError {
    RemoteError(e.to_string())
}

async fn echo_loop(call: StreamCall) -> Result<(), RemoteError> {
    let mut output = call.output;
    let Some(mut input) = call.input else {
        return Ok(());
    };
    while let Some(m) = input.recv().await {
        output
            .send(cat(b"echo:", &m.map_err(remote)?))
            .await
            .map_err(remote)?;
    }
    Ok(())
}

fn output_message(i: u8) -> Bytes {
    // Some outputs are empty (present, `FlagPayloadIsZero`).
    Bytes::from(vec![i; usize::from(i % 3)])
}

async fn serve_stream(shape: Shape, mut call: StreamCall) -> Result<(), RemoteError> {
    match shape {
        Shape::StreamEcho(_) => echo_loop(call).await,
        Shape::Count(_) => {
            let p = call.payload.clone().unwrap_or_default();
            let (n, fail) = (p.first().copied().unwrap_or(0), p.get(1) == Some(&1));
            for i in 0..n {
                call.output.send(output_message(i)).await.map_err(remote)?;
            }
            if fail {
                Err(RemoteError("count failed".into()))
            } else {
                Ok(())
            }
        }
        Shape::First(k, _) => {
            for i in 0..k {
                call.output.send(output_message(i)).await.map_err(remote)?;
            }
            echo_loop(call).await
        }
        Shape::Hold(m, _) => {
            for i in 0..m {
                call.output.send(output_message(i)).await.map_err(remote)?;
            }
            std::future::pending().await
        }
        Shape::Echo | Shape::Empty | Shape::Fail | Shape::Slow => Ok(()),
    }
}

fn register<R: Runtime>(m: &Manager<R>, routes: &[Route]) -> Result<(), RegisterError> {
    for r in routes {
        let sub = r.sub.as_deref().map(|s| SubrouteId::new(r.id, s));
        let shape = r.shape;
        match shape {
            Shape::Echo => m.register_single_raw(r.id, sub, |p| async move { Ok(p) })?,
            Shape::Empty => {
                m.register_single_raw(r.id, sub, |_| async { Ok(Some(Bytes::new())) })?;
            }
            Shape::Fail => m.register_single_raw(r.id, sub, |p| async move {
                Err(RemoteError(
                    String::from_utf8_lossy(&p.unwrap_or_default()).into(),
                ))
            })?,
            Shape::Slow => m.register_single_raw(r.id, sub, |_| std::future::pending())?,
            Shape::StreamEcho(caps)
            | Shape::Count(caps)
            | Shape::First(_, caps)
            | Shape::Hold(_, caps) => {
                m.register_stream_raw(r.id, sub, caps, move |call| serve_stream(shape, call))?;
            }
        }
    }
    Ok(())
}

struct Workload(Vec<Route>);

impl Registrar for Workload {
    fn on_tokio(&self, manager: &grid_tokio::Manager) -> Result<(), RegisterError> {
        register(manager, &self.0)
    }
    fn on_smol(&self, manager: &grid_smol::Manager) -> Result<(), RegisterError> {
        register(manager, &self.0)
    }
}

/// One call of the workload and how it ends.
#[derive(Debug, Clone)]
enum Call {
    /// A single request, answered.
    Single(Route, Bytes),
    /// A request to a handler that never answers, with an expiring deadline.
    SlowDeadline(Route, u64),
    /// A request to a handler that never answers, cancelled.
    SlowCancel(Route),
    /// `n` exchanges, then the end of input (or a cancel).
    Exchange {
        route: Route,
        initial: Option<Bytes>,
        n: u8,
        cancel: bool,
    },
    /// A one-way stream, read to its end.
    Count(Route, u8, bool),
    /// A stream held open: cancelled after its first outputs, or left to
    /// its deadline.
    Hold(Route, Option<u64>),
}

/// A deadline that expires within the run. Long enough that a real-time
/// replay (which keeps the recording's pace while it runs) still makes the
/// call's recorded moves in time on a loaded machine.
fn deadline_ms(rng: &mut Rng) -> u64 {
    150 + rng.below(100)
}

/// `CALLS` calls: every route once with the choices that cover the cases
/// (an empty request, a cancel, a deadline), then at random.
fn plan(rng: &mut Rng, routes: &[Route]) -> Vec<Call> {
    (0..CALLS)
        .map(|i| {
            let first = routes.get(i);
            let route = first.unwrap_or_else(|| rng.pick(routes)).clone();
            let coin = |rng: &mut Rng, n| first.map_or(rng.below(n), |_| (i as u64) % n);
            match route.shape {
                Shape::Echo | Shape::Fail => {
                    // Empty requests travel absent: both kinds appear.
                    let payload = if coin(rng, 2) == 0 {
                        Bytes::new()
                    } else {
                        rng.bytes(24)
                    };
                    Call::Single(route, payload)
                }
                Shape::Empty => Call::Single(route, rng.bytes(8)),
                Shape::Slow if coin(rng, 2) == 0 => Call::SlowDeadline(route, deadline_ms(rng)),
                Shape::Slow => Call::SlowCancel(route),
                Shape::StreamEcho(_) | Shape::First(..) => Call::Exchange {
                    initial: match rng.below(3) {
                        0 => None,
                        1 => Some(Bytes::new()),
                        _ => Some(rng.bytes(8)),
                    },
                    n: rng.below(4) as u8,
                    cancel: coin(rng, 2) == 0,
                    route,
                },
                Shape::Count(_) => Call::Count(route, rng.below(5) as u8, coin(rng, 3) == 0),
                Shape::Hold(..) => {
                    let deadline = (coin(rng, 2) == 0).then(|| deadline_ms(rng));
                    Call::Hold(route, deadline)
                }
            }
        })
        .collect()
}

async fn recv(rx: &mut grid_proto::driver::StreamReceiver, what: &str) -> Result<Bytes, String> {
    match rx.recv().await {
        Some(Ok(m)) => Ok(m),
        other => Err(format!("{what}: got {other:?}")),
    }
}

async fn run_call(conn: &Connection, call: Call) -> Result<(), String> {
    let on = |r: &Route| match &r.sub {
        Some(s) => conn.subroute(s),
        None => conn.clone(),
    };
    match call {
        Call::Single(route, payload) => {
            let got = on(&route).request(route.id, payload.clone()).await;
            let want = match route.shape {
                Shape::Echo => Ok(payload),
                Shape::Empty => Ok(Bytes::new()),
                _ => Err(CallError::Remote(String::from_utf8_lossy(&payload).into())),
            };
            (got == want)
                .then_some(())
                .ok_or_else(|| format!("{route:?}: {got:?}, wanted {want:?}"))
        }
        Call::SlowDeadline(route, ms) => {
            let got = on(&route)
                .request_with_timeout(
                    route.id,
                    Bytes::from_static(b"slow"),
                    Duration::from_millis(ms),
                )
                .await;
            match got {
                Err(CallError::DeadlineExceeded) => Ok(()),
                other => Err(format!("slow request past its deadline: {other:?}")),
            }
        }
        Call::SlowCancel(route) => {
            let call = on(&route).request(route.id, Bytes::from_static(b"cancel me"));
            match with_timeout(Duration::from_millis(15), call).await {
                None => Ok(()), // dropped: cancelled
                Some(other) => Err(format!("a request that never gets answered: {other:?}")),
            }
        }
        Call::Exchange {
            route,
            initial,
            n,
            cancel,
        } => {
            let (mut tx, mut rx) = on(&route)
                .open_stream(route.id, initial)
                .await
                .map_err(|e| format!("open: {e}"))?;
            if let Shape::First(k, _) = route.shape {
                for i in 0..k {
                    let got = recv(&mut rx, "a first output").await?;
                    if got != output_message(i) {
                        return Err(format!("first output {i}: {got:?}"));
                    }
                }
            }
            for i in 0..n {
                let m = Bytes::from(format!("m{i}"));
                tx.send(m.clone()).await.map_err(|e| format!("send: {e}"))?;
                let got = recv(&mut rx, "an echo").await?;
                if got != cat(b"echo:", &m) {
                    return Err(format!("echo {i}: {got:?}"));
                }
            }
            if cancel {
                // Both halves dropped, the receiver first: a cancel, at a
                // point where the handler waits for input.
                drop(rx);
                drop(tx);
                return Ok(());
            }
            tx.close();
            match rx.recv().await {
                None => Ok(()),
                other => Err(format!("the end of an exchange: {other:?}")),
            }
        }
        Call::Count(route, n, fail) => {
            let (_tx, mut rx) = on(&route)
                .open_stream(route.id, Some(Bytes::from(vec![n, u8::from(fail)])))
                .await
                .map_err(|e| format!("open: {e}"))?;
            for i in 0..n {
                let got = recv(&mut rx, "a count").await?;
                if got != output_message(i) {
                    return Err(format!("count {i}: {got:?}"));
                }
            }
            match (rx.recv().await, fail) {
                (None, false) => Ok(()),
                (Some(Err(CallError::Remote(t))), true) if t == "count failed" => Ok(()),
                (other, _) => Err(format!("the end of a count: {other:?}")),
            }
        }
        Call::Hold(route, deadline) => {
            let Shape::Hold(m, _) = route.shape else {
                unreachable!("planned for hold routes")
            };
            let options = StreamOptions {
                timeout: deadline.map(Duration::from_millis),
                ..StreamOptions::default()
            };
            let (tx, mut rx) = on(&route)
                .open_stream_with(route.id, None, options)
                .await
                .map_err(|e| format!("open: {e}"))?;
            for i in 0..m {
                let got = recv(&mut rx, "a held output").await?;
                if got != output_message(i) {
                    return Err(format!("held output {i}: {got:?}"));
                }
            }
            if deadline.is_none() {
                drop(rx);
                drop(tx);
                return Ok(());
            }
            // Whichever deadline fires first ends it.
            match rx.recv().await {
                Some(Err(CallError::DeadlineExceeded | CallError::Disconnected)) => Ok(()),
                other => Err(format!("a held stream past its deadline: {other:?}")),
            }
        }
    }
}

/// Runs `calls` on `conn`, a few at a time; returns what went wrong.
async fn run_calls(conn: Connection, calls: Vec<Call>) -> Vec<String> {
    let mut problems = Vec::new();
    for batch in calls.chunks(CONCURRENCY) {
        let runs = batch.iter().cloned().map(|call| {
            let conn = conn.clone();
            let what = format!("{call:?}");
            async move {
                match with_timeout(LIMIT, run_call(&conn, call)).await {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(format!("{what}: {e}")),
                    None => Some(format!("{what}: did not finish within {LIMIT:?}")),
                }
            }
        });
        problems.extend(join_all(runs).await.into_iter().flatten());
    }
    problems
}

fn options() -> Options {
    Options {
        auth_token: Arc::new(|_| TOKEN.to_owned()),
        validate_token: Arc::new(|t| {
            if t == TOKEN {
                Ok(())
            } else {
                Err("bad token".into())
            }
        }),
        ..Options::default()
    }
}

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("http://{}", l.local_addr().unwrap());
    (l, host)
}

/// What the recording must show for the run to have covered the issue's
/// cases.
#[derive(Debug, Default)]
struct Coverage {
    outside_table: bool,
    subroutes: bool,
    explicit_deadlines: bool,
    stream_cancels: bool,
    request_cancels: bool,
    absent_responses: bool,
    empty_responses: bool,
    outputs_before_input: bool,
}

fn coverage(t: &Transcript) -> Coverage {
    let mut c = Coverage::default();
    let mut acked = std::collections::HashSet::new();
    for r in &t.records {
        let RecordKind::Ws {
            kind: WsKind::Binary,
            payload,
            ..
        } = &r.kind
        else {
            continue;
        };
        for m in flatten(payload).map(|f| f.messages).unwrap_or_default() {
            match m.op {
                Op::Request | Op::ConnectMux => {
                    c.outside_table |= !matches!(m.handler.0, 78 | 79);
                    c.subroutes |= m.subroute.is_some();
                    c.explicit_deadlines |= m.deadline_ms != 0 && m.deadline_ms != 60_000;
                }
                Op::DisconnectServerMux => {
                    c.stream_cancels |= m.seq != 0;
                    c.request_cancels |= m.seq == 0;
                }
                Op::Response => {
                    let empty = m.payload.is_empty() && !m.flags.contains(Flags::PAYLOAD_IS_ERR);
                    c.absent_responses |= empty && !m.flags.contains(Flags::PAYLOAD_IS_ZERO);
                    c.empty_responses |= empty && m.flags.contains(Flags::PAYLOAD_IS_ZERO);
                }
                Op::AckMux => {
                    acked.insert(m.mux_id);
                }
                Op::MuxServerMsg if acked.remove(&m.mux_id) => {
                    // A stream's first output right after its ack.
                    c.outputs_before_input = true;
                }
                Op::MuxClientMsg | Op::UnblockClMux => {
                    acked.remove(&m.mux_id);
                }
                _ => {}
            }
        }
    }
    c
}

/// Runs the workload between a tokio and a smol node, `dialer` dialing
/// through the tap; returns the tap's recordings.
fn capture(dialer: RuntimeKind, seed: u64, dir: &std::path::Path) -> Vec<PathBuf> {
    let mut rng = Rng(seed);
    let routes = routes(&mut rng);
    // Names: the acceptor's name is the tap's address; it listens elsewhere.
    let (l1, n1) = listener();
    let (l2, n2) = listener();
    let ((dialer_l, dialer_name), (tap_l, acceptor_name)) = if should_dial(&n1, &n2) {
        ((l1, n1), (l2, n2))
    } else {
        ((l2, n2), (l1, n1))
    };
    let (acceptor_l, _) = listener();
    let upstream = acceptor_l.local_addr().unwrap();
    let tap = Tap::start(
        tap_l,
        upstream,
        TapOptions {
            record: Some(dir.to_owned()),
            print: false,
        },
    )
    .unwrap();
    let hosts = [dialer_name.clone(), acceptor_name.clone()];
    let handlers = Handlers::Custom(Arc::new(Workload(routes.clone())));
    let acceptor_kind = match dialer {
        RuntimeKind::Tokio => RuntimeKind::Smol,
        RuntimeKind::Smol => RuntimeKind::Tokio,
    };
    let acceptor = Node::start_with(
        acceptor_kind,
        &acceptor_name,
        &hosts,
        options(),
        Some(acceptor_l),
        &handlers,
    )
    .unwrap();
    let dialing = Node::start_with(
        dialer,
        &dialer_name,
        &hosts,
        options(),
        Some(dialer_l),
        &handlers,
    )
    .unwrap();
    let to_acceptor = dialing.connection(&acceptor_name).unwrap();
    let to_dialer = acceptor.connection(&dialer_name).unwrap();
    dialing
        .block_on(to_acceptor.wait_for_connect(LIMIT))
        .unwrap();
    acceptor
        .block_on(to_dialer.wait_for_connect(LIMIT))
        .unwrap();
    // Both nodes call each other at once.
    let (plan_a, plan_b) = (plan(&mut rng, &routes), plan(&mut rng, &routes));
    let problems: Vec<String> = std::thread::scope(|s| {
        let a = s.spawn(|| dialing.block_on(run_calls(to_acceptor, plan_a)));
        let b = s.spawn(|| acceptor.block_on(run_calls(to_dialer, plan_b)));
        let mut p = a.join().unwrap();
        p.extend(b.join().unwrap());
        p
    });
    let (a, b) = (
        dialing.connection(&acceptor_name).unwrap(),
        acceptor.connection(&dialer_name).unwrap(),
    );
    settle(&a, &b);
    dialing.shutdown();
    acceptor.shutdown();
    let recordings = tap.shutdown(Duration::from_secs(3));
    assert!(
        problems.is_empty(),
        "seed {seed:#x}: the workload itself failed:\n{}",
        problems.join("\n")
    );
    recordings
}

/// Waits until no call is live on either end of a connection, then a
/// little more for the last cleanups on the wire, so the recording has them
/// before the nodes shut down.
fn settle(a: &Connection, b: &Connection) {
    let idle = |s: Option<grid_proto::Stats>| {
        s.is_some_and(|s| {
            s.outgoing_requests + s.outgoing_streams + s.incoming_requests + s.incoming_streams == 0
        })
    };
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        // Twice, a stats period apart: the snapshots lag up to 100 ms.
        if idle(a.stats()) && idle(b.stats()) {
            std::thread::sleep(Duration::from_millis(150));
            if idle(a.stats()) && idle(b.stats()) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes did not settle: {:?} {:?}",
            a.stats(),
            b.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn seed(default: u64) -> u64 {
    std::env::var("GRID_TAP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn capture_and_replay(dialer: RuntimeKind, default_seed: u64) {
    let seed = seed(default_seed);
    let dir = std::env::temp_dir().join(format!("grid-tap-{dialer}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let recordings = capture(dialer, seed, &dir);
    assert_eq!(
        recordings.len(),
        1,
        "one connection through the tap: {recordings:?}"
    );
    let t = Transcript::load(&recordings[0]).unwrap();
    let c = coverage(&t);
    let all = c.outside_table
        && c.subroutes
        && c.explicit_deadlines
        && c.stream_cancels
        && c.request_cancels
        && c.absent_responses
        && c.empty_responses
        && c.outputs_before_input;
    assert!(
        all,
        "seed {seed:#x}: the run did not cover every case: {c:?}"
    );
    let mut failures = Vec::new();
    for target in Target::ALL {
        for role in Role::BOTH {
            match replay(&t, target, role, &ReplayOptions::default()) {
                Outcome::Pass(stats) => assert!(stats.messages_matched > 50, "{stats:?}"),
                Outcome::Skip(why) => failures.push(format!("SKIP {target} {role}: {why}")),
                Outcome::Fail(f) => failures.push(format!("FAIL {target} {role}: {f}")),
            }
        }
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "seed {seed:#x}, recording kept at {}:\n{}",
        recordings[0].display(),
        failures.join("\n")
    );
}

#[test]
fn a_tap_recording_with_tokio_dialing_replays_on_every_target() {
    capture_and_replay(RuntimeKind::Tokio, 0x7a9_0001);
}

#[test]
fn a_tap_recording_with_smol_dialing_replays_on_every_target() {
    capture_and_replay(RuntimeKind::Smol, 0x7a9_0002);
}
