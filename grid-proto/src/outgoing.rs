//! The caller side: single requests and streams this node started (the
//! "outgoing table", docs/protocol.md#requests-caller, docs/protocol.md#streams).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::capacities::Capacities;
use crate::connection::{Connection, duration_ms};
use crate::error::{CallError, SendError};
use crate::event::{CallId, Event};
use crate::flags::Flags;
use crate::flow::Flow;
use crate::handler::HandlerId;
use crate::message::Message;
use crate::op::Op;
use crate::payload::{MuxConnectError, PongPayload};
use crate::subroute::SubrouteId;
use crate::timer::MuxTimer;

/// How often a caller pings a stream, and checks it for signs of life.
pub const STREAM_PING_INTERVAL: Duration = Duration::from_secs(15);
/// A caller fails a stream with no sign of life for longer than this.
pub const STREAM_LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// A live outgoing mux.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Request(OutRequest),
    Stream(OutStream),
}

#[derive(Debug)]
pub(crate) struct OutRequest {
    deadline: Instant,
}

#[derive(Debug)]
pub(crate) struct OutStream {
    /// Sequence numbers and credit. The window is the callee's
    /// `InCapacity`, the receive buffer its `OutCapacity`.
    flow: Flow,
    acked: bool,
    /// Whether this side may still send messages (no EOF sent, has input).
    input_open: bool,
    deadline: Option<Instant>,
    ping_at: Option<Instant>,
    last_alive: Instant,
}

impl OutStream {
    /// Send credit the application can use.
    fn credit(&self) -> u32 {
        if self.input_open {
            self.flow.credits()
        } else {
            0
        }
    }

    /// Whether a stall is to be reported (see [`Flow::check_stall`]): both
    /// directions are open once the callee accepted and while this side's
    /// input is.
    fn check_stall(&mut self) -> bool {
        let both_open = self.acked && self.input_open;
        self.flow.check_stall(both_open)
    }
}

/// What a caller sends when it abandons a stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cleanup {
    /// Nothing (the callee already ended it).
    Nothing,
    /// One `DisconnectServerMux` with Seq 0 (Go's cleanup).
    Disconnect,
    /// A sequenced `DisconnectServerMux`, then Go's Seq 0 duplicate
    /// (docs/protocol.md#quirk-q3-double-cancel).
    Cancel,
}

/// A single request to make with [`Connection::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The handler called.
    pub handler: HandlerId,
    /// The subroute called, if any.
    pub subroute: Option<SubrouteId>,
    /// The payload (Go sends an empty one as absent).
    pub payload: Bytes,
    /// When the caller gives up. Without one, the configured
    /// `default_request_timeout` applies (Go's 60 s) and is sent as
    /// `DeadlineMS`.
    pub deadline: Option<Instant>,
}

impl Request {
    /// A request of `payload` to `handler`, on no subroute, with the
    /// default deadline.
    pub fn new(handler: HandlerId, payload: Bytes) -> Request {
        Request {
            handler,
            subroute: None,
            payload,
            deadline: None,
        }
    }

    /// Calls `subroute` of the handler.
    pub fn subroute(mut self, subroute: SubrouteId) -> Request {
        self.subroute = Some(subroute);
        self
    }

    /// Gives up at `deadline`.
    pub fn deadline(mut self, deadline: Instant) -> Request {
        self.deadline = Some(deadline);
        self
    }
}

/// A stream to open with [`Connection::open_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenStream {
    /// The handler called.
    pub handler: HandlerId,
    /// The subroute called, if any.
    pub subroute: Option<SubrouteId>,
    /// The initial payload, if any.
    pub payload: Option<Bytes>,
    /// When the stream is cancelled. Without one it lives as long as both
    /// sides do, kept alive by pings.
    pub deadline: Option<Instant>,
    /// The callee handler's capacities (they are not on the wire). Without
    /// them, the configured capacity table is asked.
    pub capacities: Option<Capacities>,
}

impl OpenStream {
    /// A stream to `handler`, on no subroute, with no initial payload, no
    /// deadline and the capacities of the configured table.
    pub fn new(handler: HandlerId) -> OpenStream {
        OpenStream {
            handler,
            subroute: None,
            payload: None,
            deadline: None,
            capacities: None,
        }
    }

    /// Calls `subroute` of the handler.
    pub fn subroute(mut self, subroute: SubrouteId) -> OpenStream {
        self.subroute = Some(subroute);
        self
    }

    /// Sends `payload` with the opening message.
    pub fn payload(mut self, payload: Bytes) -> OpenStream {
        self.payload = Some(payload);
        self
    }

    /// Cancels the stream at `deadline`.
    pub fn deadline(mut self, deadline: Instant) -> OpenStream {
        self.deadline = Some(deadline);
        self
    }

    /// Sizes the windows for a callee with these capacities.
    pub fn capacities(mut self, capacities: Capacities) -> OpenStream {
        self.capacities = Some(capacities);
        self
    }
}

/// Commands on a call this node made, a single request or a stream:
/// [`Connection::call`]. A call that is no longer live ignores them or
/// says so.
#[derive(Debug)]
pub struct OutgoingCall<'a> {
    conn: &'a mut Connection,
    id: CallId,
}

impl Connection {
    /// Starts a single request.
    ///
    /// The call ends with exactly one [`Event::Response`], unless it is
    /// cancelled with [`OutgoingCall::cancel`].
    pub fn request(&mut self, now: Instant, request: Request) -> Result<CallId, CallError> {
        let Request {
            handler,
            subroute,
            payload,
            deadline,
        } = request;
        self.check_call(handler)?;
        self.check_room(payload.len())?;
        let (deadline_ms, local_deadline) = match deadline {
            Some(d) => (wire_deadline(now, d)?, d),
            None => (
                duration_ms(self.config.settings.default_request_timeout),
                now + self.config.settings.default_request_timeout,
            ),
        };
        let id = self.allocate_mux_id();
        let mut msg = self.message(Op::Request, id);
        msg.deadline_ms = deadline_ms;
        msg.handler = handler;
        msg.flags |= Flags::EOF;
        // Go never sets PAYLOAD_IS_ZERO on a request
        // (docs/protocol.md#quirk-q7-request-never-zero).
        msg.payload = payload;
        msg.subroute = subroute;
        self.send(&msg);
        self.outgoing.insert(
            id,
            Outgoing::Request(OutRequest {
                deadline: local_deadline,
            }),
        );
        self.add_timer(local_deadline, MuxTimer::CallDeadline(id));
        Ok(CallId(id))
    }

    /// Opens a stream. With a deadline the stream is cancelled when it
    /// passes; without one it is kept alive by pings.
    ///
    /// The stream ends with exactly one [`Event::StreamEnd`], unless it is
    /// cancelled with [`OutgoingCall::cancel`].
    pub fn open_stream(&mut self, now: Instant, open: OpenStream) -> Result<CallId, CallError> {
        let OpenStream {
            handler,
            subroute,
            payload,
            deadline,
            capacities,
        } = open;
        self.check_call(handler)?;
        let caps = capacities
            .or_else(|| {
                self.config
                    .settings
                    .capacities
                    .get(handler, subroute.as_ref())
            })
            .ok_or(CallError::UnknownHandler { handler: handler.0 })?;
        self.check_room(payload.as_ref().map_or(0, Bytes::len))?;
        let deadline_ms = match deadline {
            Some(d) => wire_deadline(now, d)?,
            None => 0,
        };
        let id = self.allocate_mux_id();
        let mut msg = self.message(Op::ConnectMux, id);
        msg.deadline_ms = deadline_ms;
        msg.handler = handler;
        msg.set_payload(payload);
        if caps.in_capacity == 0 {
            // "I will send nothing": required when the callee has no input.
            msg.flags |= Flags::EOF;
        }
        msg.subroute = subroute;
        self.send(&msg);

        let pings = deadline.is_none() || deadline_ms > 15_000;
        let ping_at = pings.then(|| now + STREAM_PING_INTERVAL);
        // The opening message is sequence 0 (docs/protocol.md#streams-open).
        let mut flow = Flow::new(1, 0);
        flow.set_limits(caps.in_capacity, caps.effective_out());
        self.outgoing.insert(
            id,
            Outgoing::Stream(OutStream {
                flow,
                acked: false,
                input_open: caps.in_capacity > 0,
                deadline,
                ping_at,
                last_alive: now,
            }),
        );
        if let Some(d) = deadline {
            self.add_timer(d, MuxTimer::CallDeadline(id));
        }
        if let Some(at) = ping_at {
            self.add_timer(at, MuxTimer::CallPing(id));
        }
        Ok(CallId(id))
    }

    /// Commands on call `id`: send on a stream, end its input, hand credit
    /// back, cancel.
    pub fn call(&mut self, id: CallId) -> OutgoingCall<'_> {
        OutgoingCall { conn: self, id }
    }
}

impl OutgoingCall<'_> {
    /// Sends a message on the stream. Needs a credit: without one it returns
    /// [`SendError::NoCredit`] and [`Event::StreamCredit`] follows when the
    /// callee hands one back.
    pub fn send(&mut self, payload: Bytes) -> Result<(), SendError> {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(Outgoing::Stream(s)) = conn.outgoing.get_mut(&id) else {
            return Err(SendError::UnknownStream);
        };
        if !s.input_open {
            return Err(SendError::Closed);
        }
        if !s.flow.has_credit_or_wait() {
            conn.check_call_stall(id);
            return Err(SendError::NoCredit);
        }
        conn.check_stream_room(payload.len())?;
        let Some(Outgoing::Stream(s)) = conn.outgoing.get_mut(&id) else {
            return Err(SendError::UnknownStream);
        };
        let seq = s.flow.spend_credit();
        let mut msg = conn.message(Op::MuxClientMsg, id);
        msg.seq = seq;
        msg.set_payload(Some(payload));
        conn.send(&msg);
        Ok(())
    }

    /// Ends this side's input of the stream (EOF; needs no credit). The
    /// stream itself ends when the callee finishes.
    pub fn close(&mut self) -> Result<(), SendError> {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(Outgoing::Stream(s)) = conn.outgoing.get_mut(&id) else {
            return Err(SendError::UnknownStream);
        };
        if !s.input_open {
            return Err(SendError::Closed);
        }
        s.input_open = false;
        s.flow.stop_waiting();
        let seq = s.flow.next_send_seq();
        let mut msg = conn.message(Op::MuxClientMsg, id);
        msg.seq = seq;
        msg.flags |= Flags::EOF;
        conn.send(&msg);
        Ok(())
    }

    /// The application took one [`Event::StreamMessage`]: gives the callee
    /// its credit back.
    pub fn consumed(&mut self) {
        let conn = &mut *self.conn;
        let id = self.id.0;
        let Some(Outgoing::Stream(s)) = conn.outgoing.get_mut(&id) else {
            return;
        };
        if !s.flow.consume() {
            return;
        }
        let seq = s.flow.next_send_seq();
        conn.send_control(Op::UnblockSrvMux, id, seq);
    }

    /// Cancels the call; it ends at once and no event follows. A stream's
    /// callee is told (`DisconnectServerMux`, as Go); beyond Go, so is a
    /// request's (a Go callee ignores it). Returns whether it was live.
    pub fn cancel(&mut self) -> bool {
        let conn = &mut *self.conn;
        let id = self.id.0;
        match conn.outgoing.get(&id) {
            None => false,
            Some(Outgoing::Request(_)) => {
                conn.remove_call(id);
                conn.send_control(Op::DisconnectServerMux, id, 0);
                true
            }
            Some(Outgoing::Stream(_)) => {
                conn.abandon_stream(id, Cleanup::Cancel);
                true
            }
        }
    }
}

impl Connection {
    /// Send credit left on outgoing stream `id`, `None` if it is not live.
    pub(crate) fn call_credit(&self, id: CallId) -> Option<u32> {
        match self.outgoing.get(&id.0) {
            Some(Outgoing::Stream(s)) => Some(s.credit()),
            _ => None,
        }
    }

    fn check_call(&self, handler: HandlerId) -> Result<(), CallError> {
        if !self.is_connected() {
            return Err(if self.state() == crate::State::Shutdown {
                CallError::Shutdown
            } else {
                CallError::NotConnected
            });
        }
        if !handler.is_valid() {
            return Err(CallError::UnknownHandler { handler: handler.0 });
        }
        Ok(())
    }

    /// Removes a call and its timers.
    fn remove_call(&mut self, id: u64) -> Option<Outgoing> {
        let m = self.outgoing.remove(&id)?;
        match &m {
            Outgoing::Request(r) => self.remove_timer(Some(r.deadline), MuxTimer::CallDeadline(id)),
            Outgoing::Stream(s) => {
                self.remove_timer(s.deadline, MuxTimer::CallDeadline(id));
                self.remove_timer(s.ping_at, MuxTimer::CallPing(id));
            }
        }
        Some(m)
    }

    /// Removes a stream, sends what `cleanup` says; returns whether it was live.
    fn abandon_stream(&mut self, id: u64, cleanup: Cleanup) -> bool {
        let Some(Outgoing::Stream(mut s)) = self.remove_call(id) else {
            return false;
        };
        match cleanup {
            Cleanup::Nothing => {}
            Cleanup::Disconnect => self.send_control(Op::DisconnectServerMux, id, 0),
            Cleanup::Cancel => {
                let seq = s.flow.next_send_seq();
                self.send_control(Op::DisconnectServerMux, id, seq);
                self.send_control(Op::DisconnectServerMux, id, 0);
            }
        }
        true
    }

    /// Ends a call with `result` (a request gets an error response).
    fn end_call(&mut self, id: u64, result: Result<(), CallError>, cleanup: Cleanup) {
        match self.outgoing.get(&id) {
            Some(Outgoing::Request(_)) => {
                self.remove_call(id);
                let result = result.map(|()| None);
                self.events.push_back(Event::Response {
                    id: CallId(id),
                    result,
                });
            }
            Some(Outgoing::Stream(_)) => {
                self.abandon_stream(id, cleanup);
                self.events.push_back(Event::StreamEnd {
                    id: CallId(id),
                    result,
                });
            }
            None => {}
        }
    }

    /// The answer to an unknown caller-side mux
    /// (docs/protocol.md#quirk-q2-unknown-mux-reply).
    fn reply_unknown_call(&mut self, mux_id: u64) {
        let op = if self.config.settings.fix_q2 {
            Op::DisconnectServerMux
        } else {
            Op::DisconnectClientMux
        };
        self.send_control(op, mux_id, 0);
    }

    /// Checks a received sequenced message against the stream's receive
    /// counter; on mismatch the stream fails. Returns whether it matched.
    fn accept_seq(&mut self, id: u64, seq: u32) -> bool {
        let want = match self.outgoing.get_mut(&id) {
            Some(Outgoing::Stream(s)) => match s.flow.check_recv_seq(seq) {
                Ok(()) => return true,
                Err(want) => want,
            },
            Some(Outgoing::Request(_)) => {
                if seq == 0 {
                    return true;
                }
                0
            }
            None => return false,
        };
        let err = CallError::OutOfSequence { want, got: seq };
        self.end_call(id, Err(err), Cleanup::Disconnect);
        false
    }

    // ---- received messages ----

    pub(crate) fn on_response(&mut self, msg: &Message) {
        if !matches!(self.outgoing.get(&msg.mux_id), Some(Outgoing::Request(_))) {
            return; // late or unknown: dropped without harm
        }
        if !self.accept_seq(msg.mux_id, msg.seq) {
            return;
        }
        self.remove_call(msg.mux_id);
        let result = if msg.flags.contains(Flags::PAYLOAD_IS_ERR) {
            Err(CallError::Remote(text(&msg.payload)))
        } else {
            Ok(msg.payload().cloned())
        };
        self.events.push_back(Event::Response {
            id: CallId(msg.mux_id),
            result,
        });
    }

    pub(crate) fn on_mux_connect_error(&mut self, msg: &Message) {
        if !self.outgoing.contains_key(&msg.mux_id) {
            return;
        }
        let reason = MuxConnectError::decode(&msg.payload)
            .map_or_else(|e| format!("undecodable MuxConnectError: {e}"), |e| e.error);
        // Go's caller cleans a refused stream up with a Seq 0 disconnect.
        self.end_call(
            msg.mux_id,
            Err(CallError::Refused(reason)),
            Cleanup::Disconnect,
        );
    }

    pub(crate) fn on_disconnect_client(&mut self, now: Instant, msg: &Message) {
        let Some(call) = self.outgoing.get(&msg.mux_id) else {
            // The callee's cleanup after we already finished
            // (docs/protocol.md#quirk-q4-disconnect-after-eof).
            return;
        };
        // The callee enforces the `DeadlineMS` we sent, truncated to whole
        // milliseconds, so its cut-off can arrive up to 1 ms before our own
        // deadline fires: that is the deadline, not a lost peer.
        let deadline_passed = matches!(call, Outgoing::Stream(s)
            if s.deadline.is_some_and(|d| now + Duration::from_millis(1) >= d));
        let err = if msg.flags.contains(Flags::PAYLOAD_IS_ERR) {
            CallError::Remote(text(&msg.payload))
        } else if deadline_passed {
            CallError::DeadlineExceeded
        } else {
            CallError::Disconnected
        };
        self.end_call(msg.mux_id, Err(err), Cleanup::Nothing);
    }

    pub(crate) fn on_ack(&mut self, msg: &Message) {
        match self.outgoing.get(&msg.mux_id) {
            Some(Outgoing::Stream(_)) => {}
            Some(Outgoing::Request(_)) => return,
            None => {
                if !msg.flags.contains(Flags::EOF) {
                    self.reply_unknown_call(msg.mux_id);
                }
                return;
            }
        }
        if !self.accept_seq(msg.mux_id, msg.seq) {
            return;
        }
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&msg.mux_id) else {
            return;
        };
        if s.acked {
            return;
        }
        s.acked = true;
        s.flow.open_window();
        if s.flow.credit_arrived() {
            self.events.push_back(Event::StreamCredit {
                id: CallId(msg.mux_id),
            });
        }
    }

    pub(crate) fn on_unblock_client(&mut self, msg: &Message) {
        if !matches!(self.outgoing.get(&msg.mux_id), Some(Outgoing::Stream(_))) {
            return;
        }
        if !self.accept_seq(msg.mux_id, msg.seq) {
            return;
        }
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&msg.mux_id) else {
            return;
        };
        s.flow.add_credit();
        if s.flow.credit_arrived() {
            self.events.push_back(Event::StreamCredit {
                id: CallId(msg.mux_id),
            });
        }
    }

    pub(crate) fn on_server_msg(&mut self, now: Instant, msg: Message) {
        let id = msg.mux_id;
        let eof = msg.flags.contains(Flags::EOF);
        match self.outgoing.get(&id) {
            Some(Outgoing::Stream(_)) => {}
            Some(Outgoing::Request(_)) => return,
            None => {
                if !eof {
                    self.reply_unknown_call(id);
                }
                return;
            }
        }
        let is_err = msg.flags.contains(Flags::PAYLOAD_IS_ERR);
        let payload = msg.payload().cloned();
        // An EOF without payload is not sequence-checked
        // (docs/protocol.md#streams-sequence-numbers).
        if (payload.is_some() || is_err || !eof) && !self.accept_seq(id, msg.seq) {
            return;
        }
        if is_err {
            let err = CallError::Remote(text(&msg.payload));
            return self.end_call(id, Err(err), Cleanup::Nothing);
        }
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&id) else {
            return;
        };
        s.last_alive = now;
        if let Some(payload) = payload {
            if !s.flow.receive() {
                // The callee overran its window: Go's "Response was blocked".
                return self.end_call(id, Err(CallError::ResponseBlocked), Cleanup::Disconnect);
            }
            self.events.push_back(Event::StreamMessage {
                id: CallId(id),
                payload,
            });
            self.check_call_stall(id);
        }
        if eof {
            self.end_call(id, Ok(()), Cleanup::Nothing);
        }
    }

    pub(crate) fn on_mux_pong(&mut self, now: Instant, msg: &Message) {
        if !matches!(self.outgoing.get(&msg.mux_id), Some(Outgoing::Stream(_))) {
            if !self.outgoing.contains_key(&msg.mux_id) {
                self.reply_unknown_call(msg.mux_id);
            }
            return;
        }
        let pong = match PongPayload::decode(&msg.payload) {
            Ok(p) => p,
            Err(e) => {
                let err = CallError::Remote(format!("undecodable pong: {e}"));
                return self.end_call(msg.mux_id, Err(err), Cleanup::Disconnect);
            }
        };
        if pong.not_found {
            self.end_call(
                msg.mux_id,
                Err(CallError::RemoteTerminated),
                Cleanup::Disconnect,
            );
        } else if let Some(e) = pong.error {
            self.end_call(msg.mux_id, Err(CallError::Remote(e)), Cleanup::Disconnect);
        } else if let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&msg.mux_id) {
            s.last_alive = now;
        }
    }

    // ---- timers ----

    pub(crate) fn on_call_deadline(&mut self, id: u64) {
        // A request fails locally and sends nothing; a stream is cancelled.
        self.end_call(id, Err(CallError::DeadlineExceeded), Cleanup::Cancel);
    }

    pub(crate) fn on_call_ping_tick(&mut self, now: Instant, id: u64) {
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&id) else {
            return;
        };
        s.ping_at = None;
        if now.saturating_duration_since(s.last_alive) > STREAM_LIVENESS_TIMEOUT {
            return self.end_call(id, Err(CallError::Unresponsive), Cleanup::Cancel);
        }
        let seq = s.flow.next_send_seq();
        let at = now + STREAM_PING_INTERVAL;
        s.ping_at = Some(at);
        self.send_control(Op::Ping, id, seq);
        self.add_timer(at, MuxTimer::CallPing(id));
    }

    /// Reports a possible deadlock once per episode (see [`Event::StreamStalled`]).
    fn check_call_stall(&mut self, id: u64) {
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&id) else {
            return;
        };
        if s.check_stall() {
            self.events
                .push_back(Event::StreamStalled { id: CallId(id) });
        }
    }
}

/// `DeadlineMS` for a deadline: remaining whole milliseconds, capped; less
/// than 1 ms left fails the call at once.
fn wire_deadline(now: Instant, deadline: Instant) -> Result<u32, CallError> {
    let ms = duration_ms(deadline.saturating_duration_since(now));
    if ms == 0 {
        return Err(CallError::DeadlineExceeded);
    }
    Ok(ms)
}

/// An error payload as text (Go sends raw UTF-8; be lenient with bad bytes).
pub(crate) fn text(payload: &Bytes) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::capacities::Capacities;
    use crate::event::IncomingId;
    use crate::sim::Pair;

    fn server_msg(id: u64, seq: u32, payload: &'static [u8]) -> Bytes {
        let mut m = Message::new(Op::MuxServerMsg, id);
        m.seq = seq;
        m.flags = Flags::CRC;
        m.set_payload(Some(Bytes::from_static(payload)));
        m.to_bytes()
    }

    #[test]
    fn the_receive_sequence_wraps_like_gos_uint32() {
        let mut pair = Pair::new(42);
        pair.connect();
        let caps = Capacities {
            in_capacity: 1,
            out_capacity: 4,
        };
        let now = pair.now;
        let id = pair
            .client
            .conn
            .open_stream(now, OpenStream::new(HandlerId::TEST).capacities(caps))
            .unwrap();
        pair.drive();
        let now = pair.now;
        assert!(
            pair.server
                .conn
                .incoming(IncomingId(id.0))
                .accept(now, caps)
        );
        pair.drive();
        pair.client.take_events();
        // Far into the stream: the next message from the callee is the
        // last sequence number before the wrap.
        match pair.client.conn.outgoing.get_mut(&id.0) {
            Some(Outgoing::Stream(s)) => s.flow.expect_recv_seq(u32::MAX),
            _ => panic!("the stream is open"),
        }
        pair.inject_to_client(server_msg(id.0, u32::MAX, b"last"));
        pair.inject_to_client(server_msg(id.0, 0, b"wrapped"));
        pair.drive();
        let got: Vec<_> = pair
            .client
            .take_events()
            .into_iter()
            .filter_map(|e| match e {
                Event::StreamMessage { payload, .. } => Some(payload),
                _ => None,
            })
            .collect();
        assert_eq!(got, [&b"last"[..], &b"wrapped"[..]]);
        assert!(pair.client.conn.is_live(id));
    }
}
