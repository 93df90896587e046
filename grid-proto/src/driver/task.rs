//! The per-connection task: one per remote host. It owns the sans-IO
//! [`crate::Connection`], the current WebSocket and the timer, and it runs
//! the loop of the crate docs: commands in, frames in, timeouts, events out,
//! frames out (all queued frames in one batch and one flush), one timer.
//! What it does with each command and event is in `dispatch.rs`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{FutureExt, select};
use futures_util::{Sink, Stream};
use hashbrown::HashMap;
use tracing::{debug, error, info, warn};
use tungstenite::Message as WsMessage;
use tungstenite::handshake::client::generate_request;

use crate::connection::Connection as Core;
use crate::driver::conn_shared::{Command, ConnShared, StreamKey, StreamShared};
use crate::driver::context::HandlerContext;
use crate::driver::isolate;
use crate::driver::mailbox::Mailbox;
use crate::driver::manager_shared::ManagerShared;
use crate::driver::recorder::{Dir, Header, Recording};
use crate::driver::recv_buffer::RecvBuffer;
use crate::driver::runtime::{BoxFuture, Runtime};
use crate::driver::trace::{Outcome, Tracer};
use crate::error::{CallError, CancelReason};
use crate::payload::ConnectRequest;
use crate::redial::DialFailure;
use crate::state::State;
use crate::time::Timestamp;

/// Frames read per turn before the task lets writes and other tasks run.
const READ_BUDGET: usize = 128;
/// Bytes read per wake-up before the task yields: the handlers those
/// frames started get to answer (and so count against `max_queued_bytes`)
/// before more is read. Without it one wake-up could read 16 turns of 128
/// large frames before any answer was queued.
const READ_BYTES_BUDGET: usize = 1 << 20;
/// Loop turns per poll before the task yields to the executor.
const TURN_BUDGET: usize = 16;
/// Most bytes handed to the WebSocket before a flush must complete (see
/// `write`): twice its write buffer, so a busy connection still flushes in
/// large batches.
const UNFLUSHED_LIMIT: usize = 256 * 1024;
/// How often, at most, the published stats snapshot is refreshed; it is
/// refreshed at most this long after activity stops.
const STATS_INTERVAL: Duration = Duration::from_millis(100);

/// A transport handed over by the acceptor path, with its checked `Connect`
/// and the frame it came in (for the recorder).
pub(crate) type Incoming<S> = (S, ConnectRequest, Bytes);

type Reply = oneshot::Sender<Result<Option<Bytes>, CallError>>;

pub(crate) struct ConnTask<R: Runtime> {
    pub(super) rt: R,
    pub(super) core: Core,
    pub(super) shared: Arc<ConnShared>,
    pub(super) mgr: Arc<ManagerShared>,
    pub(super) incoming: Arc<Mailbox<Incoming<R::Socket>>>,
    pub(super) socket: Option<R::Socket>,
    /// A frame taken from the core that the socket was not ready for.
    pub(super) pending_frame: Option<Bytes>,
    pub(super) needs_flush: bool,
    /// Bytes handed to the WebSocket since its last completed flush.
    pub(super) unflushed_bytes: usize,
    /// Bytes read in this wake-up (see `READ_BYTES_BUDGET`).
    pub(super) read_bytes: usize,
    /// Where received frames are kept while their messages are in use.
    pub(super) received: RecvBuffer,
    /// Output is waiting and the task should yield once before writing it.
    pub(super) yield_before_write: bool,
    /// The task yielded once: the next pass writes.
    pub(super) yielded_before_write: bool,
    /// Since when writing has been blocked (write-stall timeout).
    pub(super) write_blocked_since: Option<Instant>,
    pub(super) dialing: Option<BoxFuture<Result<R::Socket, DialFailure>>>,
    /// The last dial failure logged at warn level: the next is logged
    /// again only when the reason changes.
    pub(super) logged_failure: Option<DialFailure>,
    /// The token sent with the dial in progress (also goes into `Connect`).
    pub(super) pending_token: Option<String>,
    /// The upgrade request of the dial in progress, as text (recording only).
    pub(super) pending_upgrade: Option<String>,
    /// The transport being recorded (`Options::recorder`).
    pub(super) recording: Option<Recording>,
    pub(super) sleep: Option<(Instant, Pin<Box<R::Sleep>>)>,
    pub(super) commands: VecDeque<Command>,
    pub(super) accepted: VecDeque<Incoming<R::Socket>>,
    /// Outstanding requests: call id → (ticket, reply).
    pub(super) calls: HashMap<u64, (u64, Reply)>,
    /// Ticket of a request future → its call id (for cancel-on-drop).
    pub(super) tickets: HashMap<u64, u64>,
    pub(super) streams: HashMap<StreamKey, Arc<StreamShared>>,
    /// Running handler tasks of incoming calls: their contexts, through
    /// which they are cancelled.
    pub(super) handlers: HashMap<u64, HandlerContext>,
    /// Records of the calls in flight, for the trace hook.
    pub(super) trace: Tracer,
    pub(super) last_stats: Option<Instant>,
    /// Something happened since the stats were last published.
    pub(super) stats_dirty: bool,
    pub(super) finished: bool,
    /// Run by [`ConnTask::supervise`], which starts a fresh task if this
    /// one panics.
    pub(super) supervised: bool,
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
            trace: Tracer::new(mgr.options.trace.clone()),
            rt,
            core,
            shared,
            mgr,
            incoming,
            socket: None,
            pending_frame: None,
            needs_flush: false,
            unflushed_bytes: 0,
            read_bytes: 0,
            received: RecvBuffer::default(),
            yield_before_write: false,
            yielded_before_write: false,
            write_blocked_since: None,
            dialing: None,
            logged_failure: None,
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
            supervised: false,
        }
    }

    /// Runs until the connection is shut down.
    async fn run(mut self) {
        std::future::poll_fn(|cx| self.poll_turns(cx)).await;
    }

    /// Runs the task until the connection is shut down. User code is
    /// isolated, so a panic here is a bug of this crate; it must not cut
    /// this peer off for good: the dead task fails everything it held (its
    /// `Drop`), and after a pause (so a bug that strikes again does not
    /// spin) a fresh task with a fresh core takes over the same handles.
    /// The peer sees the transport close and reconnects.
    pub(crate) async fn supervise(self) {
        let rt = self.rt.clone();
        let config = self.core.config().clone();
        let instance_id = self.core.instance_id();
        let shared = Arc::clone(&self.shared);
        let mgr = Arc::clone(&self.mgr);
        let incoming = Arc::clone(&self.incoming);
        let mut task = self;
        loop {
            task.supervised = true;
            let Err(panic) = isolate::run(task.run()).await else {
                return;
            };
            error!(remote = %shared.remote, %panic, "connection task panicked; its calls failed, restarting it");
            rt.sleep_until(rt.now() + mgr.options.connection.backoff.retry)
                .await;
            if shared.mailbox.is_closed() {
                shared.set_state(State::Shutdown);
                return;
            }
            let now = rt.now();
            let wall = Timestamp::from_system_time(rt.wall());
            let core = Core::new(config.clone(), instance_id, now, wall);
            task = ConnTask::new(
                rt.clone(),
                core,
                Arc::clone(&shared),
                Arc::clone(&mgr),
                Arc::clone(&incoming),
            );
        }
    }

    fn wall(&self) -> Timestamp {
        Timestamp::from_system_time(self.rt.wall())
    }

    fn poll_turns(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // One clock read per wake-up: the turns of one poll are microseconds
        // apart, and reading the clock was a visible share of a busy stream.
        let now = self.rt.now();
        self.read_bytes = 0;
        self.received.tick(now);
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
        // What the peer already sent comes before the commands queued since:
        // an application that acts after a frame was delivered (cancels a
        // stream its peer just acknowledged, say) sees that frame handled
        // first, as the peer saw the order.
        let mut worked = self.read(cx, now);

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
            if !self.core.wants_read() {
                return worked;
            }
            if self.read_bytes >= READ_BYTES_BUDGET {
                cx.waker().wake_by_ref();
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
                    self.read_bytes += frame.len();
                    let frame = self.received.keep(frame);
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
            // Some WebSocket sinks (async-tungstenite) accept every frame
            // and buffer without bound; a peer that does not read would
            // then pull the whole queue out of the core, past the
            // back-pressure on `queued_bytes`. So at most UNFLUSHED_LIMIT
            // goes into the sink before a flush has to complete.
            if self.unflushed_bytes >= UNFLUSHED_LIMIT {
                match Pin::new(&mut *socket).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.needs_flush = false;
                        self.unflushed_bytes = 0;
                    }
                    Poll::Ready(Err(e)) => {
                        debug!(remote = %self.shared.remote, error = %e, "transport flush failed");
                        self.lose_transport(now);
                        return true;
                    }
                    Poll::Pending => break,
                }
            }
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
                    self.unflushed_bytes += frame.len();
                    // The WebSocket copies the frame into its own buffer;
                    // this handle then gives the frame's buffer back.
                    let sent = frame.clone();
                    if let Err(e) = Pin::new(&mut *socket).start_send(WsMessage::Binary(frame)) {
                        debug!(remote = %self.shared.remote, error = %e, "transport write failed");
                        self.lose_transport(now);
                        return true;
                    }
                    self.core.recycle(sent);
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
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    self.unflushed_bytes = 0;
                }
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

    pub(super) fn drop_socket(&mut self) {
        self.socket = None;
        self.recording = None;
        self.pending_frame = None;
        self.needs_flush = false;
        self.unflushed_bytes = 0;
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
        let header = Header {
            local: &self.shared.local,
            remote: &self.shared.remote,
            dialer,
            token,
            route: &self.mgr.options.route,
        };
        self.recording = (self.mgr.options.recorder())
            .and_then(|recorder| Recording::open(recorder, &header, now));
        let upgrade = self.pending_upgrade.take().filter(|_| dialer);
        if let (Some(rec), Some(text)) = (self.recording.as_mut(), upgrade)
            && !rec.http(now, Dir::Out, &text)
        {
            self.recording = None;
        }
    }

    pub(super) fn start_dial(&mut self) {
        let now = self.rt.now();
        let auth = Arc::clone(&self.mgr.options.auth_token);
        let token = match isolate::call(|| auth(&self.shared.remote)) {
            Ok(token) => token,
            Err(panic) => {
                error!(remote = %self.shared.remote, %panic, "the auth_token hook panicked; this dial attempt fails");
                let failure = DialFailure::Local(format!("auth_token panicked: {panic}"));
                return self.dial_failed(now, failure);
            }
        };
        let request = match self
            .mgr
            .dial_request(&self.shared.remote, &token, self.rt.wall())
        {
            Ok(r) => r,
            Err(e) => return self.dial_failed(now, DialFailure::Local(e)),
        };
        if self.mgr.options.recorder().is_some() {
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
            futures_util::future::Either::Left((Err(e), _)) => Err(classify_dial_error(&e)),
            futures_util::future::Either::Right(((), _)) => {
                Err(DialFailure::Unreachable("dial timed out".to_owned()))
            }
        });
        self.dialing = Some(Box::pin(fut));
        self.pending_token = Some(token);
    }

    fn dialed(&mut self, now: Instant, result: Result<R::Socket, DialFailure>) {
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
            Err(failure) => {
                self.pending_upgrade = None;
                self.dial_failed(now, failure);
            }
        }
    }

    fn dial_failed(&mut self, now: Instant, failure: DialFailure) {
        self.core.handle_dial_failed(now, failure);
        self.report_dial_failure();
        self.shared.set_state(self.core.state());
    }

    /// Publishes the core's latest dial failure and logs it: at warn level
    /// when the reason changed, else at debug level (a peer that stays
    /// down is not a warning per second).
    pub(super) fn report_dial_failure(&mut self) {
        let failure = self.core.last_dial_failure().cloned();
        if let Some(f) = &failure {
            if self.logged_failure.as_ref() != Some(f) {
                warn!(remote = %self.shared.remote, reason = %f, rejected = f.is_rejection(), "cannot connect");
                self.logged_failure = Some(f.clone());
            } else {
                debug!(remote = %self.shared.remote, reason = %f, "cannot connect (unchanged)");
            }
        }
        self.shared.set_dial_failure(failure);
    }
}

/// How a call still traced ends when its connection is lost for good.
pub(super) fn ended_by_loss(key: StreamKey) -> Outcome<'static> {
    match key {
        StreamKey::Call(_) => Outcome::Failed(&CallError::Disconnected),
        StreamKey::Incoming(_) => Outcome::Ended(&CancelReason::Disconnected),
    }
}

/// What a failed dial + upgrade says about the peer.
fn classify_dial_error(e: &tungstenite::Error) -> DialFailure {
    use tungstenite::Error;
    use tungstenite::error::{ProtocolError, UrlError};
    match e {
        Error::Http(response) => DialFailure::UpgradeRefused(response.status().as_u16()),
        Error::Url(UrlError::UnableToConnect(_)) => DialFailure::Unreachable(e.to_string()),
        Error::Url(e) => DialFailure::Local(e.to_string()),
        Error::Protocol(
            ProtocolError::HandshakeIncomplete | ProtocolError::ResetWithoutClosingHandshake,
        ) => DialFailure::Unreachable(e.to_string()),
        // The peer answered, but not as a WebSocket server does.
        Error::Protocol(_) | Error::HttpFormat(_) | Error::Utf8(_) => {
            DialFailure::BadAnswer(e.to_string())
        }
        // I/O errors (refused, reset, unreachable, name not resolved),
        // closed connections, TLS failures and anything new: retry soon.
        _ => DialFailure::Unreachable(e.to_string()),
    }
}

impl<R: Runtime> Drop for ConnTask<R> {
    /// A task that did not finish (it panicked, or its manager was dropped
    /// before starting it) answers everything it held at once, so no call
    /// waits for a task that is gone, and publishes a truthful state first:
    /// `ConnectionError` while its supervisor restarts it, else `Shutdown`.
    /// Touches only the driver's own tables, never the core (which may be
    /// half-updated), and nothing here can panic.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let restarting = self.supervised && !self.shared.mailbox.is_closed();
        let (state, refusal) = if restarting {
            (State::ConnectionError, CallError::NotConnected)
        } else {
            (State::Shutdown, CallError::Shutdown)
        };
        self.shared.set_stats_state(state);
        self.shared.set_busy(false);
        self.shared.set_state(state);
        // Every call still traced ends here; not while unwinding, where
        // a panicking hook could not be caught.
        if !std::thread::panicking() {
            let now = self.rt.now();
            self.trace
                .end_all(now, ended_by_loss, &self.shared, &self.core);
        }
        for (_, h) in self.handlers.drain() {
            h.cancel(CancelReason::Disconnected);
        }
        for (_, s) in self.streams.drain() {
            s.lock().end(Err(CallError::Disconnected));
        }
        for (_, (_, reply)) in self.calls.drain() {
            let _ = reply.send(Err(CallError::Disconnected));
        }
        self.tickets.clear();
        let queued = if restarting {
            self.shared.mailbox.take_all()
        } else {
            self.shared.mailbox.close()
        };
        for cmd in self.commands.drain(..).chain(queued) {
            match cmd {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                Command::OpenStream { reply, .. } => {
                    let _ = reply.send(Err(refusal.clone()));
                }
                _ => {}
            }
        }
        // Transports handed over but not taken: closing them makes their
        // peers redial.
        self.accepted.clear();
        if restarting {
            let _ = self.incoming.take_all();
        } else {
            let _ = self.incoming.close();
        }
        self.socket = None;
        self.dialing = None;
    }
}
