//! Arbitrary input for a [`Pair`]: the fuzz target and the seeded property
//! test of the state machine both feed bytes to [`run`], which reads them as
//! a script of actions (calls, stream traffic, cancellations, time jumps,
//! disconnects, garbage and mutated frames in both directions) and checks
//! the invariants after every step. A violated invariant panics with a
//! message; so does any panic inside the core.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::{CallId, Event};
use crate::flags::Flags;
use crate::handler::HandlerId;
use crate::message::Message;
use crate::op::Op;
use crate::outgoing::{OpenStream, Request};
use crate::sim::{Pair, RefPeer};
use crate::state::State;

/// Most actions one input is read as (keeps a fuzz case short). Time moves
/// and frames travel only when the script says so (drive or advance), so
/// calls are often in flight when a disconnect or a forged frame hits.
const MAX_ACTIONS: usize = 400;

/// Reads bytes, returning zeros once they run out.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn bytes(&mut self, n: usize) -> Bytes {
        let end = (self.pos + n).min(self.data.len());
        let out = Bytes::copy_from_slice(&self.data[self.pos.min(end)..end]);
        self.pos += n;
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

/// What the script knows about a call it made.
struct Call {
    /// For echo requests: the payload the answer must carry.
    echo: Option<Bytes>,
    /// For streams: the send window.
    window: Option<u32>,
    /// When the call must have ended at the latest.
    deadline: Option<Instant>,
    /// Stream messages delivered and not yet consumed by the script.
    unconsumed: u32,
}

/// Checks made while the script runs.
#[derive(Default)]
struct Ledger {
    live: BTreeMap<u64, Call>,
    ended: BTreeSet<u64>,
    /// Frames were injected towards the client: its answers may be forged.
    client_tampered: bool,
    /// Frames were injected towards the server.
    server_tampered: bool,
    /// Take every stream message as it arrives (the liveness phase).
    consume_all: bool,
}

impl Ledger {
    fn end(&mut self, id: CallId, what: &str) {
        assert!(
            !self.ended.contains(&id.0),
            "{what} for {id} which already ended"
        );
        assert!(
            self.live.contains_key(&id.0),
            "{what} for {id} which was never started"
        );
        self.live.remove(&id.0);
        self.ended.insert(id.0);
    }
}

fn check_events(pair: &mut Pair, ledger: &mut Ledger) {
    let mut consumed = Vec::new();
    for event in pair.client.take_events() {
        match &event {
            Event::Response { id, result } => {
                if let (Some(call), Ok(payload), false) =
                    (ledger.live.get(&id.0), result, ledger.client_tampered)
                    && let Some(want) = &call.echo
                {
                    let got = payload.clone().unwrap_or_default();
                    assert_eq!(&got, want, "{id} got another call's response");
                }
                ledger.end(*id, "a response");
            }
            Event::StreamEnd { id, .. } => ledger.end(*id, "a stream end"),
            Event::StreamMessage { id, .. } => {
                assert!(
                    ledger.live.contains_key(&id.0),
                    "a message for {id} which is not live"
                );
                if ledger.consume_all {
                    consumed.push(*id);
                } else if let Some(call) = ledger.live.get_mut(&id.0) {
                    call.unconsumed += 1;
                }
            }
            _ => {}
        }
    }
    for id in consumed {
        pair.client.conn.call(id).consumed();
    }
    pair.server.take_events();
}

fn check_bounds(pair: &Pair, ledger: &Ledger) {
    let now = pair.now;
    for node in [&pair.client, &pair.server] {
        let s = node.conn.stats(now);
        let cfg = node.conn.config();
        assert!(
            s.queued_bytes <= cfg.settings.max_queued_bytes + (1 << 20),
            "queue grew to {} bytes",
            s.queued_bytes
        );
        assert!(s.incoming_streams <= cfg.settings.max_incoming_streams);
        assert!(s.incoming_requests <= cfg.settings.max_incoming_requests);
    }
    for (id, call) in &ledger.live {
        // Timers up to `now` have fired by the time a step returns.
        if let Some(d) = call.deadline {
            assert!(d > now, "call {id} outlived its deadline by {:?}", now - d);
        }
        if let (Some(window), Some(credit)) = (call.window, pair.client.conn.credit(CallId(*id))) {
            assert!(
                credit <= window,
                "credit {credit} above the window {window}"
            );
        }
    }
}

/// A message built from input bytes: any op (known or not), small mux ids
/// and sequence numbers so it often hits live state, any flags.
fn forged_message(input: &mut Input<'_>) -> Bytes {
    let op = Op::from_u8(input.byte() % 18).unwrap_or(Op::Ping);
    let mut m = Message::new(op, u64::from(input.byte() % 8));
    m.seq = u32::from(input.byte() % 8);
    m.deadline_ms = u32::from(input.byte()) * 100;
    m.handler = HandlerId(input.byte() % 82);
    m.flags = Flags::from_bits(input.byte()).without(Flags::SUBROUTE);
    let len = usize::from(input.byte() % 40);
    m.payload = input.bytes(len);
    m.to_bytes()
}

/// Runs the script in `data`; panics on any violated invariant.
pub fn run(data: &[u8]) {
    run_script(data, false);
}

/// Like [`run`] without forged, mutated or replayed frames: honest peers
/// only, so the liveness check (a stream whose caller ends its input and
/// takes every message ends) applies to every script.
pub fn run_honest(data: &[u8]) {
    run_script(data, true);
}

fn run_script(data: &[u8], honest: bool) {
    let mut input = Input { data, pos: 0 };
    let mut pair = Pair::new(u64::from(input.byte()));
    pair.latency = Duration::from_micros(u64::from(input.byte()) * 10);
    pair.jitter = Duration::from_micros(u64::from(input.byte()) * 10);
    pair.record = true;
    pair.server.set_app(RefPeer::default());
    pair.client.set_app(RefPeer::default());
    pair.drive();
    let mut ledger = Ledger::default();

    for _ in 0..MAX_ACTIONS {
        if input.done() {
            break;
        }
        let now = pair.now;
        let mut action = input.byte() % 16;
        if honest && (10..=14).contains(&action) {
            action = 15;
        }
        match action {
            0 | 1 => {
                let handler = HandlerId(76 + input.byte() % 5);
                let len = usize::from(input.byte() % 24);
                let payload = input.bytes(len);
                let deadline = (input.byte().is_multiple_of(4))
                    .then(|| now + Duration::from_millis(u64::from(input.byte()) * 50));
                if let Ok(id) = pair.client.conn.request(
                    now,
                    Request {
                        handler,
                        subroute: None,
                        payload: payload.clone(),
                        deadline,
                    },
                ) {
                    let echo = (handler == HandlerId::TEST).then_some(payload);
                    // Without a deadline Go's default of 60 s applies.
                    let deadline = Some(deadline.unwrap_or(now + Duration::from_secs(60)));
                    ledger.live.insert(
                        id.0,
                        Call {
                            echo,
                            window: None,
                            deadline,
                            unconsumed: 0,
                        },
                    );
                }
            }
            2 => {
                let handler = if input.byte().is_multiple_of(2) {
                    HandlerId::TEST
                } else {
                    HandlerId::TEST2
                };
                let mut payload = input.u32().min(20).to_be_bytes().to_vec();
                payload.extend_from_slice(&input.bytes(3));
                let caps = RefPeer::capacities(handler);
                let deadline = (input.byte().is_multiple_of(4))
                    .then(|| now + Duration::from_secs(u64::from(input.byte() % 40)));
                if let Ok(id) = pair.client.conn.open_stream(
                    now,
                    OpenStream {
                        handler,
                        subroute: None,
                        payload: Some(payload.into()),
                        deadline,
                        capacities: Some(caps),
                    },
                ) {
                    ledger.live.insert(
                        id.0,
                        Call {
                            echo: None,
                            window: Some(caps.in_capacity),
                            deadline,
                            unconsumed: 0,
                        },
                    );
                }
            }
            3..=5 => {
                let Some(&id) = ledger
                    .live
                    .keys()
                    .nth(usize::from(input.byte()) % ledger.live.len().max(1))
                else {
                    continue;
                };
                let id = CallId(id);
                match input.byte() % 4 {
                    0 => drop(pair.client.conn.call(id).send(input.bytes(5))),
                    1 => drop(pair.client.conn.call(id).close()),
                    2 => {
                        pair.client.conn.call(id).consumed();
                        if let Some(call) = ledger.live.get_mut(&id.0) {
                            call.unconsumed = call.unconsumed.saturating_sub(1);
                        }
                    }
                    _ => {
                        if pair.client.conn.call(id).cancel() {
                            ledger.end(id, "a cancel");
                        }
                    }
                }
            }
            6 => {
                let _ = pair
                    .server
                    .conn
                    .request(now, Request::new(HandlerId::TEST, input.bytes(4)));
            }
            7 | 8 => pair.advance(Duration::from_millis(u64::from(input.byte()) * 250)),
            9 => pair.disconnect(),
            10 => {
                ledger.server_tampered = true;
                pair.inject_to_server(forged_message(&mut input));
            }
            11 => {
                ledger.client_tampered = true;
                pair.inject_to_client(forged_message(&mut input));
            }
            12 => {
                // A recorded frame with one byte changed.
                if pair.sent.is_empty() {
                    continue;
                }
                let i = usize::from(input.byte()) % pair.sent.len();
                let mut frame = pair.sent[i].frame.to_vec();
                let at = usize::from(input.byte()) % frame.len().max(1);
                if let Some(b) = frame.get_mut(at) {
                    *b ^= input.byte() | 1;
                }
                if pair.sent[i].from_client {
                    ledger.server_tampered = true;
                    pair.inject_to_server(frame.into());
                } else {
                    ledger.client_tampered = true;
                    pair.inject_to_client(frame.into());
                }
            }
            13 => {
                let len = usize::from(input.byte() % 32);
                let garbage = input.bytes(len);
                if input.byte().is_multiple_of(2) {
                    ledger.server_tampered = true;
                    pair.inject_to_server(garbage);
                } else {
                    ledger.client_tampered = true;
                    pair.inject_to_client(garbage);
                }
            }
            14 => {
                // Something the peer may legally replay after a reconnect.
                if let Some(s) = pair.sent.iter().rev().nth(usize::from(input.byte() % 8)) {
                    let frame = s.frame.clone();
                    if s.from_client {
                        ledger.server_tampered = true;
                        pair.inject_to_server(frame);
                    } else {
                        ledger.client_tampered = true;
                        pair.inject_to_client(frame);
                    }
                }
            }
            _ => pair.drive(),
        }
        if pair.sent.len() > 4096 {
            pair.sent.drain(..2048);
        }
        check_events(&mut pair, &mut ledger);
        check_bounds(&pair, &ledger);
    }

    // Liveness: with honest traffic, a stream whose caller ends its input
    // and takes every message ends (the reference handlers finish when their
    // input does).
    if !ledger.client_tampered && !ledger.server_tampered {
        ledger.consume_all = true;
        // The caller ends its input first, while the callee may still be
        // waiting for credit (the order that once lost a credit notice),
        // then takes what was delivered and never taken.
        for (id, call) in &ledger.live {
            if call.window.is_some() {
                let _ = pair.client.conn.call(CallId(*id)).close();
            }
        }
        pair.drive();
        check_events(&mut pair, &mut ledger);
        for (id, call) in &mut ledger.live {
            for _ in 0..std::mem::take(&mut call.unconsumed) {
                pair.client.conn.call(CallId(*id)).consumed();
            }
        }
        for _ in 0..400 {
            let streams: Vec<u64> = ledger
                .live
                .iter()
                .filter(|(_, c)| c.window.is_some())
                .map(|(id, _)| *id)
                .collect();
            if streams.is_empty() {
                break;
            }
            for id in streams {
                let _ = pair.client.conn.call(CallId(id)).close();
            }
            pair.drive();
            check_events(&mut pair, &mut ledger);
            pair.advance(Duration::from_millis(5));
            check_events(&mut pair, &mut ledger);
        }
        let stuck: Vec<u64> = ledger
            .live
            .iter()
            .filter(|(_, c)| c.window.is_some())
            .map(|(id, _)| *id)
            .collect();
        assert!(
            stuck.is_empty(),
            "streams closed and drained never ended: {stuck:?}"
        );
    }

    // Wind down: cancel what is left, let every timer run out.
    for id in ledger.live.keys().copied().collect::<Vec<_>>() {
        if pair.client.conn.call(CallId(id)).cancel() {
            ledger.end(CallId(id), "a cancel");
        }
    }
    pair.drive();
    pair.advance(Duration::from_secs(200));
    check_events(&mut pair, &mut ledger);
    assert!(
        ledger.live.is_empty(),
        "calls never ended: {:?}",
        ledger.live.keys().collect::<Vec<_>>()
    );
    let now = pair.now;
    for (name, node) in [("client", &pair.client), ("server", &pair.server)] {
        let s = node.conn.stats(now);
        let left =
            s.outgoing_requests + s.outgoing_streams + s.incoming_requests + s.incoming_streams;
        assert_eq!(left, 0, "{name} tables not empty after wind-down: {s:?}");
        assert_eq!(s.timers, 0, "{name} has timers left: {s:?}");
    }
    let states = (pair.client.conn.state(), pair.server.conn.state());
    assert!(
        matches!(
            states.0,
            State::Connected | State::ConnectionError | State::Connecting
        ),
        "client in {states:?}"
    );
}
