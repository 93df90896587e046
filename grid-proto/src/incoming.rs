//! The callee side: requests and streams the peer started, served by this
//! node's handlers (the "incoming table", docs/protocol.md#requests-callee,
//! docs/protocol.md#streams).
//!
//! Beyond Go, single requests are tabled too, so that a caller's
//! cancellation and the request's deadline reach the handler.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::capacities::Capacities;
use crate::connection::Connection;
use crate::error::{CancelReason, SendError};
use crate::event::{Event, IncomingId};
use crate::flags::Flags;
use crate::flow::Flow;
use crate::handler::HandlerId;
use crate::message::Message;
use crate::op::Op;
use crate::payload::{MuxConnectError, PingPayload, PongPayload};
use crate::subroute::SubrouteId;
use crate::timer::MuxTimer;

/// How often a callee checks a stream for caller pings.
pub const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// A callee ends a stream whose caller has not pinged for longer than this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The fields of an opening message that a `MuxConnectError` echoes
/// (docs/protocol.md#quirk-q8-replies-echo-trigger).
#[derive(Debug, Clone)]
struct Trigger {
    seq: u32,
    deadline_ms: u32,
    handler: HandlerId,
    flags: Flags,
    subroute: Option<SubrouteId>,
}

impl Trigger {
    fn of(msg: &Message) -> Trigger {
        Trigger {
            seq: msg.seq,
            deadline_ms: msg.deadline_ms,
            handler: msg.handler,
            flags: msg.flags,
            subroute: msg.subroute,
        }
    }

    fn message(&self, mux_id: u64) -> Message {
        let mut m = Message::new(Op::Request, mux_id);
        m.seq = self.seq;
        m.deadline_ms = self.deadline_ms;
        m.handler = self.handler;
        m.flags = self.flags;
        m
    }
}

/// An incoming single request being served.
#[derive(Debug)]
pub(crate) struct InRequest {
    trigger: Trigger,
    deadline: Option<Instant>,
}

/// An incoming stream.
#[derive(Debug)]
pub(crate) struct InStream {
    trigger: Trigger,
    accepted: bool,
    /// Sequence numbers and credit. Until the accept there is no window;
    /// then it is the handler's `OutCapacity`, the receive buffer its
    /// `InCapacity`.
    flow: Flow,
    /// Whether the caller may still send messages.
    input_open: bool,
    /// The caller ended its input before the stream was accepted (Go's
    /// caller sends its EOF without waiting for the ack).
    early_eof: bool,
    deadline: Option<Instant>,
    idle_at: Option<Instant>,
    last_ping: Instant,
    /// The handler's result, waiting for a credit to be sent.
    pending_finish: Option<Result<(), String>>,
}

impl InStream {
    /// Output credit the handler can use.
    fn credit(&self) -> u32 {
        if self.pending_finish.is_some() {
            0
        } else {
            self.flow.credits()
        }
    }

    /// Whether a stall is to be reported (see [`Flow::check_stall`]): the
    /// handler's output is open while it waits for credit, so both
    /// directions are open while the caller's input is.
    fn check_stall(&mut self) -> bool {
        self.flow.check_stall(self.input_open)
    }
}

/// Commands on a call the peer made and this node serves, a single
/// request or a stream: [`Connection::incoming`]. A call that is no longer
/// live ignores them or says so.
#[derive(Debug)]
pub struct IncomingCall<'a> {
    conn: &'a mut Connection,
    id: IncomingId,
}

impl Connection {
    /// Commands on incoming call `id`: answer or refuse it, accept a
    /// stream, send on it, finish it, hand credit back.
    pub fn incoming(&mut self, id: IncomingId) -> IncomingCall<'_> {
        IncomingCall { conn: self, id }
    }

    /// Output credit left on incoming stream `id`, `None` if it is not live.
    pub(crate) fn incoming_credit(&self, id: IncomingId) -> Option<u32> {
        self.incoming_streams.get(&id.0).map(InStream::credit)
    }

    /// Whether incoming request or stream `id` is still live.
    pub(crate) fn is_incoming_live(&self, id: IncomingId) -> bool {
        self.incoming_requests.contains_key(&id.0) || self.incoming_streams.contains_key(&id.0)
    }
}

impl IncomingCall<'_> {
    /// Answers the request: `Ok(payload)` (`None` for no payload) or the
    /// handler's error text. Returns false (and sends nothing) if the
    /// request is no longer live: cancelled, or past its deadline.
    pub fn respond(&mut self, result: Result<Option<Bytes>, String>) -> bool {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(req) = conn.incoming_requests.remove(&id) else {
            return false;
        };
        conn.remove_timer(req.deadline, MuxTimer::IncomingDeadline(id));
        let mut msg = conn.message(Op::Response, id);
        msg.seq = req.trigger.seq;
        msg.flags |= Flags::EOF;
        match result {
            Ok(payload) => msg.set_payload(payload),
            Err(text) => {
                msg.flags |= Flags::PAYLOAD_IS_ERR;
                msg.payload = Bytes::from(text);
            }
        }
        conn.send(&msg);
        true
    }

    /// Refuses the request, or the stream not yet accepted, because no
    /// handler is registered for it; the text is Go's
    /// (`Invalid Handler for type: …`).
    pub fn reject_unknown_handler(&mut self) -> bool {
        let conn = &*self.conn;
        let id = self.id.0;
        let trigger = match (
            conn.incoming_requests.get(&id),
            conn.incoming_streams.get(&id),
        ) {
            (Some(r), _) => &r.trigger,
            (None, Some(s)) if !s.accepted => &s.trigger,
            _ => return false,
        };
        let text = match &trigger.subroute {
            Some(sub) => format!("Invalid Handler for type: {sub}"),
            None => format!("Invalid Handler for type: {}", trigger.handler),
        };
        self.reject(&text)
    }

    /// Refuses the request, or the stream not yet accepted, with a
    /// `MuxConnectError` carrying `text`.
    pub fn reject(&mut self, text: &str) -> bool {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let trigger = if let Some(r) = conn.incoming_requests.remove(&id) {
            conn.remove_timer(r.deadline, MuxTimer::IncomingDeadline(id));
            r.trigger
        } else if matches!(conn.incoming_streams.get(&id), Some(s) if !s.accepted)
            && let Some(s) = conn.remove_incoming_stream(id)
        {
            s.trigger
        } else {
            return false;
        };
        conn.send_connect_error(&trigger.message(id), text);
        true
    }

    /// Accepts the stream with the local handler's capacities: sends the
    /// ack and opens the windows. If the caller said it sends no input
    /// (EOF on the opening, or its EOF arrived before the accept),
    /// [`Event::IncomingInputEnd`] follows at once.
    pub fn accept(&mut self, now: Instant, capacities: Capacities) -> bool {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(s) = conn.incoming_streams.get_mut(&id) else {
            return false;
        };
        if s.accepted {
            return false;
        }
        s.accepted = true;
        s.flow
            .set_limits(capacities.effective_out(), capacities.in_capacity);
        s.flow.open_window();
        s.input_open = capacities.in_capacity > 0;
        s.last_ping = now;
        // Beyond Go (docs/protocol.md#quirk-q13-eof-on-connect): honour
        // EOF-on-connect by closing the input.
        let close_input = s.input_open && (s.early_eof || s.trigger.flags.contains(Flags::EOF));
        let dl = s.trigger.deadline_ms;
        let idle_at = (dl == 0 || dl > 60_000).then(|| now + IDLE_CHECK_INTERVAL);
        s.idle_at = idle_at;
        let seq = s.flow.next_send_seq();
        if close_input {
            s.input_open = false;
        }
        conn.send_control(Op::AckMux, id, seq);
        if let Some(at) = idle_at {
            conn.add_timer(at, MuxTimer::IncomingIdle(id));
        }
        if close_input {
            conn.events
                .push_back(Event::IncomingInputEnd { id: self.id });
        }
        true
    }

    /// Sends a message from the handler of the stream. Needs a credit:
    /// without one it returns [`SendError::NoCredit`] and
    /// [`Event::IncomingCredit`] follows when the caller hands one back.
    pub fn send(&mut self, payload: Bytes) -> Result<(), SendError> {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(s) = conn.incoming_streams.get_mut(&id) else {
            return Err(SendError::UnknownStream);
        };
        if !s.accepted || s.pending_finish.is_some() {
            return Err(SendError::Closed);
        }
        if !s.flow.has_credit_or_wait() {
            conn.check_incoming_stall(id);
            return Err(SendError::NoCredit);
        }
        conn.check_stream_room(payload.len())?;
        let Some(s) = conn.incoming_streams.get_mut(&id) else {
            return Err(SendError::UnknownStream);
        };
        let seq = s.flow.spend_credit();
        let mut msg = conn.message(Op::MuxServerMsg, id);
        msg.seq = seq;
        msg.set_payload(Some(payload));
        conn.send(&msg);
        Ok(())
    }

    /// The handler of the stream returned. Its final message (EOF, or the
    /// error text) needs a credit like any other and is sent as soon as one
    /// is available. Returns false if the stream is not live.
    pub fn finish(&mut self, result: Result<(), String>) -> bool {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(s) = conn.incoming_streams.get_mut(&id) else {
            return false;
        };
        if !s.accepted || s.pending_finish.is_some() {
            return false;
        }
        s.pending_finish = Some(result);
        s.flow.stop_waiting();
        conn.try_send_finish(id);
        true
    }

    /// The handler took one [`Event::IncomingMessage`]: gives the caller
    /// its credit back.
    pub fn consumed(&mut self) {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(s) = conn.incoming_streams.get_mut(&id) else {
            return;
        };
        if !s.flow.consume() {
            return;
        }
        let seq = s.flow.next_send_seq();
        conn.send_control(Op::UnblockClMux, id, seq);
    }
}

impl Connection {
    // ---- helpers ----

    fn send_connect_error(&mut self, trigger: &Message, text: &str) {
        let payload = MuxConnectError {
            error: text.to_owned(),
        }
        .to_bytes();
        self.send_reply(trigger, Op::MuxConnectError, payload);
    }

    fn remove_incoming_stream(&mut self, id: u64) -> Option<InStream> {
        let s = self.incoming_streams.remove(&id)?;
        self.remove_timer(s.deadline, MuxTimer::IncomingDeadline(id));
        self.remove_timer(s.idle_at, MuxTimer::IncomingIdle(id));
        Some(s)
    }

    /// Ends an incoming stream from outside its handler: tells the caller
    /// (`DisconnectClientMux`, Seq 0) and the application.
    fn abort_incoming_stream(&mut self, id: u64, reason: CancelReason) {
        if self.remove_incoming_stream(id).is_none() {
            return;
        }
        self.send_control(Op::DisconnectClientMux, id, 0);
        self.events.push_back(Event::IncomingCancelled {
            id: IncomingId(id),
            reason,
        });
    }

    /// The callee protocol-error path (docs/protocol.md#streams-protocol-errors).
    fn incoming_protocol_error(&mut self, id: u64, text: String) {
        let Some(s) = self.incoming_streams.get_mut(&id) else {
            return;
        };
        let seq = s.flow.next_send_seq();
        let mut msg = self.message(Op::MuxServerMsg, id);
        msg.seq = seq;
        msg.flags |= Flags::PAYLOAD_IS_ERR | Flags::EOF;
        msg.payload = Bytes::from(text.clone());
        self.send(&msg);
        self.abort_incoming_stream(id, CancelReason::ProtocolError(text));
    }

    /// Checks a sequenced message from the caller; a mismatch takes the
    /// protocol-error path and returns the error text.
    fn check_incoming_seq(&mut self, id: u64, seq: u32) -> Result<(), String> {
        let Some(s) = self.incoming_streams.get_mut(&id) else {
            return Err("unknown stream".into());
        };
        let Err(want) = s.flow.check_recv_seq(seq) else {
            return Ok(());
        };
        let text = format!("receive sequence number mismatch. want {want}, got {seq}");
        self.incoming_protocol_error(id, text.clone());
        Err(text)
    }

    fn try_send_finish(&mut self, id: u64) {
        let Some(s) = self.incoming_streams.get_mut(&id) else {
            return;
        };
        if s.flow.credits() == 0 {
            return;
        }
        let Some(result) = s.pending_finish.take() else {
            return;
        };
        let seq = s.flow.spend_credit();
        let mut msg = self.message(Op::MuxServerMsg, id);
        msg.seq = seq;
        msg.flags |= Flags::EOF;
        if let Err(text) = result {
            msg.flags |= Flags::PAYLOAD_IS_ERR;
            // An empty error text also gets PAYLOAD_IS_ZERO, as in Go
            // (docs/protocol.md#quirk-q16-empty-error-zero).
            msg.set_payload(Some(Bytes::from(text)));
        }
        self.send(&msg);
        self.remove_incoming_stream(id);
        // Go's callee always follows its final message with this
        // (docs/protocol.md#quirk-q4-disconnect-after-eof).
        self.send_control(Op::DisconnectClientMux, id, 0);
    }

    fn check_incoming_stall(&mut self, id: u64) {
        let Some(s) = self.incoming_streams.get_mut(&id) else {
            return;
        };
        if s.check_stall() {
            self.events
                .push_back(Event::IncomingStalled { id: IncomingId(id) });
        }
    }

    // ---- received messages ----

    pub(crate) fn on_request(&mut self, now: Instant, msg: Message) {
        if !msg.handler.is_valid() {
            return self.send_connect_error(&msg, "Invalid Handler");
        }
        if self.is_live(IncomingId(msg.mux_id)) {
            // A Go caller never reuses a live id (requests and streams share
            // its one table): ignore the duplicate, so an `IncomingId` always
            // names one call.
            self.counters.ignored_messages = self.counters.ignored_messages.saturating_add(1);
            return;
        }
        if self.incoming_requests.len() >= self.config.settings.max_incoming_requests {
            return self.send_connect_error(&msg, "too many incoming requests");
        }
        let deadline =
            (msg.deadline_ms > 0).then(|| now + Duration::from_millis(u64::from(msg.deadline_ms)));
        if let Some(at) = deadline {
            self.add_timer(at, MuxTimer::IncomingDeadline(msg.mux_id));
        }
        self.incoming_requests.insert(
            msg.mux_id,
            InRequest {
                trigger: Trigger::of(&msg),
                deadline,
            },
        );
        self.events.push_back(Event::IncomingRequest {
            id: IncomingId(msg.mux_id),
            handler: msg.handler,
            subroute: msg.subroute,
            payload: msg.payload().cloned(),
            deadline,
        });
    }

    pub(crate) fn on_connect_mux(&mut self, now: Instant, msg: Message) {
        if msg.flags.contains(Flags::STATELESS) {
            return self.send_connect_error(&msg, "Stateless streams not supported");
        }
        if msg.subroute.is_none() && !msg.handler.is_valid() {
            return self.send_connect_error(&msg, "Invalid Handler");
        }
        if self.is_live(IncomingId(msg.mux_id)) {
            // No second ack; and a live request's id is not reused either.
            self.counters.ignored_messages = self.counters.ignored_messages.saturating_add(1);
            return;
        }
        if self.incoming_streams.len() >= self.config.settings.max_incoming_streams {
            return self.send_connect_error(&msg, "too many incoming streams");
        }
        let deadline =
            (msg.deadline_ms > 0).then(|| now + Duration::from_millis(u64::from(msg.deadline_ms)));
        if let Some(at) = deadline {
            self.add_timer(at, MuxTimer::IncomingDeadline(msg.mux_id));
        }
        self.incoming_streams.insert(
            msg.mux_id,
            InStream {
                trigger: Trigger::of(&msg),
                accepted: false,
                // Counters start at creation, as in Go (docs/protocol.md#streams-open):
                // a mux ping may arrive before the application accepts.
                flow: Flow::new(msg.seq, msg.seq.wrapping_add(1)),
                input_open: false,
                early_eof: false,
                deadline,
                idle_at: None,
                last_ping: now,
                pending_finish: None,
            },
        );
        self.events.push_back(Event::IncomingStream {
            id: IncomingId(msg.mux_id),
            handler: msg.handler,
            subroute: msg.subroute,
            payload: msg.payload().cloned(),
            deadline,
        });
    }

    pub(crate) fn on_client_msg(&mut self, msg: Message) {
        let id = msg.mux_id;
        let Some(s) = self.incoming_streams.get(&id) else {
            return self.send_control(Op::DisconnectClientMux, id, 0);
        };
        let eof = msg.flags.contains(Flags::EOF);
        // Before the ack the caller has no window for data, but its EOF
        // needs none and may come before the application accepts.
        if !s.accepted && (!eof || s.early_eof) {
            return self.incoming_protocol_error(id, "did not expect inbound message".into());
        }
        if self.check_incoming_seq(id, msg.seq).is_err() {
            return;
        }
        let Some(s) = self.incoming_streams.get_mut(&id) else {
            return;
        };
        if !s.accepted {
            // Delivered as IncomingInputEnd once accepted.
            s.early_eof = true;
            return;
        }
        if !s.input_open {
            return self.incoming_protocol_error(id, "did not expect inbound message".into());
        }
        if eof {
            // Only the input ends: an output waiting for credit still waits.
            s.input_open = false;
            self.events
                .push_back(Event::IncomingInputEnd { id: IncomingId(id) });
            return;
        }
        if !s.flow.receive() {
            return self.incoming_protocol_error(id, "handler blocked".into());
        }
        self.events.push_back(Event::IncomingMessage {
            id: IncomingId(id),
            payload: msg.payload().cloned(),
        });
        self.check_incoming_stall(id);
    }

    pub(crate) fn on_unblock_server(&mut self, msg: &Message) {
        let id = msg.mux_id;
        match self.incoming_streams.get(&id) {
            Some(s) if s.accepted => {}
            _ => return,
        }
        if self.check_incoming_seq(id, msg.seq).is_err() {
            return;
        }
        let Some(s) = self.incoming_streams.get_mut(&id) else {
            return;
        };
        s.flow.add_credit();
        if s.pending_finish.is_some() {
            return self.try_send_finish(id);
        }
        if s.flow.credit_arrived() {
            self.events
                .push_back(Event::IncomingCredit { id: IncomingId(id) });
        }
    }

    pub(crate) fn on_mux_ping(&mut self, now: Instant, msg: &Message) {
        let t = PingPayload::decode(&msg.payload).map_or(crate::Timestamp::GO_ZERO, |p| p.t);
        let mut pong = PongPayload {
            not_found: false,
            error: None,
            t,
        };
        if !self.incoming_streams.contains_key(&msg.mux_id) {
            pong.not_found = true;
        } else if let Err(text) = self.check_incoming_seq(msg.mux_id, msg.seq) {
            // The stream is gone (error already sent); the pong says why.
            pong.error = Some(text);
        } else if let Some(s) = self.incoming_streams.get_mut(&msg.mux_id) {
            s.last_ping = now;
        }
        self.send_reply(msg, Op::Pong, pong.to_bytes());
    }

    pub(crate) fn on_disconnect_server(&mut self, msg: &Message) {
        let id = msg.mux_id;
        if self.incoming_streams.contains_key(&id) {
            return self.abort_incoming_stream(id, CancelReason::CallerCancelled);
        }
        if let Some(r) = self.incoming_requests.remove(&id) {
            self.remove_timer(r.deadline, MuxTimer::IncomingDeadline(id));
            self.events.push_back(Event::IncomingCancelled {
                id: IncomingId(id),
                reason: CancelReason::CallerCancelled,
            });
        }
        // Unknown or duplicate (docs/protocol.md#quirk-q3-double-cancel): ignored.
    }

    // ---- timers ----

    pub(crate) fn on_incoming_deadline(&mut self, id: u64) {
        if let Some(s) = self.incoming_streams.get_mut(&id) {
            s.deadline = None; // already fired
            return self.abort_incoming_stream(id, CancelReason::DeadlineExceeded);
        }
        if self.incoming_requests.remove(&id).is_some() {
            // Go sends nothing for a request past its deadline.
            self.events.push_back(Event::IncomingCancelled {
                id: IncomingId(id),
                reason: CancelReason::DeadlineExceeded,
            });
        }
    }

    pub(crate) fn on_incoming_idle_tick(&mut self, now: Instant, id: u64) {
        let Some(s) = self.incoming_streams.get_mut(&id) else {
            return;
        };
        s.idle_at = None;
        if now.saturating_duration_since(s.last_ping) > IDLE_TIMEOUT {
            return self.abort_incoming_stream(id, CancelReason::Idle);
        }
        let at = now + IDLE_CHECK_INTERVAL;
        s.idle_at = Some(at);
        self.add_timer(at, MuxTimer::IncomingIdle(id));
    }
}
