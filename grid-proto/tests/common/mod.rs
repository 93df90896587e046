//! Helpers shared by the connection scripts: building pairs, reading the
//! recorded wire traffic back as messages, forging frames, and an event log
//! with timestamps.

// Each test file uses its own subset of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::sim::{App, Pair, RefPeer};
use grid_proto::{
    Capacities, Connection, DEFAULT_MAX_MESSAGE_SIZE, Event, Flags, FrameDecoder, HandlerId,
    Message, Op,
};

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One nanosecond: the smallest step of the virtual clock.
pub const NS: Duration = Duration::from_nanos(1);

/// The handler every stream test talks to unless it says otherwise.
pub const ECHO: HandlerId = HandlerId::TEST;
/// The second test handler (count stream, failing request).
pub const COUNT: HandlerId = HandlerId::TEST2;

/// A connected pair whose server has no application: the test plays the
/// handler by calling the server connection's commands itself. Frames are
/// recorded; the handshake's frames and events are already taken away.
pub fn scripted(seed: u64) -> Pair {
    let mut pair = Pair::new(seed);
    settle(&mut pair);
    pair
}

/// A connected pair whose server runs the transcripts' handler table.
pub fn with_ref_peer(seed: u64) -> Pair {
    let mut pair = Pair::new(seed);
    pair.server.set_app(RefPeer::default());
    settle(&mut pair);
    pair
}

/// Connects `pair` with recording on, then forgets the handshake.
pub fn settle(pair: &mut Pair) {
    pair.record = true;
    pair.connect();
    pair.client.take_events();
    pair.server.take_events();
    pair.sent.clear();
}

/// One message seen on the link.
#[derive(Debug, Clone)]
pub struct Wire {
    /// When it was sent.
    pub at: Instant,
    /// Sent by the client (dialer).
    pub from_client: bool,
    /// Lost in a blackhole.
    pub dropped: bool,
    /// It travelled inside an `OpMerged` frame.
    pub merged: bool,
    /// The message.
    pub msg: Message,
}

/// Every message recorded so far, in sending order, merged frames opened.
pub fn wire(pair: &Pair) -> Vec<Wire> {
    let mut out = Vec::new();
    for s in &pair.sent {
        let decoder =
            FrameDecoder::new(s.frame.clone(), DEFAULT_MAX_MESSAGE_SIZE).expect("frame size");
        let merged = decoder.is_merged();
        for msg in decoder {
            out.push(Wire {
                at: s.at,
                from_client: s.from_client,
                dropped: s.dropped,
                merged,
                msg: msg.expect("every frame the core sends decodes"),
            });
        }
    }
    out
}

/// Messages the client sent, in order.
pub fn from_client(pair: &Pair) -> Vec<Message> {
    wire(pair)
        .into_iter()
        .filter(|w| w.from_client)
        .map(|w| w.msg)
        .collect()
}

/// Messages the server sent, in order.
pub fn from_server(pair: &Pair) -> Vec<Message> {
    wire(pair)
        .into_iter()
        .filter(|w| !w.from_client)
        .map(|w| w.msg)
        .collect()
}

/// `(op, seq)` of each message of mux `id`, a compact script of the wire.
pub fn script(msgs: &[Message], id: u64) -> Vec<(Op, u32)> {
    msgs.iter()
        .filter(|m| m.mux_id == id)
        .map(|m| (m.op, m.seq))
        .collect()
}

/// A message as the peer's core would send it: base flags (CRC) and the
/// given op, mux and seq; nothing else.
pub fn forge(op: Op, mux_id: u64, seq: u32) -> Message {
    let mut m = Message::new(op, mux_id);
    m.seq = seq;
    m.flags = Flags::CRC;
    m
}

/// [`forge`] with a present payload.
pub fn forge_with(op: Op, mux_id: u64, seq: u32, payload: &'static [u8]) -> Message {
    let mut m = forge(op, mux_id, seq);
    m.set_payload(Some(Bytes::from_static(payload)));
    m
}

/// The one event of `events` matching `pred`; panics if there is not
/// exactly one.
pub fn only<'a>(events: &'a [Event], what: &str, pred: impl Fn(&Event) -> bool) -> &'a Event {
    let hits: Vec<&Event> = events.iter().filter(|e| pred(e)).collect();
    assert_eq!(hits.len(), 1, "want exactly one {what} in {events:#?}");
    hits[0]
}

/// The capacities of a stream handler with the given windows.
pub fn caps(in_capacity: u32, out_capacity: u32) -> Capacities {
    Capacities {
        in_capacity,
        out_capacity,
    }
}

/// Events with the time they were emitted. Attach with
/// [`grid_proto::sim::Node::set_app`]; clones share the log.
#[derive(Clone, Default)]
pub struct Log(Rc<RefCell<Vec<(Instant, Event)>>>);

impl Log {
    /// Everything logged so far.
    pub fn entries(&self) -> Vec<(Instant, Event)> {
        self.0.borrow().clone()
    }

    /// When each event matching `pred` was emitted.
    pub fn times(&self, pred: impl Fn(&Event) -> bool) -> Vec<Instant> {
        self.0
            .borrow()
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(t, _)| *t)
            .collect()
    }
}

impl App for Log {
    fn on_event(&mut self, _conn: &mut Connection, now: Instant, event: &Event) {
        self.0.borrow_mut().push((now, event.clone()));
    }
}

/// An application that logs every event, then hands it to `inner`.
pub struct Logged<A> {
    /// The log.
    pub log: Log,
    /// The application.
    pub inner: A,
}

impl<A: App> App for Logged<A> {
    fn on_event(&mut self, conn: &mut Connection, now: Instant, event: &Event) {
        self.log.on_event(conn, now, event);
        self.inner.on_event(conn, now, event);
    }
}

/// Whether `e` is a [`Event::Dial`].
pub fn is_dial(e: &Event) -> bool {
    matches!(e, Event::Dial)
}

/// Whether `e` is a [`Event::Disconnected`].
pub fn is_disconnected(e: &Event) -> bool {
    matches!(e, Event::Disconnected { .. })
}

/// Whether `e` is a [`Event::Connected`].
pub fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Connected { .. })
}
