//! The per-connection task: one per remote host. It owns the sans-IO
//! [`crate::Connection`], the current WebSocket and the timer, and it runs
//! the loop of the crate docs: commands in, frames in, timeouts, events out,
//! frames out (all queued frames in one batch and one flush), one timer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{AbortHandle, Abortable, FutureExt, select};
use futures_util::{Sink, Stream};
use hashbrown::HashMap;
use tracing::{debug, info, warn};
use tungstenite::Message as WsMessage;
use tungstenite::handshake::client::generate_request;

use crate::connection::{Connection as Core, State};
use crate::driver::conn::{Command, ConnShared};
use crate::driver::mailbox::Mailbox;
use crate::driver::manager::ManagerShared;
use crate::driver::recorder::{Dir, Header, Recording};
use crate::driver::registry::{Route, StreamCall};
use crate::driver::runtime::{BoxFuture, Runtime};
use crate::driver::stream::{StreamKey, StreamReceiver, StreamSender, StreamShared};
use crate::error::{CallError, DisconnectReason, SendError};
use crate::event::{CallId, Event, IncomingId};
use crate::payload::ConnectRequest;
use crate::time::Timestamp;

/// Frames read per wake-up before the task lets writes and other tasks run.
const READ_BUDGET: usize = 128;
/// Loop turns per poll before the task yields to the executor.
const TURN_BUDGET: usize = 16;
/// How often, at most, the published stats snapshot is refreshed; it is
/// refreshed at most this long after activity stops.
const STATS_INTERVAL: Duration = Duration::from_millis(100);

/// A transport handed over by the acceptor path, with its checked `Connect`
/// and the frame it came in (for the recorder).
pub(crate) type Incoming<S> = (S, ConnectRequest, Bytes);

type Reply = oneshot::Sender<Result<Option<Bytes>, CallError>>;

pub(crate) struct ConnTask<R: Runtime> {
    rt: R,
    core: Core,
    shared: Arc<ConnShared>,
    mgr: Arc<ManagerShared>,
    incoming: Arc<Mailbox<Incoming<R::Socket>>>,
    socket: Option<R::Socket>,
    /// A frame taken from the core that the socket was not ready for.
    pending_frame: Option<Bytes>,
    needs_flush: bool,
    /// Output is waiting and the task should yield once before writing it.
    yield_before_write: bool,
    /// The task yielded once: the next pass writes.
    yielded_before_write: bool,
    /// Since when writing has been blocked (write-stall timeout).
    write_blocked_since: Option<Instant>,
    dialing: Option<BoxFuture<Result<R::Socket, String>>>,
    /// The token sent with the dial in progress (also goes into `Connect`).
    pending_token: Option<String>,
    /// The upgrade request of the dial in progress, as text (recording only).
    pending_upgrade: Option<String>,
    /// The transport being recorded (`Options::recorder`).
    recording: Option<Recording>,
    sleep: Option<(Instant, Pin<Box<R::Sleep>>)>,
    commands: VecDeque<Command>,
    accepted: VecDeque<Incoming<R::Socket>>,
    /// Outstanding requests: call id → (ticket, reply).
    calls: HashMap<u64, (u64, Reply)>,
    /// Ticket of a request future → its call id (for cancel-on-drop).
    tickets: HashMap<u64, u64>,
    streams: HashMap<StreamKey, Arc<StreamShared>>,
    /// Running handler tasks of incoming calls.
    handlers: HashMap<u64, AbortHandle>,
    last_stats: Option<Instant>,
    /// Something happened since the stats were last published.
    stats_dirty: bool,
    finished: bool,
}

impl<R: Runtime> ConnTask<R> {
    pub(crate) fn new(
        rt: R,
        core: Core,
        shared: Arc<ConnShared>,
        mgr: Arc<ManagerShared>,
        incoming: Arc<Mailbox<Incoming<R::Socket>>>,
    ) -> ConnTask<R> {
        ConnTask {
            rt,
            core,
            shared,
            mgr,
            incoming,
            socket: None,
            pending_frame: None,
            needs_flush: false,
            yield_before_write: false,
            yielded_before_write: false,
            write_blocked_since: None,
            dialing: None,
            pending_token: None,
            pending_upgrade: None,
            recording: None,
            sleep: None,
            commands: VecDeque::new(),
            accepted: VecDeque::new(),
            calls: HashMap::new(),
            tickets: HashMap::new(),
            streams: HashMap::new(),
            handlers: HashMap::new(),
            last_stats: None,
            stats_dirty: true,
            finished: false,
        }
    }

    /// Runs until the connection is shut down.
    pub(crate) async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_turns(cx)).await;
    }

    fn wall(&self) -> Timestamp {
        Timestamp::from_system_time(self.rt.wall())
    }

    fn poll_turns(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // One clock read per wake-up: the turns of one poll are microseconds
        // apart, and reading the clock was a visible share of a busy stream.
        let now = self.rt.now();
        for _ in 0..TURN_BUDGET {
            let worked = self.turn(cx, now);
            if self.finished {
                return Poll::Ready(());
            }
            if !worked {
                if std::mem::take(&mut self.yield_before_write) {
                    // Runs again right after the tasks already queued.
                    self.yielded_before_write = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.arm_timer(cx);
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One pass over every source. Returns whether anything happened.
    fn turn(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut worked = false;

        self.shared.mailbox.drain_into(cx, &mut self.commands);
        while let Some(cmd) = self.commands.pop_front() {
            worked = true;
            self.apply(now, cmd);
        }

        self.incoming.drain_into(cx, &mut self.accepted);
        while let Some((socket, req, connect)) = self.accepted.pop_front() {
            worked = true;
            self.take_incoming(now, socket, &req, &connect);
        }

        if let Some(dial) = self.dialing.as_mut()
            && let Poll::Ready(result) = dial.as_mut().poll(cx)
        {
            worked = true;
            self.dialing = None;
            self.dialed(now, result);
        }

        worked |= self.read(cx, now);

        // A timer firing is not itself activity (else the stats timer
        // would keep re-arming itself); what it causes is.
        let mut timed_out = false;
        if self.sleep.as_ref().is_some_and(|(at, _)| *at <= now)
            || self.core.poll_timeout().is_some_and(|at| at <= now)
        {
            self.sleep = None;
            self.core.handle_timeout(now);
            timed_out = true;
        }
        if self
            .write_blocked_since
            .is_some_and(|t| now.saturating_duration_since(t) > self.mgr.options.write_timeout)
        {
            warn!(remote = %self.shared.remote, "write stalled; dropping the connection");
            self.lose_transport(now);
            worked = true;
        }

        while let Some(event) = self.core.poll_event() {
            worked = true;
            self.on_event(now, event);
        }

        // Like Go's writer: before flushing new output, let the tasks this
        // pass woke (handlers, callers) run once, so what they produce next
        // shares the frame and the syscall. A write already under way (or a
        // lost transport's leftovers) goes at once.
        // Only worth it when other work is in flight: alone, a yield just
        // costs a trip through the scheduler.
        let more_coming =
            self.calls.len() > 1 || !self.handlers.is_empty() || !self.streams.is_empty();
        let fresh_output = more_coming
            && self.socket.is_some()
            && self.pending_frame.is_none()
            && !self.needs_flush
            && self.core.has_transmit();
        if fresh_output && !self.yielded_before_write {
            self.yield_before_write = true;
        } else {
            worked |= self.write(cx, now);
            if fresh_output {
                self.yielded_before_write = false;
            }
        }

        self.stats_dirty |= worked;
        self.shared.set_busy(
            !self.calls.is_empty() || !self.streams.is_empty() || !self.handlers.is_empty(),
        );
        if self.stats_dirty
            && self
                .last_stats
                .is_none_or(|t| now.saturating_duration_since(t) >= STATS_INTERVAL)
        {
            self.last_stats = Some(now);
            self.stats_dirty = false;
            self.shared.publish_stats(self.core.stats(now));
        }
        worked || timed_out
    }

    fn arm_timer(&mut self, cx: &mut Context<'_>) {
        let write_deadline = self
            .write_blocked_since
            .map(|t| t + self.mgr.options.write_timeout);
        // Stale stats are published once the interval has passed.
        let stats_deadline = self
            .last_stats
            .filter(|_| self.stats_dirty)
            .map(|t| t + STATS_INTERVAL);
        let next = [self.core.poll_timeout(), write_deadline, stats_deadline]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            // Nothing due: an armed timer only causes a spurious turn.
            return;
        };
        // Re-arm only for an earlier deadline. Deadlines move on every call
        // (each brings its own), and re-registering a timer is not free on
        // every runtime (async-io notifies its reactor); waking too early is
        // a harmless spurious `handle_timeout`.
        if self.sleep.as_ref().is_none_or(|(cur, _)| *cur > at) {
            self.sleep = Some((at, Box::pin(self.rt.sleep_until(at))));
        }
        if let Some((_, sleep)) = self.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            // Already due: run another turn right away.
            cx.waker().wake_by_ref();
        }
    }

    // ---- transport ----

    fn read(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut worked = false;
        for _ in 0..READ_BUDGET {
            // Back-pressure: while more than `max_queued_bytes` wait to go
            // out, read nothing more (what the peer sends would mostly queue
            // more answers). The write side wakes the task once the queue
            // drains; a peer that never reads is dropped by the write timeout.
            if self.core.queued_bytes() > self.mgr.options.core.max_queued_bytes {
                return worked;
            }
            let Some(socket) = self.socket.as_mut() else {
                return worked;
            };
            let next = Pin::new(socket).poll_next(cx);
            if let (Some(rec), Poll::Ready(Some(Ok(msg)))) = (self.recording.as_mut(), &next)
                && !rec.ws(now, Dir::In, msg)
            {
                self.recording = None;
            }
            match next {
                Poll::Pending => return worked,
                Poll::Ready(Some(Ok(WsMessage::Binary(frame)))) => {
                    worked = true;
                    self.core.handle_frame(now, frame);
                }
                // Go discards text; tungstenite answers pings itself.
                Poll::Ready(Some(Ok(
                    WsMessage::Text(_)
                    | WsMessage::Ping(_)
                    | WsMessage::Pong(_)
                    | WsMessage::Frame(_),
                ))) => {
                    worked = true;
                }
                Poll::Ready(Some(Ok(WsMessage::Close(_)))) | Poll::Ready(None) => {
                    debug!(remote = %self.shared.remote, "transport closed by peer");
                    self.lose_transport(now);
                    return true;
                }
                Poll::Ready(Some(Err(e))) => {
                    debug!(remote = %self.shared.remote, error = %e, "transport read failed");
                    self.lose_transport(now);
                    return true;
                }
            }
        }
        // Budget used: more may be waiting.
        cx.waker().wake_by_ref();
        worked
    }

    /// Sends every queued frame, then flushes once.
    fn write(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut worked = false;
        let Some(socket) = self.socket.as_mut() else {
            // No transport: whatever the core queued has nowhere to go.
            while self.core.poll_transmit().is_some() {}
            return false;
        };
        loop {
            let frame = match self.pending_frame.take() {
                Some(f) => f,
                None => match self.core.poll_transmit() {
                    Some(f) => f,
                    None => break,
                },
            };
            match Pin::new(&mut *socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    worked = true;
                    if let Some(rec) = self.recording.as_mut()
                        && !rec.frame(now, Dir::Out, "binary", &frame)
                    {
                        self.recording = None;
                    }
                    if let Err(e) = Pin::new(&mut *socket).start_send(WsMessage::Binary(frame)) {
                        debug!(remote = %self.shared.remote, error = %e, "transport write failed");
                        self.lose_transport(now);
                        return true;
                    }
                    self.needs_flush = true;
                }
                Poll::Ready(Err(e)) => {
                    debug!(remote = %self.shared.remote, error = %e, "transport write failed");
                    self.lose_transport(now);
                    return true;
                }
                Poll::Pending => {
                    self.pending_frame = Some(frame);
                    break;
                }
            }
        }
        if self.needs_flush {
            match Pin::new(&mut *socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => {
                    debug!(remote = %self.shared.remote, error = %e, "transport flush failed");
                    self.lose_transport(now);
                    return true;
                }
                Poll::Pending => {}
            }
        }
        let blocked = self.pending_frame.is_some() || self.needs_flush;
        match (blocked, self.write_blocked_since) {
            (true, None) => self.write_blocked_since = Some(now),
            (false, Some(_)) => self.write_blocked_since = None,
            _ => {}
        }
        worked
    }

    fn drop_socket(&mut self) {
        self.socket = None;
        self.recording = None;
        self.pending_frame = None;
        self.needs_flush = false;
        self.write_blocked_since = None;
    }

    fn lose_transport(&mut self, now: Instant) {
        self.drop_socket();
        self.core.handle_transport_lost(now);
    }

    fn take_incoming(
        &mut self,
        now: Instant,
        socket: R::Socket,
        req: &ConnectRequest,
        connect: &Bytes,
    ) {
        if self.core.state() == State::Shutdown {
            return;
        }
        if self.socket.is_some() {
            info!(remote = %self.shared.remote, "new connection replaces the old one");
        }
        self.drop_socket();
        self.socket = Some(socket);
        self.start_recording(now, false, &req.token);
        if let Some(rec) = self.recording.as_mut()
            && !rec.frame(now, Dir::In, "binary", connect)
        {
            self.recording = None;
        }
        let wall = self.wall();
        self.core.accept_handshake(now, wall, req);
    }

    /// With a recorder configured, starts recording the new transport.
    fn start_recording(&mut self, now: Instant, dialer: bool, token: &str) {
        let Some(recorder) = self.mgr.options.recorder.as_ref() else {
            return;
        };
        let header = Header {
            local: &self.shared.local,
            remote: &self.shared.remote,
            dialer,
            token,
            route: &self.mgr.options.route,
        };
        self.recording = Recording::open(recorder, &header, now);
        let upgrade = self.pending_upgrade.take().filter(|_| dialer);
        if let (Some(rec), Some(text)) = (self.recording.as_mut(), upgrade)
            && !rec.http(now, Dir::Out, &text)
        {
            self.recording = None;
        }
    }

    fn start_dial(&mut self) {
        let token = (self.mgr.options.auth_token)(&self.shared.remote);
        let request = match self
            .mgr
            .dial_request(&self.shared.remote, &token, self.rt.wall())
        {
            Ok(r) => r,
            Err(e) => {
                warn!(remote = %self.shared.remote, error = %e, "cannot build the dial request");
                let now = self.rt.now();
                self.core.handle_dial_failed(now);
                return;
            }
        };
        if self.mgr.options.recorder.is_some() {
            self.pending_upgrade = generate_request(request.clone())
                .ok()
                .map(|(bytes, _key)| String::from_utf8_lossy(&bytes).into_owned());
        }
        let dial = self.rt.dial(request, self.mgr.ws_config());
        let timeout = self
            .rt
            .sleep_until(self.rt.now() + self.mgr.options.dial_timeout);
        let fut = select(dial, Box::pin(timeout)).map(|either| match either {
            futures_util::future::Either::Left((Ok(socket), _)) => Ok(socket),
            futures_util::future::Either::Left((Err(e), _)) => Err(e.to_string()),
            futures_util::future::Either::Right(((), _)) => Err("dial timed out".to_owned()),
        });
        self.dialing = Some(Box::pin(fut));
        self.pending_token = Some(token);
    }

    fn dialed(&mut self, now: Instant, result: Result<R::Socket, String>) {
        let token = self.pending_token.take().unwrap_or_default();
        match result {
            Ok(socket) => {
                debug!(remote = %self.shared.remote, "dialed");
                self.drop_socket();
                self.socket = Some(socket);
                self.start_recording(now, true, &token);
                let wall = self.wall();
                self.core.start_handshake(now, wall, &token);
            }
            Err(e) => {
                self.pending_upgrade = None;
                debug!(remote = %self.shared.remote, error = %e, "dial failed");
                self.core.handle_dial_failed(now);
                self.shared.set_state(self.core.state());
            }
        }
    }
}

impl<R: Runtime> ConnTask<R> {
    // ---- commands from handles and handler tasks ----

    fn apply(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Request {
                ticket,
                handler,
                subroute,
                payload,
                deadline,
                reply,
            } => match self.core.request(now, handler, subroute, payload, deadline) {
                Ok(id) => {
                    self.calls.insert(id.0, (ticket, reply));
                    self.tickets.insert(ticket, id.0);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::CancelRequest { ticket } => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    self.calls.remove(&id);
                    self.core.cancel(now, CallId(id));
                }
            }
            Command::OpenStream {
                handler,
                subroute,
                payload,
                deadline,
                capacities,
                reply,
            } => {
                let caps =
                    capacities.or_else(|| self.mgr.registry.capacities(handler, subroute.as_ref()));
                match self
                    .core
                    .open_stream(now, handler, subroute, payload, deadline, caps)
                {
                    Ok(id) => {
                        let window = caps.map_or(0, |c| c.in_capacity as usize);
                        let key = StreamKey::Call(id.0);
                        let shared = StreamShared::new(key, Arc::clone(&self.shared), window);
                        if reply.send(Ok(Arc::clone(&shared))).is_err() {
                            // The opener went away before it got the stream.
                            self.core.cancel(now, id);
                        } else {
                            self.streams.insert(key, shared);
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Poke(key) => self.sync_stream(now, key),
            Command::Respond { id, result } => {
                self.handlers.remove(&id);
                self.core.respond(now, IncomingId(id), result.map(Some));
            }
            Command::HandlerDone { id, result } => {
                self.handlers.remove(&id);
                if let Some(s) = self.streams.get(&StreamKey::Incoming(id)) {
                    s.lock().finish = Some(result);
                    self.sync_stream(now, StreamKey::Incoming(id));
                }
            }
            Command::Shutdown => self.shutdown(now),
        }
    }

    /// Moves a stream's queued messages onto the wire as credit allows, and
    /// applies its EOF, consumed count, finish and abandonment.
    fn sync_stream(&mut self, now: Instant, key: StreamKey) {
        let Some(shared) = self.streams.get(&key).cloned() else {
            return;
        };
        let mut st = shared.lock();
        st.clear_poke();
        // Credit first: what the application consumed came before what it
        // queued since (a handler reads its input, then answers), and Go
        // sends them in that order (the sequence numbers show it).
        for _ in 0..std::mem::take(&mut st.consumed) {
            match key {
                StreamKey::Call(id) => self.core.stream_consumed(now, CallId(id)),
                StreamKey::Incoming(id) => self.core.incoming_consumed(now, IncomingId(id)),
            }
        }
        let mut moved = false;
        while let Some(payload) = st.outq.pop_front() {
            let sent = match key {
                StreamKey::Call(id) => self.core.stream_send(now, CallId(id), payload.clone()),
                StreamKey::Incoming(id) => {
                    self.core
                        .incoming_send(now, IncomingId(id), payload.clone())
                }
            };
            match sent {
                Ok(()) => moved = true,
                Err(SendError::NoCredit) | Err(SendError::QueueFull) => {
                    // The core reports credit back with an event.
                    st.outq.push_front(payload);
                    break;
                }
                Err(e) => {
                    st.outq.clear();
                    st.send_error = Some(e);
                    moved = true;
                    break;
                }
            }
        }
        if moved {
            st.wake_sender();
        }
        let mut remove = false;
        match key {
            StreamKey::Call(id) => {
                if st.abandoned && st.end.is_none() {
                    // Both halves are gone: a cancellation, not the end of
                    // input the sender's drop asked for.
                    self.core.cancel(now, CallId(id));
                    remove = true;
                } else if st.close_requested && st.outq.is_empty() {
                    st.close_requested = false;
                    let _ = self.core.stream_close(now, CallId(id));
                }
            }
            StreamKey::Incoming(id) => {
                if st.outq.is_empty()
                    && let Some(result) = st.finish.take()
                {
                    st.send_error = Some(SendError::Closed);
                    self.core.incoming_finish(now, IncomingId(id), result);
                    remove = true;
                }
            }
        }
        if remove {
            self.streams.remove(&key);
        }
    }

    fn shutdown(&mut self, now: Instant) {
        self.core.shutdown(now);
        // Commands queued behind the shutdown still get their answer.
        for cmd in self.shared.mailbox.close() {
            match cmd {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(CallError::Shutdown));
                }
                Command::OpenStream { reply, .. } => {
                    let _ = reply.send(Err(CallError::Shutdown));
                }
                _ => {}
            }
        }
        self.incoming.close();
        // Without a live session the core emits no `Disconnected`.
        if self.core.state() == State::Shutdown && self.socket.is_none() {
            self.finish();
            self.shared.set_state(State::Shutdown);
        }
    }

    // ---- events from the core ----

    fn on_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected {
                remote_id,
                peer_restarted,
            } => {
                info!(remote = %self.shared.remote, %remote_id, peer_restarted, "connected");
                self.shared.set_state(State::Connected);
                self.shared.publish_stats(self.core.stats(now));
            }
            Event::Disconnected { reason } => {
                match &reason {
                    DisconnectReason::Shutdown => info!(remote = %self.shared.remote, "shut down"),
                    DisconnectReason::Rejected(why) => {
                        warn!(remote = %self.shared.remote, %why, "connection rejected")
                    }
                    other => info!(remote = %self.shared.remote, reason = %other, "disconnected"),
                }
                self.drop_socket();
                let state = self.core.state();
                // Stats first: whoever waits for the state (as shutdown
                // does) then reads the final numbers.
                if state == State::Shutdown {
                    self.finish();
                } else {
                    self.shared.publish_stats(self.core.stats(now));
                }
                self.shared.set_state(state);
            }
            Event::Dial => self.start_dial(),
            Event::Response { id, result } => {
                if let Some((ticket, reply)) = self.calls.remove(&id.0) {
                    self.tickets.remove(&ticket);
                    let _ = reply.send(result);
                }
            }
            Event::StreamMessage { id, payload } => {
                if let Some(s) = self.streams.get(&StreamKey::Call(id.0)) {
                    let mut st = s.lock();
                    st.inbox.push_back(payload);
                    st.wake_receiver();
                }
            }
            Event::StreamCredit { id } => self.sync_stream(now, StreamKey::Call(id.0)),
            Event::StreamEnd { id, result } => {
                if let Some(s) = self.streams.remove(&StreamKey::Call(id.0)) {
                    s.lock().end(result);
                }
            }
            Event::IncomingRequest {
                id,
                handler,
                subroute,
                payload,
                ..
            } => self.start_single_handler(now, id, Route::of(handler, subroute), payload),
            Event::IncomingStream {
                id,
                handler,
                subroute,
                payload,
                deadline,
            } => {
                self.start_stream_handler(now, id, Route::of(handler, subroute), payload, deadline)
            }
            Event::IncomingMessage { id, payload } => {
                if let Some(s) = self.streams.get(&StreamKey::Incoming(id.0)) {
                    let mut st = s.lock();
                    st.inbox.push_back(payload.unwrap_or_default());
                    st.wake_receiver();
                }
            }
            Event::IncomingInputEnd { id } => {
                if let Some(s) = self.streams.get(&StreamKey::Incoming(id.0)) {
                    let mut st = s.lock();
                    if st.end.is_none() {
                        st.end = Some(Ok(()));
                    }
                    st.wake_receiver();
                }
            }
            Event::IncomingCredit { id } => self.sync_stream(now, StreamKey::Incoming(id.0)),
            Event::IncomingCancelled { id, reason } => {
                debug!(remote = %self.shared.remote, id = id.0, %reason, "incoming call cancelled");
                if let Some(h) = self.handlers.remove(&id.0) {
                    h.abort();
                }
                if let Some(s) = self.streams.remove(&StreamKey::Incoming(id.0)) {
                    s.lock().end(Err(CallError::Disconnected));
                }
            }
            Event::StreamStalled { id } => {
                warn!(remote = %self.shared.remote, call = id.0, "stream may be deadlocked: both sides wait for credit")
            }
            Event::IncomingStalled { id } => {
                warn!(remote = %self.shared.remote, incoming = id.0, "stream may be deadlocked: both sides wait for credit")
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        for (_, h) in self.handlers.drain() {
            h.abort();
        }
        for (_, s) in self.streams.drain() {
            s.lock().end(Err(CallError::Shutdown));
        }
        for (_, (_, reply)) in self.calls.drain() {
            let _ = reply.send(Err(CallError::Shutdown));
        }
        self.tickets.clear();
        // The last snapshot: shut down, nothing in flight.
        self.shared.publish_stats(self.core.stats(self.rt.now()));
    }

    /// Spawns `work` as the handler task of incoming call `id`; it can be
    /// aborted when the call is cancelled.
    fn spawn_handler(&mut self, id: u64, work: impl Future<Output = Command> + Send + 'static) {
        let (abort, registration) = AbortHandle::new_pair();
        self.handlers.insert(id, abort);
        let shared = Arc::clone(&self.shared);
        // A span per served call, under the connection's span (the task is
        // being polled inside it).
        let span = tracing::debug_span!("incoming", mux = id);
        let work = tracing::Instrument::instrument(work, span);
        let task = Abortable::new(work, registration).map(move |done| {
            if let Ok(cmd) = done {
                let _ = shared.mailbox.push(cmd);
            }
        });
        self.rt.spawn(task);
    }

    fn start_single_handler(
        &mut self,
        now: Instant,
        id: IncomingId,
        route: Route,
        payload: Option<Bytes>,
    ) {
        let Some(handler) = self.mgr.registry.single(route) else {
            self.core.reject_unknown_handler(now, id);
            return;
        };
        let fut = std::panic::AssertUnwindSafe(handler(payload.unwrap_or_default())).catch_unwind();
        self.spawn_handler(id.0, async move {
            let result = match fut.await {
                Ok(r) => r.map_err(|e| e.0),
                Err(panic) => Err(format!(
                    "handleMessages: panic recovered: {}",
                    panic_text(&panic)
                )),
            };
            Command::Respond { id: id.0, result }
        });
    }

    fn start_stream_handler(
        &mut self,
        now: Instant,
        id: IncomingId,
        route: Route,
        payload: Option<Bytes>,
        deadline: Option<Instant>,
    ) {
        let Some(entry) = self.mgr.registry.stream(route) else {
            self.core.reject_unknown_handler(now, id);
            return;
        };
        if !self.core.accept_stream(now, id, entry.capacities) {
            return;
        }
        let key = StreamKey::Incoming(id.0);
        let out_cap = entry.capacities.effective_out() as usize;
        let shared = StreamShared::new(key, Arc::clone(&self.shared), out_cap);
        self.streams.insert(key, Arc::clone(&shared));
        let input = StreamReceiver::new(Arc::clone(&shared));
        let input = (entry.capacities.in_capacity > 0).then_some(input);
        let call = StreamCall {
            payload,
            input,
            output: StreamSender::new(shared),
            caller: Arc::clone(&self.shared.remote),
            subroute: entry.subroute.clone(),
            deadline,
        };
        let fut = std::panic::AssertUnwindSafe((entry.handler)(call)).catch_unwind();
        self.spawn_handler(id.0, async move {
            let result = match fut.await {
                Ok(r) => r.map_err(|e| e.0),
                Err(panic) => Err(format!("handler panic: {}", panic_text(&panic))),
            };
            Command::HandlerDone { id: id.0, result }
        });
        // The core may already hold input for it (EOF-on-connect).
        self.sync_stream(now, key);
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
