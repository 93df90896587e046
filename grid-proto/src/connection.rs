//! The connection state machine: one per remote host, living across
//! reconnects.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;

use crate::config::Config;
use crate::dial::{crc_enabled, should_dial};
use crate::error::{CallError, CancelReason, DisconnectReason, SendError};
use crate::event::{CallId, Event, IncomingId, MuxId};
use crate::flags::Flags;
use crate::handshake;
use crate::incoming::{InRequest, InStream};
use crate::merge::{FrameBuilder, FrameDecoder};
use crate::message::Message;
use crate::op::Op;
use crate::outgoing::Outgoing;
use crate::payload::{ConnectRequest, ConnectResponse, InstanceId, PingPayload, PongPayload};
use crate::redial::{AfterSession, DialFailure, Redial};
use crate::state::State;
use crate::stats::Stats;
use crate::time::Timestamp;
use crate::timer::{ConnTimer, MuxTimer, Timers};

/// The grid protocol for one remote host, with no I/O.
///
/// Four families of methods:
/// 1. getters: [`state`](Self::state), [`stats`](Self::stats),
///    [`is_live`](Self::is_live) and [`credit`](Self::credit) of a call of
///    either side...;
/// 2. inputs, `handle_*`: a received frame, a timer expiry, transport
///    failures;
/// 3. commands: the handshake ([`start_handshake`](Self::start_handshake),
///    [`accept_handshake`](Self::accept_handshake)), new calls
///    ([`request`](Self::request), [`open_stream`](Self::open_stream)), and
///    the commands of one live call through a view:
///    [`call`](Self::call) for a call this side made,
///    [`incoming`](Self::incoming) for one it serves, with the same names
///    where both sides do the same thing (`send`, `consumed`);
/// 4. outputs, `poll_*`: frames to send, the next timer, events.
///
/// After any input or command, drain the outputs: send every frame from
/// [`poll_transmit`](Self::poll_transmit), handle every event from
/// [`poll_event`](Self::poll_event), then arm one timer at
/// [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout) when it fires (a spurious call
/// is harmless). Time is passed in and must not go backwards.
#[derive(Debug)]
pub struct Connection {
    pub(crate) config: Config,
    dialer: bool,
    /// Flags every normal message carries: CRC unless both hosts are TLS.
    pub(crate) base: Flags,
    instance_id: InstanceId,
    state: State,
    /// A wall-clock reading and the instant it was taken: the core derives
    /// wall time from `now` without reading a clock.
    wall_base: (Instant, Timestamp),
    outbox: Outbox,
    pub(crate) events: VecDeque<Event>,
    pub(crate) timers: Timers,
    pub(crate) outgoing: HashMap<u64, Outgoing>,
    pub(crate) incoming_streams: HashMap<u64, InStream>,
    pub(crate) incoming_requests: HashMap<u64, InRequest>,
    next_mux_id: u64,
    last_pong: Instant,
    /// When the latest session was established.
    last_connected: Option<Instant>,
    rtt: Option<Duration>,
    remote_id: Option<InstanceId>,
    /// The reconnect policy's state.
    redial: Redial,
    /// Why the latest attempt failed, until a session is established.
    last_dial_failure: Option<DialFailure>,
    attempt_start: Instant,
    was_connected: bool,
    pub(crate) counters: Counters,
}

/// Running totals kept for [`Stats`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub(crate) messages_sent: u64,
    pub(crate) messages_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) frames_sent: u64,
    pub(crate) frames_received: u64,
    pub(crate) connects: u64,
    pub(crate) reconnects: u64,
    pub(crate) ignored_messages: u64,
    pub(crate) dial_failures: u64,
}

/// The buffer a new outgoing frame starts with: room for a full merged
/// frame (Go's bound is 31 744 bytes). A busy stream fills it, and growing
/// from 1 KiB reallocated and copied it several times per frame.
const FRAME_CAPACITY: usize = 32 * 1024;

/// Outgoing frames: full ones waiting, and the one being filled.
#[derive(Debug, Default)]
struct Outbox {
    ready: VecDeque<Bytes>,
    current: Option<FrameBuilder>,
    queued_bytes: usize,
    /// Room left over by the frames sealed so far; the next frame is built
    /// in it (see [`FrameBuilder::in_buffer`]).
    spare: BytesMut,
    /// Buffers of frames the transport is done with (see
    /// [`Connection::recycle`]), for the next frames.
    pool: Vec<BytesMut>,
    /// Buffers taken from `pool` since it was last trimmed.
    pool_drawn: usize,
}

/// Most recycled frame buffers a connection keeps (2 MiB of 32 KiB ones): a busy
/// connection builds many frames per turn before the transport takes them.
const POOL_SIZE: usize = 64;

impl Outbox {
    fn push(&mut self, msg: &Message) {
        if self.current.as_ref().is_some_and(|cur| !cur.has_room()) {
            self.seal();
        }
        let cur = self.current.get_or_insert_with(|| {
            if self.spare.capacity() < FRAME_CAPACITY
                && let Some(buf) = self.pool.pop()
            {
                self.spare = buf;
                self.pool_drawn += 1;
            }
            FrameBuilder::in_buffer(&mut self.spare, FRAME_CAPACITY)
        });
        let before = cur.bytes();
        cur.push(msg);
        self.queued_bytes += cur.bytes() - before;
    }

    /// Sends `msg` in a frame of its own (handshake messages: Go's dialer
    /// requires the response to be a bare `ConnectResponse`).
    fn push_alone(&mut self, msg: &Message) {
        self.seal();
        self.push(msg);
        self.seal();
    }

    fn seal(&mut self) {
        let spare = &mut self.spare;
        if let Some(frame) = self.current.take().and_then(|f| f.finish_into(spare)) {
            self.ready.push_back(frame);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        if self.ready.is_empty() {
            self.seal();
        }
        let frame = self.ready.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(frame.len());
        if self.ready.is_empty() && self.current.is_none() {
            self.queued_bytes = 0;
        }
        Some(frame)
    }

    fn clear(&mut self) {
        self.ready.clear();
        self.current = None;
        self.queued_bytes = 0;
        self.spare = BytesMut::new();
        self.pool.clear();
    }

    fn recycle(&mut self, frame: Bytes) {
        if self.pool.len() < POOL_SIZE
            && let Ok(buf) = frame.try_into_mut()
            && buf.capacity() <= 4 * FRAME_CAPACITY
        {
            self.pool.push(buf);
        }
    }

    /// Keeps only as many pooled buffers as were used since the last
    /// trim (at least one), so a connection that went quiet gives its
    /// burst's buffers back.
    fn trim_pool(&mut self) {
        self.pool.truncate(self.pool_drawn.max(1));
        self.pool_drawn = 0;
    }
}

impl Connection {
    /// A connection to `config.remote_host`, in [`State::Unconnected`].
    ///
    /// `now` and `wall` are the same moment read from the monotonic and the
    /// wall clock. If this side is the dialer of the pair, the first event is
    /// [`Event::Dial`].
    pub fn new(
        config: Config,
        instance_id: InstanceId,
        now: Instant,
        wall: Timestamp,
    ) -> Connection {
        let dialer = should_dial(&config.local_host, &config.remote_host);
        let base = if crc_enabled(&config.local_host, &config.remote_host) {
            Flags::CRC
        } else {
            Flags::NONE
        };
        let redial = Redial::new(config.settings.backoff, config.seed);
        let mut conn = Connection {
            config,
            dialer,
            base,
            instance_id,
            state: State::Unconnected,
            wall_base: (now, wall),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            timers: Timers::default(),
            outgoing: HashMap::new(),
            incoming_streams: HashMap::new(),
            incoming_requests: HashMap::new(),
            next_mux_id: 0,
            last_pong: now,
            last_connected: None,
            rtt: None,
            remote_id: None,
            redial,
            last_dial_failure: None,
            attempt_start: now,
            was_connected: false,
            counters: Counters::default(),
        };
        if dialer {
            conn.attempt_start = now;
            conn.events.push_back(Event::Dial);
        }
        conn
    }

    // ---- getters ----

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether this side dials the pair (docs/protocol.md#transport-dial-rule).
    pub fn is_dialer(&self) -> bool {
        self.dialer
    }

    /// This node's instance id.
    pub fn instance_id(&self) -> InstanceId {
        self.instance_id
    }

    /// The peer's instance id from the last handshake.
    pub fn remote_id(&self) -> Option<InstanceId> {
        self.remote_id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Round-trip time of the last connection ping.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// A snapshot of the counters and table sizes.
    pub fn stats(&self, now: Instant) -> Stats {
        let (mut requests, mut streams) = (0, 0);
        for m in self.outgoing.values() {
            match m {
                Outgoing::Request(_) => requests += 1,
                Outgoing::Stream(_) => streams += 1,
            }
        }
        Stats {
            state: self.state,
            rtt: self.rtt,
            last_pong_age: (self.state == State::Connected)
                .then(|| now.saturating_duration_since(self.last_pong)),
            last_pong: self.last_connected.map(|_| self.wall_clock(self.last_pong)),
            last_connected: self.last_connected.map(|at| self.wall_clock(at)),
            connects: self.counters.connects,
            outgoing_requests: requests,
            outgoing_streams: streams,
            incoming_requests: self.incoming_requests.len(),
            incoming_streams: self.incoming_streams.len(),
            queued_bytes: self.outbox.queued_bytes,
            queued_frames: self.outbox.ready.len() + usize::from(self.outbox.current.is_some()),
            timers: self.timers.mux_len(),
            messages_sent: self.counters.messages_sent,
            messages_received: self.counters.messages_received,
            bytes_sent: self.counters.bytes_sent,
            bytes_received: self.counters.bytes_received,
            frames_sent: self.counters.frames_sent,
            frames_received: self.counters.frames_received,
            reconnects: self.counters.reconnects,
            ignored_messages: self.counters.ignored_messages,
            dial_failures: self.counters.dial_failures,
            last_dial_failure: self.last_dial_failure.clone(),
        }
    }

    /// The wall clock at `now`, derived from the last reading passed in
    /// (also for an instant before that reading).
    pub fn wall_clock(&self, now: Instant) -> Timestamp {
        let (base, wall) = self.wall_base;
        match now.checked_duration_since(base) {
            Some(after) => wall + after,
            None => wall - base.saturating_duration_since(now),
        }
    }

    /// Whether a call of either side is still live: a request or stream
    /// this side made ([`CallId`]) or one it serves ([`IncomingId`]).
    pub fn is_live(&self, id: impl Into<MuxId>) -> bool {
        match id.into() {
            MuxId::Call(id) => self.outgoing.contains_key(&id.0),
            MuxId::Incoming(id) => self.is_incoming_live(id),
        }
    }

    /// Send credit left on a stream of either side: how many messages may
    /// be sent before the peer hands credit back (0 once this side's output
    /// has ended). `None` if it is not a live stream.
    pub fn credit(&self, id: impl Into<MuxId>) -> Option<u32> {
        match id.into() {
            MuxId::Call(id) => self.call_credit(id),
            MuxId::Incoming(id) => self.incoming_credit(id),
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    // ---- lifecycle commands ----

    /// Dialer: a transport to the peer is up (WebSocket upgraded). Sends
    /// `Connect` with `token` and waits for the answer.
    pub fn start_handshake(&mut self, now: Instant, wall: Timestamp, token: &str) {
        self.end_session(now, DisconnectReason::Replaced);
        if self.state == State::Shutdown {
            return;
        }
        self.wall_base = (now, wall);
        self.state = State::Connecting;
        let req = ConnectRequest {
            id: self.instance_id,
            host: self.config.local_host.clone(),
            time: wall,
            token: token.to_owned(),
        };
        self.send_alone(&handshake::connect_message(&req));
        self.timers.set(
            ConnTimer::Handshake,
            now + self.config.settings.handshake_timeout,
        );
    }

    /// Dialer: the dial attempt failed before a transport was up (no
    /// connection, or the HTTP upgrade was refused). Schedules the next
    /// attempt: soon for an unreachable peer, backing off for a refusal
    /// ([`DialFailure::is_rejection`]).
    pub fn handle_dial_failed(&mut self, now: Instant, failure: DialFailure) {
        if self.state == State::Shutdown {
            return;
        }
        self.state = State::ConnectionError;
        self.schedule_redial(now, failure);
    }

    /// Why the latest attempt to establish a session failed; `None` once
    /// one is established.
    pub fn last_dial_failure(&self) -> Option<&DialFailure> {
        self.last_dial_failure.as_ref()
    }

    /// Acceptor: the peer's `Connect` passed [`handshake::check_connect`].
    /// Sends the accepting `ConnectResponse` and enters
    /// [`State::Connected`]. A session still open on this connection ends
    /// first ([`DisconnectReason::Replaced`]).
    pub fn accept_handshake(&mut self, now: Instant, wall: Timestamp, request: &ConnectRequest) {
        self.end_session(now, DisconnectReason::Replaced);
        if self.state == State::Shutdown {
            return;
        }
        self.wall_base = (now, wall);
        self.send_alone(&handshake::response_message(self.instance_id, None));
        self.on_connected(now, request.id);
    }

    /// The transport closed or failed. Ends the session: every call fails
    /// with [`CallError::Disconnected`], every incoming call is cancelled.
    pub fn handle_transport_lost(&mut self, now: Instant) {
        self.end_session(now, DisconnectReason::TransportLost);
    }

    /// Ends everything for good: calls fail with [`CallError::Shutdown`].
    pub fn shutdown(&mut self, now: Instant) {
        if self.state == State::Shutdown {
            return;
        }
        self.end_session(now, DisconnectReason::Shutdown);
        self.state = State::Shutdown;
        self.timers.stop(ConnTimer::Redial);
    }

    fn on_connected(&mut self, now: Instant, remote_id: InstanceId) {
        let peer_restarted = self.remote_id.is_some_and(|old| old != remote_id);
        if self.was_connected {
            self.counters.reconnects = self.counters.reconnects.saturating_add(1);
        }
        self.counters.connects = self.counters.connects.saturating_add(1);
        self.last_connected = Some(now);
        self.remote_id = Some(remote_id);
        self.state = State::Connected;
        self.was_connected = true;
        self.redial.reset();
        self.last_dial_failure = None;
        self.last_pong = now;
        self.timers.stop(ConnTimer::Handshake);
        self.timers
            .set(ConnTimer::Ping, now + self.config.settings.ping_interval);
        self.events.push_back(Event::Connected {
            remote_id,
            peer_restarted,
        });
    }

    /// Ends the current session, if any: fails every call, cancels every
    /// incoming call, drops queued frames and mux timers.
    fn end_session(&mut self, now: Instant, reason: DisconnectReason) {
        let had_session = matches!(self.state, State::Connecting | State::Connected);
        if !had_session {
            return;
        }
        let established = self.state == State::Connected;
        let call_error = if reason == DisconnectReason::Shutdown {
            CallError::Shutdown
        } else {
            CallError::Disconnected
        };
        // Sorted so that the same inputs give the same event order.
        let mut ids: Vec<u64> = self.outgoing.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(m) = self.outgoing.remove(&id) {
                let event = match m {
                    Outgoing::Request(_) => Event::Response {
                        id: CallId(id),
                        result: Err(call_error.clone()),
                    },
                    Outgoing::Stream(_) => Event::StreamEnd {
                        id: CallId(id),
                        result: Err(call_error.clone()),
                    },
                };
                self.events.push_back(event);
            }
        }
        // A request and a stream never share a live id: the peer's opening
        // message for a live id is ignored.
        let mut ids: Vec<u64> = self
            .incoming_requests
            .drain()
            .map(|(id, _)| id)
            .chain(self.incoming_streams.drain().map(|(id, _)| id))
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.events.push_back(Event::IncomingCancelled {
                id: IncomingId(id),
                reason: CancelReason::Disconnected,
            });
        }
        self.timers.clear_mux();
        self.timers.stop(ConnTimer::Ping);
        self.timers.stop(ConnTimer::Handshake);
        self.outbox.clear();
        self.state = State::ConnectionError;
        let next = AfterSession::decide(&reason, established);
        self.events.push_back(Event::Disconnected { reason });
        if !self.dialer {
            return;
        }
        match next {
            AfterSession::Stop => {}
            AfterSession::RedialNow => {
                self.attempt_start = now;
                self.timers.set(ConnTimer::Redial, now);
            }
            AfterSession::Retry(failure) => self.schedule_redial(now, failure),
        }
    }

    fn schedule_redial(&mut self, now: Instant, failure: DialFailure) {
        if !self.dialer || self.state == State::Shutdown {
            return;
        }
        let delay = self.redial.delay_after(&failure);
        self.counters.dial_failures = self.counters.dial_failures.saturating_add(1);
        self.last_dial_failure = Some(failure);
        let at = (self.attempt_start + delay).max(now);
        self.timers.set(ConnTimer::Redial, at);
    }

    // ---- inputs ----

    /// A WebSocket binary message arrived. Malformed input ends the session
    /// ([`Event::Disconnected`] with [`DisconnectReason::Decode`]); it never
    /// panics.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) {
        if !matches!(self.state, State::Connecting | State::Connected) {
            return;
        }
        self.counters.frames_received = self.counters.frames_received.saturating_add(1);
        self.counters.bytes_received = self
            .counters
            .bytes_received
            .saturating_add(frame.len() as u64);
        let decoder = match FrameDecoder::new(frame, self.config.settings.max_message_size) {
            Ok(d) => d,
            Err(e) => return self.end_session(now, DisconnectReason::Decode(e)),
        };
        for item in decoder {
            match item {
                Ok(msg) => {
                    self.counters.messages_received =
                        self.counters.messages_received.saturating_add(1);
                    self.handle_message(now, msg);
                }
                Err(e) if !e.is_fatal() => {
                    self.counters.ignored_messages =
                        self.counters.ignored_messages.saturating_add(1)
                }
                Err(e) => return self.end_session(now, DisconnectReason::Decode(e)),
            }
            if !matches!(self.state, State::Connecting | State::Connected) {
                return;
            }
        }
    }

    fn handle_message(&mut self, now: Instant, msg: Message) {
        if self.state == State::Connecting {
            return self.on_handshake_answer(now, msg);
        }
        match msg.op {
            Op::Ping if msg.mux_id == 0 => self.on_connection_ping(&msg),
            Op::Pong if msg.mux_id == 0 => self.on_connection_pong(now, &msg),
            Op::Ping => self.on_mux_ping(now, &msg),
            Op::Pong => self.on_mux_pong(now, &msg),
            Op::Request => self.on_request(now, msg),
            Op::ConnectMux => self.on_connect_mux(now, msg),
            Op::MuxClientMsg => self.on_client_msg(msg),
            Op::UnblockSrvMux => self.on_unblock_server(&msg),
            Op::DisconnectServerMux => self.on_disconnect_server(&msg),
            Op::Response => self.on_response(&msg),
            Op::MuxConnectError => self.on_mux_connect_error(&msg),
            Op::AckMux => self.on_ack(&msg),
            Op::UnblockClMux => self.on_unblock_client(&msg),
            Op::MuxServerMsg => self.on_server_msg(now, msg),
            Op::DisconnectClientMux => self.on_disconnect_client(now, &msg),
            // No handler in the running state: Go logs "unknown message
            // type" and carries on.
            Op::Connect | Op::ConnectResponse | Op::Disconnect | Op::Merged => {
                self.counters.ignored_messages = self.counters.ignored_messages.saturating_add(1);
            }
        }
    }

    fn on_handshake_answer(&mut self, now: Instant, msg: Message) {
        if msg.op != Op::ConnectResponse {
            let why = format!("expected ConnectResponse, got {}", msg.op);
            return self.end_session(now, DisconnectReason::HandshakeFailed(why));
        }
        match ConnectResponse::decode(&msg.payload) {
            Ok(resp) if resp.accepted => self.on_connected(now, resp.id),
            Ok(resp) => {
                self.end_session(now, DisconnectReason::Rejected(resp.rejected_reason));
            }
            Err(e) => {
                let why = format!("bad ConnectResponse: {e}");
                self.end_session(now, DisconnectReason::HandshakeFailed(why));
            }
        }
    }

    fn on_connection_ping(&mut self, ping: &Message) {
        // Go ignores a ping payload that does not parse.
        let t = PingPayload::decode(&ping.payload).map_or(Timestamp::GO_ZERO, |p| p.t);
        let pong = PongPayload {
            not_found: false,
            error: None,
            t,
        };
        self.send_reply(ping, Op::Pong, pong.to_bytes());
    }

    fn on_connection_pong(&mut self, now: Instant, pong: &Message) {
        self.last_pong = now;
        if let Ok(p) = PongPayload::decode(&pong.payload)
            && p.t != Timestamp::GO_ZERO
        {
            self.rtt = self.wall_clock(now).duration_since(p.t);
        }
    }

    /// A timer expired (or may have: a spurious call is a no-op).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.take_expired_conn(now) {
            match t {
                ConnTimer::Handshake => {
                    if self.state == State::Connecting {
                        self.end_session(now, DisconnectReason::HandshakeTimeout);
                    }
                }
                ConnTimer::Ping => self.on_ping_tick(now),
                ConnTimer::Redial => {
                    if self.dialer
                        && matches!(self.state, State::ConnectionError | State::Unconnected)
                    {
                        self.attempt_start = now;
                        self.events.push_back(Event::Dial);
                    }
                }
            }
        }
        while let Some(t) = self.timers.take_expired_mux(now) {
            match t {
                MuxTimer::CallDeadline(id) => self.on_call_deadline(id),
                MuxTimer::CallPing(id) => self.on_call_ping_tick(now, id),
                MuxTimer::IncomingDeadline(id) => self.on_incoming_deadline(id),
                MuxTimer::IncomingIdle(id) => self.on_incoming_idle_tick(now, id),
            }
        }
    }

    fn on_ping_tick(&mut self, now: Instant) {
        self.outbox.trim_pool();
        if self.state != State::Connected {
            return;
        }
        if now.saturating_duration_since(self.last_pong) > self.config.settings.pong_timeout {
            return self.end_session(now, DisconnectReason::PongTimeout);
        }
        let mut ping = Message::new(Op::Ping, 0);
        ping.deadline_ms = duration_ms(self.config.settings.ping_interval);
        ping.payload = PingPayload {
            t: self.wall_clock(now),
        }
        .to_bytes();
        // Never a CRC on the connection ping
        // (docs/protocol.md#quirk-q9-crc-exceptions).
        self.send(&ping);
        self.timers
            .set(ConnTimer::Ping, now + self.config.settings.ping_interval);
    }

    // ---- outputs ----

    /// The next frame to send, if any: one message, or several merged
    /// within Go's limits (at most 51 messages, about 31 KiB).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let frame = self.outbox.pop()?;
        self.counters.frames_sent = self.counters.frames_sent.saturating_add(1);
        self.counters.bytes_sent = self.counters.bytes_sent.saturating_add(frame.len() as u64);
        Some(frame)
    }

    /// Gives back a frame from [`poll_transmit`](Self::poll_transmit) once
    /// the transport is done with it (has copied it into its own buffer).
    /// If nothing else holds the frame, its buffer carries a later frame:
    /// a busy connection then allocates no buffer per frame, and the
    /// allocator does not return memory to the system only to fault it
    /// in again (with 64 stream-pipe streams between two processes that
    /// cut page faults threefold and raised throughput by a fifth or
    /// more). Optional; at most `POOL_SIZE` buffers are kept, trimmed to
    /// what was used at every ping tick, and buffers grown for a large
    /// message are dropped.
    pub fn recycle(&mut self, frame: Bytes) {
        self.outbox.recycle(frame);
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a frame to give.
    pub fn has_transmit(&self) -> bool {
        !self.outbox.ready.is_empty() || self.outbox.current.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// Whether the driver should read more from the transport: `false`
    /// while more than `max_queued_bytes` wait to be sent, because what the
    /// peer sends next would mostly queue more answers. Reading resumes
    /// once [`poll_transmit`](Self::poll_transmit) has taken enough; a peer
    /// that never reads is the driver's write timeout to catch.
    pub fn wants_read(&self) -> bool {
        self.outbox.queued_bytes <= self.config.settings.max_queued_bytes
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- helpers for the table modules ----

    /// Queues a message.
    pub(crate) fn send(&mut self, msg: &Message) {
        self.counters.messages_sent = self.counters.messages_sent.saturating_add(1);
        self.outbox.push(msg);
    }

    fn send_alone(&mut self, msg: &Message) {
        self.counters.messages_sent = self.counters.messages_sent.saturating_add(1);
        self.outbox.push_alone(msg);
    }

    /// A reply built from the message that triggered it, as Go builds
    /// `MuxConnectError` and `Pong` (docs/protocol.md#quirk-q8-replies-echo-trigger):
    /// same mux id, seq, deadline and
    /// handler; trigger flags plus base flags, no subroute.
    pub(crate) fn send_reply(&mut self, trigger: &Message, op: Op, payload: Bytes) {
        let reply = Message {
            mux_id: trigger.mux_id,
            seq: trigger.seq,
            deadline_ms: trigger.deadline_ms,
            handler: trigger.handler,
            op,
            flags: (trigger.flags | self.base).without(Flags::SUBROUTE),
            payload,
            subroute: None,
        };
        self.send(&reply);
    }

    /// A control message of a mux: `op`, `seq`, base flags, no payload.
    pub(crate) fn send_control(&mut self, op: Op, mux_id: u64, seq: u32) {
        let mut m = Message::new(op, mux_id);
        m.seq = seq;
        m.flags = self.base;
        self.send(&m);
    }

    /// The next free outgoing mux id: counts from 1, skips 0 and live ids,
    /// never resets (docs/protocol.md#requests-mux-ids).
    pub(crate) fn allocate_mux_id(&mut self) -> u64 {
        loop {
            self.next_mux_id = self.next_mux_id.wrapping_add(1);
            if self.next_mux_id != 0 && !self.outgoing.contains_key(&self.next_mux_id) {
                return self.next_mux_id;
            }
        }
    }

    pub(crate) fn add_timer(&mut self, at: Instant, t: MuxTimer) {
        self.timers.add_mux(at, t);
    }

    pub(crate) fn remove_timer(&mut self, at: Option<Instant>, t: MuxTimer) {
        if let Some(at) = at {
            self.timers.remove_mux(at, t);
        }
    }

    /// A fresh message of `op` for `mux_id`, with base flags.
    pub(crate) fn message(&self, op: Op, mux_id: u64) -> Message {
        let mut m = Message::new(op, mux_id);
        m.flags = self.base;
        m
    }

    /// Checks an outgoing data message against the size and queue limits.
    pub(crate) fn check_room(&self, payload_len: usize) -> Result<(), CallError> {
        // Envelope + subroute + CRC + merge header stay well under 128 bytes.
        let size = payload_len.saturating_add(128);
        if size > self.config.settings.max_message_size {
            return Err(CallError::TooLarge {
                size,
                max: self.config.settings.max_message_size,
            });
        }
        if self.outbox.queued_bytes.saturating_add(size) > self.config.settings.max_queued_bytes {
            return Err(CallError::QueueFull);
        }
        Ok(())
    }

    /// [`check_room`](Self::check_room) for a message on a live stream.
    pub(crate) fn check_stream_room(&self, payload_len: usize) -> Result<(), SendError> {
        self.check_room(payload_len).map_err(|e| match e {
            CallError::TooLarge { size, max } => SendError::TooLarge { size, max },
            _ => SendError::QueueFull,
        })
    }
}

/// A duration in whole milliseconds, capped at `u32::MAX` (a `DeadlineMS`).
pub(crate) fn duration_ms(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Op;

    fn message(len: usize) -> Message {
        let mut m = Message::new(Op::MuxServerMsg, 1);
        m.set_payload(Some(Bytes::from(vec![7u8; len])));
        m
    }

    /// Whether `frame` lies in one of the buffers `earlier` came from.
    fn reuses(frame: &Bytes, earlier: &[(usize, usize)]) -> bool {
        let p = frame.as_ptr() as usize;
        earlier
            .iter()
            .any(|&(start, _)| p >= start.saturating_sub(64) && p < start + FRAME_CAPACITY)
    }

    #[test]
    fn recycled_frames_carry_the_next_frames() {
        let mut out = Outbox::default();
        // Three frames at once (32 kB messages do not share a frame), as
        // a busy turn builds them before the transport takes any.
        for _ in 0..3 {
            out.push(&message(32_000));
        }
        let first: Vec<Bytes> = std::iter::from_fn(|| out.pop()).collect();
        assert_eq!(first.len(), 3);
        let places: Vec<(usize, usize)> = first
            .iter()
            .map(|f| (f.as_ptr() as usize, f.len()))
            .collect();
        for f in first {
            out.recycle(f);
        }
        for _ in 0..3 {
            out.push(&message(32_000));
        }
        let second: Vec<Bytes> = std::iter::from_fn(|| out.pop()).collect();
        assert_eq!(second.len(), 3);
        for f in &second {
            assert!(reuses(f, &places), "a fresh buffer for a frame");
        }
        // Without recycling, the frames a turn builds need buffers of
        // their own (the check above is not vacuous).
        let mut plain = Outbox::default();
        for _ in 0..3 {
            plain.push(&message(32_000));
        }
        let held: Vec<Bytes> = std::iter::from_fn(|| plain.pop()).collect();
        let places: Vec<(usize, usize)> = held
            .iter()
            .map(|f| (f.as_ptr() as usize, f.len()))
            .collect();
        for _ in 0..3 {
            plain.push(&message(32_000));
        }
        let fresh: Vec<Bytes> = std::iter::from_fn(|| plain.pop()).collect();
        assert!(fresh.iter().any(|f| !reuses(f, &places)));
        drop(held);
    }

    #[test]
    fn the_pool_is_bounded_and_shrinks_when_unused() {
        let mut out = Outbox::default();
        for _ in 0..(POOL_SIZE + 8) {
            out.push(&message(32_000));
        }
        let frames: Vec<Bytes> = std::iter::from_fn(|| out.pop()).collect();
        for f in frames {
            out.recycle(f);
        }
        assert_eq!(out.pool.len(), POOL_SIZE);
        // Three frames built from the pool since the last trim: three stay.
        for _ in 0..3 {
            out.push(&message(32_000));
        }
        while out.pop().is_some() {}
        out.trim_pool();
        assert_eq!(out.pool.len(), 3);
        // Nothing used since: one stays.
        out.trim_pool();
        assert_eq!(out.pool.len(), 1);
        // A buffer grown for a large message is not kept.
        out.push(&message(200_000));
        let big = out.pop().expect("a frame");
        let before = out.pool.len();
        out.recycle(big);
        assert_eq!(out.pool.len(), before);
    }
}
