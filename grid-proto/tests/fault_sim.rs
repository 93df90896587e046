//! Seeded fault simulation: for each seed, two connections with the
//! transcripts' handlers on both sides run a random mix of requests and
//! streams in both directions, interleaved with disconnects, failing dials,
//! dead links and time jumps, on a virtual clock with seeded latency and
//! jitter. Every call is tracked by the test and checked against what the
//! handlers must answer.
//!
//! Invariants, checked after every step and at the end of each run:
//! - every call ends exactly once (an answer, a stream end, or the test's
//!   own cancel), with a result its handler could have produced or a
//!   failure the faults explain; no event for an ended or unknown call;
//! - every answer carries exactly the bytes its call asked for, in order;
//! - send credit never exceeds the window, a send succeeds iff credit was
//!   left, and the caller never holds more unconsumed messages than the
//!   callee's out capacity;
//! - the tables match the live calls, frames never pile up in the queue;
//! - incoming calls end exactly once too (checked inside the callee app);
//! - once everything has ended, all tables and per-call timers are empty.
//!
//! `drive()` itself panics on livelock. Seeds: 300 by default;
//! `GRID_SIM_SEEDS=n` runs seeds 0..n, `GRID_SIM_SEED=s` runs only seed s.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use grid_proto::sim::{App, Node, Pair, REF_SUB};
use grid_proto::{
    CallError, CallId, Connection, Event, HandlerId, IncomingId, OpenStream, Request, SendError,
    State, SubrouteId,
};

const DEFAULT_SEEDS: u64 = 300;
/// Workload steps per seed.
const STEPS: usize = 500;

#[test]
fn seeded_fault_simulation() {
    let seeds: Vec<u64> = match std::env::var("GRID_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("GRID_SIM_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("GRID_SIM_SEEDS")
                .map(|s| s.parse().expect("GRID_SIM_SEEDS must be a number"))
                .unwrap_or(DEFAULT_SEEDS);
            (0..n).collect()
        }
    };
    let mut failed = Vec::new();
    let mut totals = Totals::default();
    for seed in &seeds {
        match panic::catch_unwind(AssertUnwindSafe(|| run(*seed))) {
            Ok(t) => totals.add(&t),
            Err(_) => {
                eprintln!(
                    "fault_sim: seed {seed} FAILED; replay with \
                     GRID_SIM_SEED={seed} cargo test -p grid-proto --test fault_sim"
                );
                failed.push(*seed);
            }
        }
    }
    eprintln!("fault_sim: {} seeds, {totals:?}", seeds.len());
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
    // Not vacuous: the workload really ran and really met faults.
    if seeds.len() >= 50 {
        let n = seeds.len() as u64;
        assert!(totals.calls > 50 * n, "{totals:?}");
        assert!(totals.answers > 30 * n && totals.stream_messages > 5 * n);
        assert!(totals.ok_stream_ends > 0 && totals.stream_messages > 0);
        assert!(totals.disconnected_calls > 0 && totals.cancels > 0);
        assert!(totals.deadline_calls > 0 && totals.sessions > seeds.len() as u64);
    }
}

/// What a run did, summed over seeds to show the workload is not vacuous.
#[derive(Debug, Default, Clone)]
struct Totals {
    calls: u64,
    answers: u64,
    stream_messages: u64,
    ok_stream_ends: u64,
    disconnected_calls: u64,
    deadline_calls: u64,
    cancels: u64,
    sessions: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.calls += o.calls;
        self.answers += o.answers;
        self.stream_messages += o.stream_messages;
        self.ok_stream_ends += o.ok_stream_ends;
        self.disconnected_calls += o.disconnected_calls;
        self.deadline_calls += o.deadline_calls;
        self.cancels += o.cancels;
        self.sessions += o.sessions;
    }
}

/// SplitMix64 for the workload (independent of the pair's own seeds).
struct Rand(u64);

impl Rand {
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

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

fn node(pair: &mut Pair, side: Side) -> &mut Node {
    match side {
        Side::Client => &mut pair.client,
        Side::Server => &mut pair.server,
    }
}

/// What a single request must be answered with.
#[derive(Debug)]
enum Expect {
    Payload(Bytes),
    Remote(String),
    Refused(String),
}

/// What a stream must deliver.
#[derive(Debug)]
enum StreamKind {
    /// Handler 78: `prefix ++ m` for every sent `m`, in order; ends after the
    /// caller's EOF once every message was answered.
    Echo {
        prefix: Bytes,
        unanswered: VecDeque<Bytes>,
        closed: bool,
    },
    /// Handler 79: `u32be(i) ++ data` for i in 0..n, then the end.
    Count { data: Bytes, next: u32, n: u32 },
    /// Ends with this remote error, nothing before it.
    Fails(String),
    /// Refused with this text.
    Refused(String),
}

#[derive(Debug)]
enum Call {
    Request(Expect),
    Stream {
        kind: StreamKind,
        window: u32,
        unconsumed: u32,
    },
}

#[derive(Debug)]
struct Tracked {
    call: Call,
    live: bool,
    /// The test cancelled it.
    cancelled: bool,
    has_deadline: bool,
    /// A dead-link episode happened while it was live.
    lossy: bool,
}

/// The calls one side made.
#[derive(Debug)]
struct Caller {
    side: Side,
    calls: BTreeMap<u64, Tracked>,
    tag: u64,
}

/// Out capacity of every reference stream handler.
const OUT_CAPACITY: u32 = 1;

impl Caller {
    fn new(side: Side) -> Caller {
        Caller {
            side,
            calls: BTreeMap::new(),
            tag: 0,
        }
    }

    /// A payload no other call of this run carries.
    fn unique(&mut self, rng: &mut Rand) -> Bytes {
        self.tag += 1;
        let mut p = format!("{:?}{}|", self.side, self.tag).into_bytes();
        p.extend(rng.bytes(24));
        Bytes::from(p)
    }

    fn live_ids(&self, pred: impl Fn(&Tracked) -> bool) -> Vec<u64> {
        self.calls
            .iter()
            .filter(|(_, t)| t.live && pred(t))
            .map(|(id, _)| *id)
            .collect()
    }

    fn track(&mut self, id: CallId, call: Call, has_deadline: bool, totals: &mut Totals) {
        assert!(
            !self.calls.contains_key(&id.0),
            "mux id {} reused by {:?}",
            id.0,
            self.side
        );
        totals.calls += 1;
        self.calls.insert(
            id.0,
            Tracked {
                call,
                live: true,
                cancelled: false,
                has_deadline,
                lossy: false,
            },
        );
    }

    /// Checks this side's caller events and updates the tracking.
    fn observe(&mut self, events: &[Event], totals: &mut Totals) {
        for e in events {
            let (id, ev) = match e {
                Event::Response { id, .. }
                | Event::StreamMessage { id, .. }
                | Event::StreamCredit { id }
                | Event::StreamEnd { id, .. }
                | Event::StreamStalled { id } => (*id, e),
                _ => continue,
            };
            let side = self.side;
            let t = self
                .calls
                .get_mut(&id.0)
                .unwrap_or_else(|| panic!("{side:?}: event for a call never made: {ev:?}"));
            // A notice queued by a command just before the test cancelled
            // the call (the workload issues several commands between
            // drains) may still arrive; nothing else may.
            let stale_notice =
                matches!(ev, Event::StreamStalled { .. } | Event::StreamCredit { .. });
            if !t.live && t.cancelled && stale_notice {
                continue;
            }
            assert!(t.live, "{side:?}: event after the call ended: {ev:?}");
            match (ev, &mut t.call) {
                (Event::Response { result, .. }, Call::Request(expect)) => {
                    t.live = false;
                    totals.answers += 1;
                    let fine = match (result, &*expect) {
                        (Ok(Some(got)), Expect::Payload(want)) => got == want,
                        (Err(CallError::Remote(got)), Expect::Remote(want)) => got == want,
                        (Err(CallError::Refused(got)), Expect::Refused(want)) => got == want,
                        (Err(e), _) => explained(e, t.has_deadline, false, totals),
                        _ => false,
                    };
                    assert!(fine, "{side:?} call {id}: {result:?} for {expect:?}");
                }
                (
                    Event::StreamMessage { payload, .. },
                    Call::Stream {
                        kind, unconsumed, ..
                    },
                ) => {
                    totals.stream_messages += 1;
                    *unconsumed += 1;
                    assert!(
                        *unconsumed <= OUT_CAPACITY,
                        "{side:?} call {id}: more unconsumed messages than the window"
                    );
                    let want = match kind {
                        StreamKind::Echo {
                            prefix, unanswered, ..
                        } => {
                            let m = unanswered.pop_front().unwrap_or_else(|| {
                                panic!("{side:?} call {id}: answer to nothing: {payload:?}")
                            });
                            Bytes::from([&prefix[..], &m[..]].concat())
                        }
                        StreamKind::Count { data, next, n } => {
                            assert!(*next < *n, "{side:?} call {id}: too many messages");
                            *next += 1;
                            Bytes::from([&(*next - 1).to_be_bytes()[..], &data[..]].concat())
                        }
                        other => panic!("{side:?} call {id}: message on {other:?}"),
                    };
                    assert_eq!(payload, &want, "{side:?} call {id}: wrong message");
                }
                (
                    Event::StreamEnd { result, .. },
                    Call::Stream {
                        kind, unconsumed, ..
                    },
                ) => {
                    t.live = false;
                    // The callee's final message (EOF or error) takes a
                    // credit: the caller must have handed one back.
                    let final_message = matches!(result, Ok(()) | Err(CallError::Remote(_)));
                    assert!(
                        !final_message || *unconsumed < OUT_CAPACITY,
                        "{side:?} call {id}: final message without credit"
                    );
                    let fine = match (result, &*kind) {
                        (
                            Ok(()),
                            StreamKind::Echo {
                                unanswered, closed, ..
                            },
                        ) => *closed && unanswered.is_empty(),
                        (Ok(()), StreamKind::Count { next, n, .. }) => next == n,
                        (Err(CallError::Remote(got)), StreamKind::Fails(want)) => got == want,
                        (Err(CallError::Refused(got)), StreamKind::Refused(want)) => got == want,
                        (Err(e), _) => explained(e, t.has_deadline, t.lossy, totals),
                        _ => false,
                    };
                    if result.is_ok() {
                        totals.ok_stream_ends += 1;
                    }
                    assert!(fine, "{side:?} call {id}: {result:?} for {kind:?}");
                }
                (Event::StreamCredit { .. } | Event::StreamStalled { .. }, Call::Stream { .. }) => {
                }
                (ev, call) => panic!("{side:?} call {id}: {ev:?} for {call:?}"),
            }
        }
    }

    /// The core's view must match the tracking.
    fn check(&self, conn: &Connection, now: Instant) {
        let side = self.side;
        let (mut requests, mut streams) = (0, 0);
        for (id, t) in &self.calls {
            let id = CallId(*id);
            assert_eq!(conn.is_live(id), t.live, "{side:?} {id}: liveness");
            if !t.live {
                continue;
            }
            match &t.call {
                Call::Request(_) => requests += 1,
                Call::Stream { window, .. } => {
                    streams += 1;
                    let credit = conn.credit(id).expect("live stream");
                    assert!(
                        credit <= *window,
                        "{side:?} {id}: credit {credit} > {window}"
                    );
                }
            }
        }
        let st = conn.stats(now);
        assert_eq!(
            (st.outgoing_requests, st.outgoing_streams),
            (requests, streams),
            "{side:?}: tables vs live calls"
        );
        assert_eq!(st.queued_bytes, 0, "{side:?}: frames left in the queue");
    }
}

/// Whether a failure is explained by the faults: a lost session, a
/// deadline the call had, or (for a call that lived through a dead link)
/// the stream liveness check firing before the connection's.
fn explained(e: &CallError, has_deadline: bool, lossy: bool, totals: &mut Totals) -> bool {
    match e {
        CallError::Disconnected => {
            totals.disconnected_calls += 1;
            true
        }
        CallError::DeadlineExceeded => {
            totals.deadline_calls += 1;
            has_deadline
        }
        CallError::Unresponsive => lossy,
        _ => false,
    }
}

/// An incoming call as the callee application has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InState {
    /// Live: the handler is running.
    Open,
    /// The handler returned; its final message waits for a credit.
    Finishing,
    /// The handler's answer ended it.
    Answered,
    /// The core had ended it before the handler saw its opening: the
    /// `IncomingCancelled` is still queued.
    CancelPending,
    /// `IncomingCancelled` delivered.
    Cancelled,
}

/// A running stream handler (the transcripts' handler table).
#[derive(Debug, Default)]
struct Handler {
    /// Prepended to every echoed input (stream 78).
    prefix: Bytes,
    /// Inputs delivered and not yet taken: taken one at a time, only when
    /// the previous answer went out, like a Go handler blocked on output.
    inbox: VecDeque<Bytes>,
    /// The answer waiting for credit.
    outbox: Option<Bytes>,
    /// Stream 79: next index, count, data.
    count: Option<(u32, u32, Bytes)>,
    /// The handler's result once it has no more to send.
    result: Option<Result<(), String>>,
}

/// The callee application: the transcripts' handler table, written here
/// so that it knows exactly what it answered. It checks that every
/// incoming call is opened once and ends exactly once (answered or
/// cancelled, never both), with no event after its end.
struct Callee {
    side: Side,
    handlers: HashMap<u64, Handler>,
    states: Rc<RefCell<HashMap<u64, InState>>>,
}

fn incoming_id(e: &Event) -> Option<IncomingId> {
    match e {
        Event::IncomingRequest { id, .. }
        | Event::IncomingStream { id, .. }
        | Event::IncomingMessage { id, .. }
        | Event::IncomingInputEnd { id }
        | Event::IncomingCredit { id }
        | Event::IncomingCancelled { id, .. }
        | Event::IncomingStalled { id } => Some(*id),
        _ => None,
    }
}

fn cat(a: &[u8], b: &[u8]) -> Bytes {
    Bytes::from([a, b].concat())
}

impl Callee {
    fn set(&self, id: IncomingId, st: InState) {
        self.states.borrow_mut().insert(id.0, st);
    }

    /// Answers a request; returns whether the core still had it.
    fn answer(conn: &mut Connection, e: &Event) -> bool {
        let Event::IncomingRequest {
            id,
            handler,
            subroute,
            payload,
            ..
        } = e
        else {
            unreachable!()
        };
        let p = payload.clone().unwrap_or_default();
        let sub = Some(SubrouteId::new(HandlerId::TEST, REF_SUB));
        if *subroute == sub {
            conn.incoming(*id).respond(Ok(Some(cat(b"sub:", &p))))
        } else if subroute.is_none() && *handler == HandlerId::TEST {
            conn.incoming(*id).respond(Ok(Some(p)))
        } else if subroute.is_none() && *handler == HandlerId::TEST2 {
            conn.incoming(*id)
                .respond(Err(String::from_utf8_lossy(&p).into_owned()))
        } else {
            conn.incoming(*id).reject_unknown_handler()
        }
    }

    /// Starts a stream handler; returns whether the core still had it.
    fn start(&mut self, conn: &mut Connection, now: Instant, e: &Event) -> bool {
        let Event::IncomingStream {
            id,
            handler,
            subroute,
            payload,
            ..
        } = e
        else {
            unreachable!()
        };
        let p = payload.clone().unwrap_or_default();
        let sub = Some(SubrouteId::new(HandlerId::TEST, REF_SUB));
        let mut h = Handler::default();
        let caps = if *subroute == sub || (subroute.is_none() && *handler == HandlerId::TEST) {
            h.prefix = if subroute.is_some() {
                cat(b"sub:", &p)
            } else {
                p
            };
            grid_proto::Capacities::DEFAULT
        } else if subroute.is_none() && *handler == HandlerId::TEST2 {
            if p.len() < 4 {
                h.result = Some(Err("refpeer: payload too short".into()));
            } else {
                let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                h.count = Some((0, n, p.slice(4..)));
                h.result = Some(Ok(()));
            }
            caps_of(0, 1)
        } else {
            return conn.incoming(*id).reject_unknown_handler();
        };
        if !conn.incoming(*id).accept(now, caps) {
            return false;
        }
        self.handlers.insert(id.0, h);
        true
    }

    /// Moves a stream handler along as far as credit allows.
    fn run(&mut self, conn: &mut Connection, id: IncomingId) {
        let side = self.side;
        let Some(h) = self.handlers.get_mut(&id.0) else {
            return;
        };
        loop {
            if h.outbox.is_none() {
                if let Some(m) = h.inbox.pop_front() {
                    conn.incoming(id).consumed();
                    h.outbox = Some(cat(&h.prefix, &m));
                } else if let Some((next, n, data)) = &mut h.count
                    && *next < *n
                {
                    h.outbox = Some(cat(&next.to_be_bytes(), data));
                    *next += 1;
                }
            }
            let Some(m) = h.outbox.clone() else { break };
            match conn.incoming(id).send(m) {
                Ok(()) => h.outbox = None,
                Err(SendError::NoCredit) => return,
                Err(e) => panic!("{side:?}: {id}: send failed: {e}"),
            }
        }
        let done = h.count.as_ref().is_none_or(|(next, n, _)| next == n);
        if done && let Some(result) = h.result.take() {
            assert!(
                conn.incoming(id).finish(result),
                "{side:?}: {id}: finish refused"
            );
            self.handlers.remove(&id.0);
            let st = if conn.is_live(id) {
                InState::Finishing
            } else {
                InState::Answered
            };
            self.set(id, st);
        }
    }
}

fn caps_of(in_capacity: u32, out_capacity: u32) -> grid_proto::Capacities {
    grid_proto::Capacities {
        in_capacity,
        out_capacity,
    }
}

impl App for Callee {
    fn on_event(&mut self, conn: &mut Connection, now: Instant, event: &Event) {
        let Some(id) = incoming_id(event) else {
            return;
        };
        let side = self.side;
        let mut before = self.states.borrow().get(&id.0).copied();
        let live = conn.is_live(id);
        let cancel = matches!(event, Event::IncomingCancelled { .. });
        if before == Some(InState::Open) && !live && !cancel {
            // The core ended it after queueing this event; its
            // IncomingCancelled is queued behind it.
            self.handlers.remove(&id.0);
            self.set(id, InState::CancelPending);
            before = Some(InState::CancelPending);
        }
        match (event, before) {
            (Event::IncomingRequest { .. }, None) => {
                let answered = Callee::answer(conn, event);
                assert_eq!(answered, live, "{side:?}: {id}: answer accepted iff live");
                let st = if answered {
                    InState::Answered
                } else {
                    InState::CancelPending
                };
                self.set(id, st);
            }
            (Event::IncomingStream { .. }, None) => {
                let started = self.start(conn, now, event);
                assert_eq!(started, live, "{side:?}: {id}: start accepted iff live");
                let st = match (started, self.handlers.contains_key(&id.0)) {
                    (false, _) => InState::CancelPending,
                    (true, false) => InState::Answered, // refused: unknown handler
                    (true, true) => InState::Open,
                };
                self.set(id, st);
                self.run(conn, id);
            }
            (
                Event::IncomingCancelled { .. },
                Some(InState::Open | InState::Finishing | InState::CancelPending),
            ) => {
                assert!(!live, "{side:?}: cancelled {id} still live");
                self.handlers.remove(&id.0);
                self.set(id, InState::Cancelled);
            }
            // Queued before the core ended it; the handler has gone.
            (_, Some(InState::CancelPending)) => {}
            (Event::IncomingMessage { payload, .. }, Some(InState::Open)) => {
                let h = self.handlers.get_mut(&id.0).expect("open handler");
                h.inbox.push_back(payload.clone().unwrap_or_default());
                self.run(conn, id);
            }
            (Event::IncomingInputEnd { .. }, Some(InState::Open)) => {
                let h = self.handlers.get_mut(&id.0).expect("open handler");
                h.result = Some(Ok(()));
                self.run(conn, id);
            }
            (Event::IncomingCredit { .. } | Event::IncomingStalled { .. }, Some(InState::Open)) => {
                self.run(conn, id);
            }
            // Queued before the handler finished (a frame carried the
            // caller's EOF and a credit): true then, nothing to do now.
            (
                Event::IncomingCredit { .. } | Event::IncomingStalled { .. },
                Some(InState::Finishing | InState::Answered),
            ) => {}
            (e, st) => panic!("{side:?}: {e:?} for {id} in state {st:?}"),
        }
    }
}

/// One seeded run.
struct World {
    pair: Pair,
    rng: Rand,
    callers: [Caller; 2],
    incoming: [Rc<RefCell<HashMap<u64, InState>>>; 2],
    totals: Totals,
}

const SIDES: [Side; 2] = [Side::Client, Side::Server];

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rand(seed ^ 0xfa17_5eed);
        let mut pair = Pair::new(seed);
        pair.latency = Duration::from_micros(rng.below(20_000));
        pair.jitter = Duration::from_micros(rng.below(20_000));
        pair.record = false;
        let incoming = [Rc::default(), Rc::default()];
        for (side, states) in SIDES.iter().zip(&incoming) {
            node(&mut pair, *side).set_app(Callee {
                side: *side,
                handlers: HashMap::new(),
                states: Rc::clone(states),
            });
        }
        World {
            pair,
            rng,
            callers: [Caller::new(Side::Client), Caller::new(Side::Server)],
            incoming,
            totals: Totals::default(),
        }
    }

    fn caller(&mut self, side: Side) -> &mut Caller {
        &mut self.callers[side as usize]
    }

    /// Takes and checks every event, then the invariants.
    fn observe(&mut self) {
        for side in SIDES {
            let events = node(&mut self.pair, side).take_events();
            self.totals.sessions += events
                .iter()
                .filter(|e| matches!(e, Event::Connected { .. }))
                .count() as u64;
            let totals = &mut self.totals;
            self.callers[side as usize].observe(&events, totals);
        }
        let now = self.pair.now;
        for side in SIDES {
            let conn = &node(&mut self.pair, side).conn;
            self.callers[side as usize].check(conn, now);
            // With every event delivered: a call the core still has is
            // open or finishing, and one it dropped has ended visibly.
            let mut states = self.incoming[side as usize].borrow_mut();
            for (id, st) in states.iter_mut() {
                let live = conn.is_live(IncomingId(*id));
                match (*st, live) {
                    (InState::Open | InState::Finishing, true)
                    | (InState::Answered | InState::Cancelled, false) => {}
                    // The final message went out with a returned credit.
                    (InState::Finishing, false) => *st = InState::Answered,
                    (st, live) => panic!("{side:?}: incoming {id} is {st:?}, live = {live}"),
                }
            }
            // Timers belong to live calls: at most two each.
            let stats = conn.stats(now);
            let bound = stats.outgoing_requests
                + 2 * stats.outgoing_streams
                + stats.incoming_requests
                + 2 * stats.incoming_streams;
            assert!(stats.timers <= bound, "{side:?}: {stats:?}");
        }
    }

    fn drive(&mut self) {
        self.pair.drive();
        self.observe();
    }

    fn advance(&mut self, d: Duration) {
        self.pair.advance(d);
        self.observe();
    }

    fn deadline(&mut self, now: Instant, max_ms: u64) -> Option<Instant> {
        self.rng
            .chance(30)
            .then(|| now + ms(1 + self.rng.below(max_ms)))
    }

    fn request(&mut self, side: Side) {
        let now = self.pair.now;
        let deadline = self.deadline(now, 3_000);
        let p = self.callers[side as usize].unique(&mut self.rng);
        let (handler, sub, expect) = match self.rng.below(5) {
            0 | 1 => (HandlerId::TEST, None, Expect::Payload(p.clone())),
            2 => (
                HandlerId::TEST2,
                None,
                Expect::Remote(String::from_utf8_lossy(&p).into_owned()),
            ),
            3 => (
                HandlerId(77),
                None,
                Expect::Refused("Invalid Handler for type: CheckParts3".into()),
            ),
            _ => (
                HandlerId::TEST,
                Some(SubrouteId::new(HandlerId::TEST, REF_SUB)),
                Expect::Payload(Bytes::from([&b"sub:"[..], &p[..]].concat())),
            ),
        };
        // Go's echo answers an empty request with an empty payload.
        let (payload, expect) =
            if self.rng.chance(10) && sub.is_none() && handler == HandlerId::TEST {
                (Bytes::new(), Expect::Payload(Bytes::new()))
            } else {
                (p, expect)
            };
        let conn = &mut node(&mut self.pair, side).conn;
        match conn.request(
            now,
            Request {
                handler,
                subroute: sub,
                payload,
                deadline,
            },
        ) {
            Ok(id) => {
                let totals = &mut self.totals;
                self.callers[side as usize].track(id, Call::Request(expect), true, totals);
            }
            Err(CallError::NotConnected) => assert_ne!(conn.state(), State::Connected),
            Err(e) => panic!("{side:?}: request refused: {e}"),
        }
    }

    fn open_stream(&mut self, side: Side) {
        let now = self.pair.now;
        let deadline = self.deadline(now, 30_000);
        let p = self.callers[side as usize].unique(&mut self.rng);
        let (handler, sub, payload, kind, window) = match self.rng.below(6) {
            0..=2 => {
                let sub = self
                    .rng
                    .chance(25)
                    .then(|| SubrouteId::new(HandlerId::TEST, REF_SUB));
                let prefix = if sub.is_some() {
                    Bytes::from([&b"sub:"[..], &p[..]].concat())
                } else {
                    p.clone()
                };
                let kind = StreamKind::Echo {
                    prefix,
                    unanswered: VecDeque::new(),
                    closed: false,
                };
                (HandlerId::TEST, sub, p, kind, 1)
            }
            3 | 4 => {
                let n = self.rng.below(6) as u32;
                let payload = Bytes::from([&n.to_be_bytes()[..], &p[..]].concat());
                (
                    HandlerId::TEST2,
                    None,
                    payload,
                    StreamKind::Count {
                        data: p,
                        next: 0,
                        n,
                    },
                    0,
                )
            }
            _ if self.rng.chance(50) => (
                HandlerId::TEST2,
                None,
                p.slice(..3),
                StreamKind::Fails("refpeer: payload too short".into()),
                0,
            ),
            _ => (
                HandlerId(77),
                None,
                p,
                StreamKind::Refused("Invalid Handler for type: CheckParts3".into()),
                0,
            ),
        };
        let conn = &mut node(&mut self.pair, side).conn;
        match conn.open_stream(
            now,
            OpenStream {
                handler,
                subroute: sub,
                payload: Some(payload),
                deadline,
                capacities: None,
            },
        ) {
            Ok(id) => {
                let call = Call::Stream {
                    kind,
                    window,
                    unconsumed: 0,
                };
                let totals = &mut self.totals;
                self.callers[side as usize].track(id, call, deadline.is_some(), totals);
            }
            Err(CallError::NotConnected) => assert_ne!(conn.state(), State::Connected),
            Err(e) => panic!("{side:?}: stream refused: {e}"),
        }
    }

    fn open_echo_streams(&self, side: Side) -> Vec<u64> {
        self.callers[side as usize].live_ids(|t| {
            matches!(
                t.call,
                Call::Stream {
                    kind: StreamKind::Echo { closed: false, .. },
                    ..
                }
            )
        })
    }

    fn send(&mut self, side: Side) {
        let Some(id) = self.rng.pick(&self.open_echo_streams(side)) else {
            return;
        };
        let m = self.callers[side as usize].unique(&mut self.rng);
        let conn = &mut node(&mut self.pair, side).conn;
        let credit = conn.credit(CallId(id)).expect("live");
        let sent = conn.call(CallId(id)).send(m.clone());
        if credit == 0 {
            assert_eq!(sent, Err(SendError::NoCredit), "{side:?} {id}");
            return;
        }
        assert_eq!(sent, Ok(()), "{side:?} {id}: send with credit {credit}");
        if let Some(Tracked {
            call:
                Call::Stream {
                    kind: StreamKind::Echo { unanswered, .. },
                    ..
                },
            ..
        }) = self.caller(side).calls.get_mut(&id)
        {
            unanswered.push_back(m);
        }
    }

    fn close(&mut self, side: Side, id: u64) {
        let conn = &mut node(&mut self.pair, side).conn;
        assert_eq!(conn.call(CallId(id)).close(), Ok(()), "{side:?} {id}");
        if let Some(Tracked {
            call:
                Call::Stream {
                    kind: StreamKind::Echo { closed, .. },
                    ..
                },
            ..
        }) = self.caller(side).calls.get_mut(&id)
        {
            *closed = true;
        }
    }

    fn consume(&mut self, side: Side, id: u64) {
        node(&mut self.pair, side).conn.call(CallId(id)).consumed();
        if let Some(Tracked {
            call: Call::Stream { unconsumed, .. },
            ..
        }) = self.caller(side).calls.get_mut(&id)
        {
            *unconsumed -= 1;
        }
    }

    fn with_unconsumed(&self, side: Side) -> Vec<u64> {
        self.callers[side as usize].live_ids(|t| {
            matches!(
                t.call,
                Call::Stream {
                    unconsumed: 1..,
                    ..
                }
            )
        })
    }

    fn cancel(&mut self, side: Side) {
        let Some(id) = self
            .rng
            .pick(&self.callers[side as usize].live_ids(|_| true))
        else {
            return;
        };
        assert!(node(&mut self.pair, side).conn.call(CallId(id)).cancel());
        self.totals.cancels += 1;
        if let Some(t) = self.caller(side).calls.get_mut(&id) {
            t.live = false;
            t.cancelled = true;
        }
    }

    /// The link goes dead in both directions until a pong timeout ends the
    /// session (the reliable transport the protocol assumes is never
    /// half-lossy: a dead link always ends in a disconnect). Frames already
    /// on their way still arrive.
    fn dead_link(&mut self) {
        for caller in &mut self.callers {
            for t in caller.calls.values_mut() {
                if t.live {
                    t.lossy = true;
                }
            }
        }
        let was_connected = self.pair.client.conn.state() == State::Connected;
        self.pair.blackhole_to_server = true;
        self.pair.blackhole_to_client = true;
        self.advance(secs(31));
        self.pair.blackhole_to_server = false;
        self.pair.blackhole_to_client = false;
        if was_connected {
            assert_ne!(
                self.pair.client.conn.state(),
                State::Connected,
                "a dead link must end the session"
            );
        }
    }

    fn step(&mut self) {
        let side = if self.rng.chance(65) {
            Side::Client
        } else {
            Side::Server
        };
        match self.rng.below(100) {
            0..=19 => self.request(side),
            20..=29 => self.open_stream(side),
            30..=44 => self.send(side),
            45..=49 => {
                if let Some(id) = self.rng.pick(&self.open_echo_streams(side)) {
                    self.close(side, id);
                }
            }
            50..=64 => {
                if let Some(id) = self.rng.pick(&self.with_unconsumed(side)) {
                    self.consume(side, id);
                }
            }
            65..=69 => self.cancel(side),
            70..=79 => self.drive(),
            80..=89 => {
                let d = Duration::from_micros(self.rng.below(60_000));
                self.advance(d);
            }
            90..=94 => {
                let d = ms(500 + self.rng.below(5_000));
                self.advance(d);
            }
            95 => {
                let d = secs(10 + self.rng.below(60));
                self.advance(d);
            }
            96 | 97 => {
                self.pair.failing_dials = self.rng.below(3) as u32;
                self.pair.disconnect();
                self.observe();
            }
            98 => self.dead_link(),
            _ => {
                // A burst: several commands land in one merged frame.
                for _ in 0..self.rng.below(8) {
                    self.request(side);
                }
            }
        }
    }

    /// Stops the workload and lets every call end: inputs closed, messages
    /// consumed, time past every deadline.
    fn wind_down(&mut self) {
        self.pair.failing_dials = 0;
        for _ in 0..200 {
            if self.callers.iter().all(|c| c.live_ids(|_| true).is_empty()) {
                break;
            }
            for side in SIDES {
                for id in self.open_echo_streams(side) {
                    self.close(side, id);
                }
                for id in self.with_unconsumed(side) {
                    self.consume(side, id);
                }
            }
            self.advance(secs(1));
        }
        // Past the longest request timeout, with pings and idle checks.
        self.advance(secs(61));
        let now = self.pair.now;
        for side in SIDES {
            let caller = &self.callers[side as usize];
            let live = caller.live_ids(|_| true);
            assert!(live.is_empty(), "{side:?}: calls never ended: {live:?}");
            let open: Vec<u64> = self.incoming[side as usize]
                .borrow()
                .iter()
                .filter(|(_, s)| !matches!(s, InState::Answered | InState::Cancelled))
                .map(|(id, _)| *id)
                .collect();
            assert!(open.is_empty(), "{side:?}: incoming never ended: {open:?}");
            let st = node(&mut self.pair, side).conn.stats(now);
            assert_eq!(
                (
                    st.outgoing_requests,
                    st.outgoing_streams,
                    st.incoming_requests,
                    st.incoming_streams,
                    st.timers,
                    st.queued_bytes
                ),
                (0, 0, 0, 0, 0, 0),
                "{side:?}: tables not empty at the end"
            );
        }
    }
}

fn run(seed: u64) -> Totals {
    let mut w = World::new(seed);
    let trace = std::env::var_os("GRID_SIM_TRACE").is_some();
    w.pair.record = trace;
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        w.drive();
        for _ in 0..STEPS {
            w.step();
        }
        w.wind_down();
    }));
    if let Err(e) = result {
        if trace {
            dump(&w.pair);
        }
        panic::resume_unwind(e);
    }
    w.totals
}

/// Prints every message of the run (`GRID_SIM_TRACE=1`).
fn dump(pair: &Pair) {
    let start = pair.sent.first().map_or(pair.now, |s| s.at);
    for w in wire(pair) {
        let m = &w.msg;
        eprintln!(
            "{:>12.6} {} {}{:?} mux {} seq {} flags {:?} len {}",
            (w.at - start).as_secs_f64(),
            if w.from_client { "C->S" } else { "S->C" },
            if w.dropped { "LOST " } else { "" },
            m.op,
            m.mux_id,
            m.seq,
            m.flags,
            m.payload.len()
        );
    }
}
