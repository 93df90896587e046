//! A deterministic simulation: two [`Connection`]s joined by an in-memory
//! link on a virtual clock, with latency, jitter, disconnects and a seed.
//!
//! Tests read like protocol scripts:
//!
//! ```
//! use bytes::Bytes;
//! use grid_proto::sim::{Pair, RefPeer};
//! use grid_proto::{Event, HandlerId, Request};
//!
//! let mut pair = Pair::new(1);
//! pair.server.set_app(RefPeer::default());
//! pair.connect();
//! let now = pair.now;
//! let id = pair.client.conn.request(now, Request::new(HandlerId(78), Bytes::from_static(b"hi"))).unwrap();
//! pair.drive();
//! assert!(pair.client.take_events().contains(&Event::Response {
//!     id,
//!     result: Ok(Some(Bytes::from_static(b"hi"))),
//! }));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hashbrown::HashMap;

use crate::capacities::Capacities;
use crate::config::{CapacityTable, Config};
use crate::connection::Connection;
use crate::error::DisconnectReason;
use crate::event::{Event, IncomingId};
use crate::handler::HandlerId;
use crate::handshake::{check_connect, rejection_frame};
use crate::msgpack::{self, Reader};
use crate::payload::InstanceId;
use crate::rng::Rng;
use crate::state::State;
use crate::subroute::SubrouteId;
use crate::time::Timestamp;

/// The dialing node's host in [`Pair::new`] (as in the shared transcripts).
pub const CLIENT_HOST: &str = "http://127.0.0.1:19002";
/// The accepting node's host in [`Pair::new`].
pub const SERVER_HOST: &str = "http://127.0.0.1:19001";
/// The token both sides use.
pub const TOKEN: &str = "debug";

/// Application logic attached to a simulated node: sees every event first
/// and may issue commands.
pub trait App {
    /// Called for every event the node's connection emits.
    fn on_event(&mut self, conn: &mut Connection, now: Instant, event: &Event);
}

/// One side of a [`Pair`].
pub struct Node {
    /// The connection under test.
    pub conn: Connection,
    /// Every event emitted, in order (after the app saw it).
    pub events: Vec<Event>,
    app: Option<Box<dyn App>>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("conn", &self.conn)
            .field("events", &self.events.len())
            .finish()
    }
}

impl Node {
    /// Attaches application logic.
    pub fn set_app(&mut self, app: impl App + 'static) {
        self.app = Some(Box::new(app));
    }

    /// Takes the events collected so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

#[derive(Debug)]
enum Delivery {
    Frame(Bytes),
    /// The sender closed the transport after its earlier frames.
    Eof,
}

/// A frame on the link, for tests that inspect the traffic.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When it was sent.
    pub at: Instant,
    /// Whether the client (dialer) sent it.
    pub from_client: bool,
    /// The frame.
    pub frame: Bytes,
    /// It was lost in a blackhole ([`Pair::blackhole_to_server`],
    /// [`Pair::blackhole_to_client`]) and never delivered.
    pub dropped: bool,
}

/// Two connections over a simulated link. The client is the dialer.
#[derive(Debug)]
pub struct Pair {
    /// The virtual clock.
    pub now: Instant,
    /// The dialer.
    pub client: Node,
    /// The acceptor.
    pub server: Node,
    /// One-way delay of every frame.
    pub latency: Duration,
    /// Extra random delay per frame (order per direction is kept).
    pub jitter: Duration,
    /// Open a transport when the client asks to dial.
    pub auto_dial: bool,
    /// Dial attempts that fail before one succeeds.
    pub failing_dials: u32,
    /// Why those dials fail (default: the peer refuses the TCP connection).
    pub dial_failure: crate::DialFailure,
    /// Added to the client's wall clock (clock skew tests).
    pub client_clock_offset: Duration,
    /// The token the client presents.
    pub client_token: String,
    /// Every frame sent, when `record` is set.
    pub sent: Vec<Sent>,
    /// Record frames into `sent`.
    pub record: bool,
    /// Silently lose every frame the client sends (a peer that stops
    /// hearing us, without the transport closing).
    pub blackhole_to_server: bool,
    /// Silently lose every frame the server sends.
    pub blackhole_to_client: bool,
    start: Instant,
    wall0: Timestamp,
    link_up: bool,
    server_accepted: bool,
    /// Number of the current transport (one per dial).
    link_gen: u64,
    /// The transport each side holds, until it sees it closed.
    client_link: Option<u64>,
    server_link: Option<u64>,
    to_server: VecDeque<(Instant, Delivery)>,
    to_client: VecDeque<(Instant, Delivery)>,
    rng: Rng,
    /// Transports opened so far.
    pub dials: u32,
}

/// Most pump iterations [`Pair::drive`] allows before calling it a livelock.
const MAX_STEPS: usize = 1_000_000;

impl Pair {
    /// A pair with the transcript hosts, default configs and `seed`; both
    /// sides know the capacities of the [`RefPeer`] handlers.
    pub fn new(seed: u64) -> Pair {
        let mut c = Config::new(CLIENT_HOST, SERVER_HOST);
        c.seed = seed;
        RefPeer::declare_capacities(&mut c.settings.capacities);
        let mut s = Config::new(SERVER_HOST, CLIENT_HOST);
        s.seed = seed.wrapping_add(1);
        RefPeer::declare_capacities(&mut s.settings.capacities);
        Pair::with_configs(c, s)
    }

    /// A pair from two configs; the client's must be the dialer's.
    pub fn with_configs(client: Config, server: Config) -> Pair {
        let start = Instant::now();
        let wall0 = Timestamp {
            secs: 1_795_000_000,
            nanos: 0,
        };
        let seed = client.seed;
        let cid = InstanceId::from_seed(client.seed);
        let sid = InstanceId::from_seed(server.seed ^ 0xffff);
        let client = Connection::new(client, cid, start, wall0);
        let server = Connection::new(server, sid, start, wall0);
        assert!(
            client.is_dialer() && !server.is_dialer(),
            "client config must dial"
        );
        Pair {
            now: start,
            client: Node {
                conn: client,
                events: Vec::new(),
                app: None,
            },
            server: Node {
                conn: server,
                events: Vec::new(),
                app: None,
            },
            latency: Duration::from_micros(50),
            jitter: Duration::ZERO,
            auto_dial: true,
            failing_dials: 0,
            dial_failure: crate::DialFailure::Unreachable("connection refused".into()),
            client_clock_offset: Duration::ZERO,
            client_token: TOKEN.into(),
            sent: Vec::new(),
            record: false,
            blackhole_to_server: false,
            blackhole_to_client: false,
            start,
            wall0,
            link_up: false,
            server_accepted: false,
            link_gen: 0,
            client_link: None,
            server_link: None,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            rng: Rng::new(seed ^ 0x5eed),
            dials: 0,
        }
    }

    /// The simulated wall clock.
    pub fn wall(&self) -> Timestamp {
        self.wall0 + self.now.saturating_duration_since(self.start)
    }

    /// Time since the pair was created.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.start)
    }

    /// Whether a transport is up.
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Runs until both sides are connected; panics if they do not get there.
    pub fn connect(&mut self) {
        self.drive();
        assert_eq!(
            self.client.conn.state(),
            State::Connected,
            "client not connected"
        );
        assert_eq!(
            self.server.conn.state(),
            State::Connected,
            "server not connected"
        );
    }

    /// Frames waiting on the link.
    pub fn in_flight(&self) -> usize {
        self.to_server.len() + self.to_client.len()
    }

    /// Runs until no frame is in flight and nothing is due now. Does not
    /// advance time to timers (pings would never let it stop). Panics on a
    /// livelock.
    pub fn drive(&mut self) {
        for _ in 0..MAX_STEPS {
            self.pump();
            match self.next_delivery() {
                Some(at) => self.now = self.now.max(at),
                None => return,
            }
        }
        panic!("livelock: the pair did not become idle in {MAX_STEPS} steps");
    }

    /// Advances the clock by `d`, delivering frames and firing timers at
    /// their times along the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..MAX_STEPS {
            self.pump();
            let next = [
                self.next_delivery(),
                self.client.conn.poll_timeout(),
                self.server.conn.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(at) if at <= target => self.now = self.now.max(at),
                _ => {
                    self.now = target;
                    self.pump();
                    return;
                }
            }
        }
        panic!("livelock while advancing {d:?}");
    }

    /// Cuts the transport: both sides see it lost, frames in flight are gone.
    pub fn disconnect(&mut self) {
        if !self.link_up {
            return;
        }
        self.link_up = false;
        self.client_link = None;
        self.server_link = None;
        self.to_server.clear();
        self.to_client.clear();
        let now = self.now;
        self.client.conn.handle_transport_lost(now);
        self.server.conn.handle_transport_lost(now);
        self.pump();
    }

    /// Delivers a raw frame to the server as if the client sent it.
    pub fn inject_to_server(&mut self, frame: Bytes) {
        let at = self.now;
        self.to_server.push_back((at, Delivery::Frame(frame)));
        self.pump();
    }

    /// Delivers a raw frame to the client as if the server sent it.
    pub fn inject_to_client(&mut self, frame: Bytes) {
        let at = self.now;
        self.to_client.push_back((at, Delivery::Frame(frame)));
        self.pump();
    }

    fn next_delivery(&self) -> Option<Instant> {
        let a = self.to_server.front().map(|(t, _)| *t);
        let b = self.to_client.front().map(|(t, _)| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    /// Processes everything due at `now` until nothing more happens.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for side in [Side::Client, Side::Server] {
                let now = self.now;
                let node = self.node(side);
                if node.conn.poll_timeout().is_some_and(|t| t <= now) {
                    node.conn.handle_timeout(now);
                    progressed = true;
                }
                progressed |= self.drain_events(side);
                progressed |= self.drain_transmits(side);
            }
            progressed |= self.deliver_due();
            if !progressed {
                return;
            }
        }
    }

    fn drain_events(&mut self, side: Side) -> bool {
        let mut any = false;
        loop {
            let now = self.now;
            let node = self.node(side);
            let Some(event) = node.conn.poll_event() else {
                return any;
            };
            any = true;
            if let Some(app) = node.app.as_mut() {
                app.on_event(&mut node.conn, now, &event);
            }
            match &event {
                Event::Dial if side == Side::Client => self.dial(),
                // A replaced session's transport is already gone.
                Event::Disconnected { reason } if *reason != DisconnectReason::Replaced => {
                    self.close_from(side);
                }
                _ => {}
            }
            self.node(side).events.push(event);
        }
    }

    fn dial(&mut self) {
        let now = self.now;
        if !self.auto_dial {
            return;
        }
        if self.failing_dials > 0 {
            self.failing_dials -= 1;
            let failure = self.dial_failure.clone();
            self.client.conn.handle_dial_failed(now, failure);
            return;
        }
        self.dials += 1;
        self.link_up = true;
        self.link_gen += 1;
        self.client_link = Some(self.link_gen);
        self.server_link = None;
        self.server_accepted = false;
        self.to_server.clear();
        self.to_client.clear();
        let wall = self.wall() + self.client_clock_offset;
        let token = self.client_token.clone();
        self.client.conn.start_handshake(now, wall, &token);
    }

    /// `side` closed its transport: the peer sees EOF after the frames
    /// already on their way. Nothing happens if the side's transport is not
    /// the current one (it saw an older one close after a redial).
    fn close_from(&mut self, side: Side) {
        let held = match side {
            Side::Client => self.client_link.take(),
            Side::Server => self.server_link.take(),
        };
        if !self.link_up || held != Some(self.link_gen) {
            return;
        }
        self.link_up = false;
        let at = self.delivery_time(side);
        match side {
            Side::Client => {
                self.to_client.clear();
                self.to_server.push_back((at, Delivery::Eof));
            }
            Side::Server => {
                self.to_server.clear();
                self.to_client.push_back((at, Delivery::Eof));
            }
        }
    }

    fn delivery_time(&mut self, from: Side) -> Instant {
        let mut at = self.now + self.latency;
        if !self.jitter.is_zero() {
            at += self.jitter.mul_f64(self.rng.next_f64());
        }
        let queue = match from {
            Side::Client => &self.to_server,
            Side::Server => &self.to_client,
        };
        queue.back().map_or(at, |(last, _)| at.max(*last))
    }

    fn drain_transmits(&mut self, side: Side) -> bool {
        let mut any = false;
        while let Some(frame) = self.node(side).conn.poll_transmit() {
            any = true;
            if !self.link_up {
                continue; // nowhere to go
            }
            let dropped = match side {
                Side::Client => self.blackhole_to_server,
                Side::Server => self.blackhole_to_client,
            };
            if self.record {
                self.sent.push(Sent {
                    at: self.now,
                    from_client: side == Side::Client,
                    frame: frame.clone(),
                    dropped,
                });
            }
            if dropped {
                continue;
            }
            let at = self.delivery_time(side);
            match side {
                Side::Client => self.to_server.push_back((at, Delivery::Frame(frame))),
                Side::Server => self.to_client.push_back((at, Delivery::Frame(frame))),
            }
        }
        any
    }

    fn deliver_due(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        while self.to_server.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, d)) = self.to_server.pop_front() else {
                break;
            };
            any = true;
            match d {
                Delivery::Frame(f) if !self.server_accepted => self.server_first_frame(f),
                Delivery::Frame(f) => self.server.conn.handle_frame(now, f),
                Delivery::Eof => self.server.conn.handle_transport_lost(now),
            }
        }
        while self.to_client.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, d)) = self.to_client.pop_front() else {
                break;
            };
            any = true;
            match d {
                Delivery::Frame(f) => self.client.conn.handle_frame(now, f),
                Delivery::Eof => self.client.conn.handle_transport_lost(now),
            }
        }
        any
    }

    /// The acceptor's side of a new transport: check the `Connect`, then
    /// accept on the server connection or answer with a rejection and close.
    fn server_first_frame(&mut self, frame: Bytes) {
        let now = self.now;
        let wall = self.wall();
        let result = check_connect(
            &frame,
            SERVER_HOST,
            wall,
            |h| h == CLIENT_HOST,
            |t| {
                if t == TOKEN {
                    Ok(())
                } else {
                    Err("invalid token".into())
                }
            },
        );
        match result {
            Ok(req) => {
                self.server_accepted = true;
                self.server_link = Some(self.link_gen);
                self.server.conn.accept_handshake(now, wall, &req);
            }
            Err(e) => {
                let reject = rejection_frame(self.server.conn.instance_id(), &e);
                let at = self.delivery_time(Side::Server);
                self.to_client.push_back((at, Delivery::Frame(reject)));
                self.to_client.push_back((at, Delivery::Eof));
                self.link_up = false;
            }
        }
    }
}

/// The untyped part of the handler table of the recorded transcripts
/// (`conformance/transcripts/README.md` in the repository): the ids 78 and
/// 79, plain and on their subroutes. The typed handlers 70–72 need the
/// driver's codec and are served by the conformance crate.
#[derive(Debug, Default)]
pub struct RefPeer {
    streams: HashMap<IncomingId, RefStream>,
}

#[derive(Debug)]
struct RefStream {
    /// Prefix of every response (`initial` or `sub:` ++ initial).
    prefix: Option<Bytes>,
    outbox: VecDeque<Bytes>,
    /// Stream 79: the responses still to generate (`next..n`, then `data`),
    /// made one at a time as credit allows, like a real handler.
    count: Option<(u32, u32, Bytes)>,
    finish: Option<Result<(), String>>,
    /// A send found no credit: like a real driver, wait for
    /// `IncomingCredit` before trying again (retrying on any other event
    /// would hide a lost credit notice).
    blocked: bool,
}

/// The subroute of the transcripts' subroute handlers.
pub const REF_SUB: &str = "refpeer/sub";
/// The subroute of the transcripts' typed handler.
pub const REF_MSS: &str = "refpeer/mss";

impl RefPeer {
    /// The capacities of the reference stream handlers.
    pub fn capacities(handler: HandlerId) -> Capacities {
        if handler == HandlerId::TEST2 {
            Capacities {
                in_capacity: 0,
                out_capacity: 1,
            }
        } else {
            Capacities::DEFAULT
        }
    }

    /// Declares the reference stream handlers (78: 1/1, 79: 0/1) in a
    /// caller's table: capacities are not on the wire, and MinIO's defaults
    /// do not list the test ids.
    pub fn declare_capacities(table: &mut CapacityTable) {
        for handler in [HandlerId::TEST, HandlerId::TEST2] {
            table.set(handler, RefPeer::capacities(handler));
        }
    }

    fn flush(&mut self, conn: &mut Connection, id: IncomingId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.blocked {
            return;
        }
        loop {
            if s.outbox.is_empty()
                && let Some((next, n, data)) = &mut s.count
                && *next < *n
            {
                s.outbox.push_back(concat(&next.to_be_bytes(), data));
                *next += 1;
            }
            let Some(m) = s.outbox.front() else { break };
            if conn.incoming(id).send(m.clone()).is_err() {
                s.blocked = true;
                return; // wait for IncomingCredit
            }
            s.outbox.pop_front();
        }
        if let Some(result) = s.finish.take() {
            conn.incoming(id).finish(result);
            self.streams.remove(&id);
        }
    }
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.put_slice(a);
    out.put_slice(b);
    out.freeze()
}

/// The reference table's typed handler (79 on [`REF_MSS`]): a msgpack map
/// string→string in, the same map plus `"refpeer": "ok"` out; an error
/// text if the payload is no such map.
pub fn mss_reply(payload: &Bytes) -> Result<Bytes, String> {
    let mut r = Reader::new(payload);
    let n = r.map_len("mss").map_err(|e| e.to_string())?;
    let mut pairs = Vec::with_capacity(n as usize + 1);
    for _ in 0..n {
        let k = r.string("mss key").map_err(|e| e.to_string())?;
        let v = r.string("mss value").map_err(|e| e.to_string())?;
        pairs.push((k, v));
    }
    pairs.retain(|(k, _)| k != "refpeer");
    pairs.push(("refpeer".into(), "ok".into()));
    let mut out = BytesMut::new();
    msgpack::write_map_len(&mut out, pairs.len() as u32);
    for (k, v) in &pairs {
        msgpack::write_str(&mut out, k);
        msgpack::write_str(&mut out, v);
    }
    Ok(out.freeze())
}

impl App for RefPeer {
    fn on_event(&mut self, conn: &mut Connection, now: Instant, event: &Event) {
        let sub_id = |h: HandlerId| Some(SubrouteId::new(h, REF_SUB));
        let mss_id = Some(SubrouteId::new(HandlerId::TEST2, REF_MSS));
        match event {
            Event::IncomingRequest {
                id,
                handler,
                subroute,
                payload,
                ..
            } => {
                let p = payload.clone().unwrap_or_default();
                if subroute.is_none() && *handler == HandlerId::TEST {
                    // Go's echo copies the payload into a fresh buffer: an
                    // absent request (all empty ones,
                    // docs/protocol.md#quirk-q7-request-never-zero) gets a present,
                    // empty response (transcripts echo-nil, echo-empty).
                    conn.incoming(*id).respond(Ok(Some(p)));
                } else if subroute.is_none() && *handler == HandlerId::TEST2 {
                    conn.incoming(*id)
                        .respond(Err(String::from_utf8_lossy(&p).into_owned()));
                } else if *subroute == sub_id(HandlerId::TEST) {
                    conn.incoming(*id).respond(Ok(Some(concat(b"sub:", &p))));
                } else if *subroute == mss_id {
                    conn.incoming(*id).respond(mss_reply(&p).map(Some));
                } else {
                    conn.incoming(*id).reject_unknown_handler();
                }
            }
            Event::IncomingStream {
                id,
                handler,
                subroute,
                payload,
                ..
            } => {
                let p = payload.clone().unwrap_or_default();
                let prefix = if subroute.is_none() && *handler == HandlerId::TEST {
                    p
                } else if *subroute == sub_id(HandlerId::TEST) {
                    concat(b"sub:", &p)
                } else if subroute.is_none() && *handler == HandlerId::TEST2 {
                    conn.incoming(*id)
                        .accept(now, RefPeer::capacities(HandlerId::TEST2));
                    let mut s = RefStream {
                        prefix: None,
                        outbox: VecDeque::new(),
                        count: None,
                        finish: Some(Ok(())),
                        blocked: false,
                    };
                    if p.len() < 4 {
                        s.finish = Some(Err("refpeer: payload too short".into()));
                    } else {
                        let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                        s.count = Some((0, n, p.slice(4..)));
                    }
                    self.streams.insert(*id, s);
                    return self.flush(conn, *id);
                } else {
                    conn.incoming(*id).reject_unknown_handler();
                    return;
                };
                conn.incoming(*id).accept(now, Capacities::DEFAULT);
                self.streams.insert(
                    *id,
                    RefStream {
                        prefix: Some(prefix),
                        outbox: VecDeque::new(),
                        count: None,
                        finish: None,
                        blocked: false,
                    },
                );
            }
            Event::IncomingMessage { id, payload } => {
                conn.incoming(*id).consumed();
                if let Some(s) = self.streams.get_mut(id) {
                    let prefix = s.prefix.clone().unwrap_or_default();
                    s.outbox
                        .push_back(concat(&prefix, payload.as_deref().unwrap_or_default()));
                }
                self.flush(conn, *id);
            }
            Event::IncomingInputEnd { id } => {
                if let Some(s) = self.streams.get_mut(id) {
                    s.finish = Some(Ok(()));
                }
                self.flush(conn, *id);
            }
            Event::IncomingCredit { id } => {
                if let Some(s) = self.streams.get_mut(id) {
                    s.blocked = false;
                }
                self.flush(conn, *id);
            }
            Event::IncomingCancelled { id, .. } => {
                self.streams.remove(id);
            }
            _ => {}
        }
    }
}
