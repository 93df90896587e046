//! The caller side: single requests and streams this node started (the
//! "outgoing table", docs/protocol.md#requests-caller, docs/protocol.md#streams).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Capacities;
use crate::connection::{Connection, duration_ms};
use crate::error::{CallError, SendError};
use crate::event::{CallId, Event};
use crate::flags::Flags;
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
    send_seq: u32,
    recv_seq: u32,
    /// Send window: the callee's `InCapacity`.
    window: u32,
    credits: u32,
    acked: bool,
    /// Whether this side may still send messages (no EOF sent, has input).
    input_open: bool,
    /// Receive buffer: the callee's `OutCapacity`.
    out_capacity: u32,
    /// Messages delivered and not yet consumed by the application.
    unconsumed: u32,
    deadline: Option<Instant>,
    ping_at: Option<Instant>,
    last_alive: Instant,
    waiting_credit: bool,
    stall_reported: bool,
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

impl Connection {
    /// Starts a single request. `deadline` bounds the whole call; without
    /// one Go's default (60 s) applies and is sent as `DeadlineMS`.
    ///
    /// The call ends with exactly one [`Event::Response`], unless it is
    /// cancelled with [`cancel`](Self::cancel).
    pub fn request(
        &mut self,
        now: Instant,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        payload: Bytes,
        deadline: Option<Instant>,
    ) -> Result<CallId, CallError> {
        self.check_call(handler)?;
        self.check_room(payload.len())?;
        let (deadline_ms, local_deadline) = match deadline {
            Some(d) => (wire_deadline(now, d)?, d),
            None => (
                duration_ms(self.config.default_request_timeout),
                now + self.config.default_request_timeout,
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

    /// Opens a stream to `handler`. `capacities` are the callee's; when
    /// `None` they come from the configured capacity table. The initial
    /// payload may be absent. With a deadline the stream is cancelled when
    /// it passes; without one it is kept alive by pings.
    ///
    /// The stream ends with exactly one [`Event::StreamEnd`], unless it is
    /// cancelled with [`cancel`](Self::cancel).
    pub fn open_stream(
        &mut self,
        now: Instant,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        payload: Option<Bytes>,
        deadline: Option<Instant>,
        capacities: Option<Capacities>,
    ) -> Result<CallId, CallError> {
        self.check_call(handler)?;
        let caps = capacities
            .or_else(|| self.config.capacities.get(handler, subroute.as_ref()))
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
        self.outgoing.insert(
            id,
            Outgoing::Stream(OutStream {
                send_seq: 1,
                recv_seq: 0,
                window: caps.in_capacity,
                credits: 0,
                acked: false,
                input_open: caps.in_capacity > 0,
                out_capacity: caps.effective_out(),
                unconsumed: 0,
                deadline,
                ping_at,
                last_alive: now,
                waiting_credit: false,
                stall_reported: false,
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

    /// Sends a message on a stream. Needs a credit: without one it returns
    /// [`SendError::NoCredit`] and [`Event::StreamCredit`] follows when the
    /// callee hands one back.
    pub fn stream_send(
        &mut self,
        now: Instant,
        id: CallId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let _ = now;
        let Some(Outgoing::Stream(s)) = self.outgoing.get(&id.0) else {
            return Err(SendError::UnknownStream);
        };
        if !s.input_open {
            return Err(SendError::Closed);
        }
        if s.credits == 0 {
            if let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&id.0) {
                s.waiting_credit = true;
            }
            self.check_call_stall(id.0);
            return Err(SendError::NoCredit);
        }
        self.check_room(payload.len()).map_err(|e| match e {
            CallError::TooLarge { size, max } => SendError::TooLarge { size, max },
            _ => SendError::QueueFull,
        })?;
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&id.0) else {
            return Err(SendError::UnknownStream);
        };
        s.credits -= 1;
        let seq = next(&mut s.send_seq);
        let mut msg = self.message(Op::MuxClientMsg, id.0);
        msg.seq = seq;
        msg.set_payload(Some(payload));
        self.send(&msg);
        Ok(())
    }

    /// Ends this side's input of a stream (EOF; needs no credit). The stream
    /// itself ends when the callee finishes.
    pub fn stream_close(&mut self, now: Instant, id: CallId) -> Result<(), SendError> {
        let _ = now;
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&id.0) else {
            return Err(SendError::UnknownStream);
        };
        if !s.input_open {
            return Err(SendError::Closed);
        }
        s.input_open = false;
        s.waiting_credit = false;
        let seq = next(&mut s.send_seq);
        let mut msg = self.message(Op::MuxClientMsg, id.0);
        msg.seq = seq;
        msg.flags |= Flags::EOF;
        self.send(&msg);
        Ok(())
    }

    /// The application took one [`Event::StreamMessage`]: gives the callee
    /// its credit back.
    pub fn stream_consumed(&mut self, now: Instant, id: CallId) {
        let _ = now;
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&id.0) else {
            return;
        };
        if s.unconsumed == 0 {
            return;
        }
        s.unconsumed -= 1;
        s.stall_reported = false;
        let seq = next(&mut s.send_seq);
        self.send_control(Op::UnblockSrvMux, id.0, seq);
    }

    /// Send credit left on a stream, `None` if it is not live.
    pub fn stream_credit(&self, id: CallId) -> Option<u32> {
        match self.outgoing.get(&id.0) {
            Some(Outgoing::Stream(s)) => Some(if s.input_open { s.credits } else { 0 }),
            _ => None,
        }
    }

    /// Whether a call is still live.
    pub fn is_live(&self, id: CallId) -> bool {
        self.outgoing.contains_key(&id.0)
    }

    /// Cancels a call; it ends at once and no event follows. A stream's
    /// callee is told (`DisconnectServerMux`, as Go); beyond Go, so is a
    /// request's (a Go callee ignores it). Returns whether it was live.
    pub fn cancel(&mut self, now: Instant, id: CallId) -> bool {
        let _ = now;
        match self.outgoing.get(&id.0) {
            None => false,
            Some(Outgoing::Request(_)) => {
                self.remove_call(id.0);
                self.send_control(Op::DisconnectServerMux, id.0, 0);
                true
            }
            Some(Outgoing::Stream(_)) => {
                self.abandon_stream(id.0, Cleanup::Cancel);
                true
            }
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
                let seq = next(&mut s.send_seq);
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
        let op = if self.config.fix_q2 {
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
            Some(Outgoing::Stream(s)) => {
                if s.recv_seq == seq {
                    // A u32 that wraps, as Go's.
                    s.recv_seq = s.recv_seq.wrapping_add(1);
                    return true;
                }
                s.recv_seq
            }
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

    pub(crate) fn on_response(&mut self, _now: Instant, msg: &Message) {
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

    pub(crate) fn on_mux_connect_error(&mut self, _now: Instant, msg: &Message) {
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

    pub(crate) fn on_ack(&mut self, _now: Instant, msg: &Message) {
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
        s.credits = s.window;
        if s.credits > 0 && s.input_open && s.waiting_credit {
            s.waiting_credit = false;
            self.events.push_back(Event::StreamCredit {
                id: CallId(msg.mux_id),
            });
        }
    }

    pub(crate) fn on_unblock_client(&mut self, _now: Instant, msg: &Message) {
        if !matches!(self.outgoing.get(&msg.mux_id), Some(Outgoing::Stream(_))) {
            return;
        }
        if !self.accept_seq(msg.mux_id, msg.seq) {
            return;
        }
        let Some(Outgoing::Stream(s)) = self.outgoing.get_mut(&msg.mux_id) else {
            return;
        };
        // Credits never exceed the window (Go logs and drops the excess).
        s.credits = s.credits.saturating_add(1).min(s.window);
        s.stall_reported = false;
        if s.credits > 0 && s.input_open && s.waiting_credit {
            s.waiting_credit = false;
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
            if s.unconsumed >= s.out_capacity {
                // The callee overran its window: Go's "Response was blocked".
                return self.end_call(id, Err(CallError::ResponseBlocked), Cleanup::Disconnect);
            }
            s.unconsumed = s.unconsumed.saturating_add(1);
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

    pub(crate) fn on_call_deadline(&mut self, _now: Instant, id: u64) {
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
        let seq = next(&mut s.send_seq);
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
        let stalled = s.waiting_credit
            && s.input_open
            && s.acked
            && s.credits == 0
            && s.unconsumed >= s.out_capacity;
        if stalled && !s.stall_reported {
            s.stall_reported = true;
            self.events
                .push_back(Event::StreamStalled { id: CallId(id) });
        }
    }
}

/// Takes the current value of a sequence counter and advances it.
pub(crate) fn next(seq: &mut u32) -> u32 {
    let v = *seq;
    *seq = seq.wrapping_add(1);
    v
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
    use crate::config::Capacities;
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
            .open_stream(now, HandlerId::TEST, None, None, None, Some(caps))
            .unwrap();
        pair.drive();
        let now = pair.now;
        assert!(pair.server.conn.accept_stream(now, IncomingId(id.0), caps));
        pair.drive();
        pair.client.take_events();
        // Far into the stream: the next message from the callee is the
        // last sequence number before the wrap.
        match pair.client.conn.outgoing.get_mut(&id.0) {
            Some(Outgoing::Stream(s)) => s.recv_seq = u32::MAX,
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
