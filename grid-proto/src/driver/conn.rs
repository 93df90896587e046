//! The application's handle on one remote host: requests and streams.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::capacities::Capacities;
use crate::driver::mailbox::Mailbox;
use crate::driver::runtime::BoxFuture;
use crate::driver::stream::{StreamKey, StreamReceiver, StreamSender, StreamShared};
use crate::error::CallError;
use crate::handler::HandlerId;
use crate::redial::DialFailure;
use crate::state::State;
use crate::stats::Stats;
use crate::subroute::{Subroute, SubrouteId};

/// When a call gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deadline {
    /// At this instant.
    At(Instant),
    /// This long after the connection task takes the call, so the callee
    /// is sent exactly this (`DeadlineMS`, in whole milliseconds) however
    /// long the call waited in the mailbox.
    After(Duration),
}

impl Deadline {
    /// The instant, for a call the task takes at `now`.
    pub(crate) fn at(self, now: Instant) -> Instant {
        match self {
            Deadline::At(at) => at,
            Deadline::After(d) => now + d,
        }
    }
}

/// What handles and handler tasks ask of a connection task.
pub(crate) enum Command {
    Request {
        ticket: u64,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        /// The subroute's name, when the handle knows it (for the trace).
        route: Option<Arc<str>>,
        payload: Bytes,
        deadline: Option<Deadline>,
        reply: oneshot::Sender<Result<Option<Bytes>, CallError>>,
    },
    CancelRequest {
        ticket: u64,
    },
    OpenStream {
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        /// The subroute's name, when the handle knows it (for the trace).
        route: Option<Arc<str>>,
        payload: Option<Bytes>,
        deadline: Option<Deadline>,
        capacities: Option<Capacities>,
        reply: oneshot::Sender<Result<Arc<StreamShared>, CallError>>,
    },
    /// A stream's shared state changed (messages queued or consumed, EOF,
    /// halves dropped, handler finished).
    Poke(StreamKey),
    /// A single-request handler finished (`Ok(None)`: an absent payload).
    Respond {
        id: u64,
        result: Result<Option<Bytes>, String>,
    },
    /// A stream handler returned.
    HandlerDone {
        id: u64,
        result: Result<(), String>,
    },
    /// Stop: fail everything and end the task.
    Shutdown,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Request {
                ticket, handler, ..
            } => write!(f, "Request({ticket}, {handler:?})"),
            Command::CancelRequest { ticket } => write!(f, "CancelRequest({ticket})"),
            Command::OpenStream { handler, .. } => write!(f, "OpenStream({handler:?})"),
            Command::Poke(k) => write!(f, "Poke({k:?})"),
            Command::Respond { id, .. } => write!(f, "Respond({id})"),
            Command::HandlerDone { id, .. } => write!(f, "HandlerDone({id})"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// A sleep provider, so handles need not be generic over the runtime.
pub(crate) type SleepFn = Arc<dyn Fn(Instant) -> BoxFuture<()> + Send + Sync>;
/// The runtime's clock.
pub(crate) type ClockFn = Arc<dyn Fn() -> Instant + Send + Sync>;

/// State shared by a connection task and its handles.
pub(crate) struct ConnShared {
    pub(crate) local: Arc<str>,
    pub(crate) remote: Arc<str>,
    pub(crate) mailbox: Mailbox<Command>,
    state: AtomicU8,
    waiters: Mutex<Vec<Waker>>,
    next_ticket: AtomicU64,
    stats: Mutex<Option<Stats>>,
    /// Why the latest attempt to connect failed (dialer), until connected.
    dial_failure: Mutex<Option<DialFailure>>,
    /// Graceful shutdown: no new calls.
    pub(crate) closing: AtomicBool,
    /// Calls are in flight either way (kept current by the task).
    busy: AtomicBool,
    pub(crate) sleep: SleepFn,
    pub(crate) clock: ClockFn,
}

impl fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnShared")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("state", &self.state())
            .finish()
    }
}

fn state_to_u8(s: State) -> u8 {
    match s {
        State::Unconnected => 0,
        State::Connecting => 1,
        State::Connected => 2,
        State::ConnectionError => 3,
        State::Shutdown => 4,
    }
}

fn state_from_u8(v: u8) -> State {
    match v {
        0 => State::Unconnected,
        1 => State::Connecting,
        2 => State::Connected,
        3 => State::ConnectionError,
        _ => State::Shutdown,
    }
}

impl ConnShared {
    pub(crate) fn new(
        local: Arc<str>,
        remote: Arc<str>,
        sleep: SleepFn,
        clock: ClockFn,
    ) -> ConnShared {
        ConnShared {
            local,
            remote,
            mailbox: Mailbox::new(),
            state: AtomicU8::new(0),
            waiters: Mutex::new(Vec::new()),
            next_ticket: AtomicU64::new(1),
            stats: Mutex::new(None),
            dial_failure: Mutex::new(None),
            closing: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            sleep,
            clock,
        }
    }

    pub(crate) fn state(&self) -> State {
        state_from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: State) {
        self.state.store(state_to_u8(s), Ordering::Release);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiters {
            w.wake();
        }
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Release);
    }

    pub(crate) fn set_dial_failure(&self, failure: Option<DialFailure>) {
        *self.dial_failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// Corrects the state in the last published stats (when the task that
    /// publishes them is gone).
    pub(crate) fn set_stats_state(&self, state: State) {
        if let Some(stats) = self
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            stats.state = state;
        }
    }

    pub(crate) fn publish_stats(&self, stats: Stats) {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    fn refuse(&self) -> Option<CallError> {
        match self.state() {
            State::Connected if !self.closing.load(Ordering::Acquire) => None,
            State::Shutdown => Some(CallError::Shutdown),
            State::Connected => Some(CallError::Shutdown),
            _ => Some(CallError::NotConnected),
        }
    }
}

/// A handle on the connection to one remote host (cheap to clone). Calls
/// fail at once with [`CallError::NotConnected`] while the connection is
/// down; it reconnects by itself.
#[derive(Clone, Debug)]
pub struct Connection {
    shared: Arc<ConnShared>,
    /// The subroute every call of this handle goes to.
    subroute: Option<Subroute>,
}

/// Options of [`Connection::open_stream_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOptions {
    /// Cancel the stream when this passes (sent to the callee as
    /// `DeadlineMS`). Without one the stream is kept alive by pings.
    pub deadline: Option<Instant>,
    /// The callee's capacities; by default from the manager's table (local
    /// registrations and configured values, MinIO's defaults).
    pub capacities: Option<Capacities>,
    /// Like `deadline`, but counted from when the connection takes the
    /// stream, so the callee is sent exactly this (in whole milliseconds);
    /// wins over `deadline`.
    pub timeout: Option<Duration>,
}

impl Connection {
    pub(crate) fn new(shared: Arc<ConnShared>) -> Connection {
        Connection {
            shared,
            subroute: None,
        }
    }

    /// The remote host string.
    pub fn remote_host(&self) -> &str {
        &self.shared.remote
    }

    /// This node's host string.
    pub fn local_host(&self) -> &str {
        &self.shared.local
    }

    /// The route string of the subroute this handle is scoped to, if any
    /// (`None` too for a subroute given by its wire id).
    pub fn route(&self) -> Option<&str> {
        self.subroute.as_ref().and_then(Subroute::name)
    }

    /// The subroute this handle is scoped to, if any.
    pub fn scope(&self) -> Option<&Subroute> {
        self.subroute.as_ref()
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Whether calls can be made now.
    pub fn is_connected(&self) -> bool {
        self.shared.state() == State::Connected
    }

    /// The last published statistics of the connection (refreshed by its
    /// task about ten times a second while it is busy).
    pub fn stats(&self) -> Option<Stats> {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why this node's latest attempt to connect failed, as soon as it
    /// failed; `None` once connected, and on the accepting side of the pair
    /// (see [`crate::driver::Manager::refusals`] there). A refusal
    /// ([`DialFailure::is_rejection`]: our token, host or clock was not
    /// accepted) will not fix itself.
    pub fn last_dial_failure(&self) -> Option<DialFailure> {
        self.shared
            .dial_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This handle scoped to a subroute (Go's `Subroute`): a route string
    /// such as a drive path, where nested subroutes join with `/` as in Go,
    /// or a [`SubrouteId`] as a capture carries it (only the hash travels,
    /// never the route's name), sent as is whatever the handler.
    pub fn subroute(&self, subroute: impl Into<Subroute>) -> Connection {
        let subroute = match &self.subroute {
            Some(base) => base.join(subroute.into()),
            None => subroute.into(),
        };
        Connection {
            shared: Arc::clone(&self.shared),
            subroute: Some(subroute),
        }
    }

    /// This handle scoped to a subroute given by its 32-byte wire id: the
    /// same as [`subroute`](Self::subroute) with a [`SubrouteId`].
    pub fn subroute_raw(&self, id: SubrouteId) -> Connection {
        self.subroute(id)
    }

    /// Graceful shutdown, step one: refuse new calls.
    pub(crate) fn begin_close(&self) {
        self.shared.closing.store(true, Ordering::Release);
    }

    /// Whether calls are in flight either way, as of the task's last turn
    /// (the stats snapshot may lag).
    pub(crate) fn busy(&self) -> bool {
        self.shared.busy.load(Ordering::Acquire)
    }

    /// Ends the connection task.
    pub(crate) fn shutdown(&self) {
        let _ = self.shared.mailbox.push(Command::Shutdown);
    }

    fn subroute_id(&self, handler: HandlerId) -> Option<SubrouteId> {
        self.subroute.as_ref().map(|s| s.id(handler))
    }

    /// Waits until the connection is established, at most `timeout`.
    pub async fn wait_for_connect(&self, timeout: Duration) -> Result<(), CallError> {
        let deadline = (self.shared.clock)() + timeout;
        let mut sleep = (self.shared.sleep)(deadline);
        poll_fn(|cx| {
            match self.shared.state() {
                State::Connected => return Poll::Ready(Ok(())),
                State::Shutdown => return Poll::Ready(Err(CallError::Shutdown)),
                _ => {}
            }
            self.shared
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(cx.waker().clone());
            // Re-check: the state may have changed before the waker was stored.
            if self.shared.state() == State::Connected {
                return Poll::Ready(Ok(()));
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(CallError::NotConnected)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Sends a single request and waits for the answer (Go's default
    /// deadline of 60 s applies). Dropping the future cancels the call.
    pub fn request(&self, handler: HandlerId, payload: impl Into<Bytes>) -> RequestFuture {
        self.request_inner(handler, payload.into(), None)
    }

    /// [`request`](Self::request) with a deadline, sent to the callee too.
    pub fn request_with_deadline(
        &self,
        handler: HandlerId,
        payload: impl Into<Bytes>,
        deadline: Instant,
    ) -> RequestFuture {
        self.request_inner(handler, payload.into(), Some(Deadline::At(deadline)))
    }

    /// [`request`](Self::request) giving up `timeout` after the connection
    /// takes the call: the callee is sent exactly this (`DeadlineMS`, in
    /// whole milliseconds), however long the call waited to be taken.
    pub fn request_with_timeout(
        &self,
        handler: HandlerId,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> RequestFuture {
        self.request_inner(handler, payload.into(), Some(Deadline::After(timeout)))
    }

    fn request_inner(
        &self,
        handler: HandlerId,
        payload: Bytes,
        deadline: Option<Deadline>,
    ) -> RequestFuture {
        RequestFuture {
            shared: Arc::clone(&self.shared),
            span: self.call_span("request", handler),
            state: ReqState::Init {
                handler,
                subroute: self.subroute_id(handler),
                route: self
                    .subroute
                    .as_ref()
                    .and_then(Subroute::shared_name)
                    .cloned(),
                payload,
                deadline,
            },
        }
    }

    /// A span for one outgoing call, a child of the caller's current span:
    /// what the application logs while it waits on the call is under it.
    fn call_span(&self, kind: &'static str, handler: HandlerId) -> tracing::Span {
        tracing::debug_span!(
            "call",
            kind,
            %handler,
            subroute = self.route(),
            remote = %self.shared.remote,
            error = tracing::field::Empty,
        )
    }

    /// Opens a stream to `handler` with an optional initial payload.
    /// Returns the sending half (whose sends fail with `Closed` when the
    /// handler takes no input) and the receiving half. Closing or dropping
    /// the sender sends EOF; dropping both halves cancels the stream.
    pub async fn open_stream(
        &self,
        handler: HandlerId,
        payload: Option<Bytes>,
    ) -> Result<(StreamSender, StreamReceiver), CallError> {
        self.open_stream_with(handler, payload, StreamOptions::default())
            .await
    }

    /// [`open_stream`](Self::open_stream) with a deadline or explicit capacities.
    pub async fn open_stream_with(
        &self,
        handler: HandlerId,
        payload: Option<Bytes>,
        options: StreamOptions,
    ) -> Result<(StreamSender, StreamReceiver), CallError> {
        let span = self.call_span("stream", handler);
        if let Some(e) = self.shared.refuse() {
            span.record("error", tracing::field::display(&e));
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Command::OpenStream {
            handler,
            subroute: self.subroute_id(handler),
            route: self
                .subroute
                .as_ref()
                .and_then(Subroute::shared_name)
                .cloned(),
            payload,
            deadline: options
                .timeout
                .map(Deadline::After)
                .or(options.deadline.map(Deadline::At)),
            capacities: options.capacities,
            reply: tx,
        };
        let opened = async {
            self.shared
                .mailbox
                .push(cmd)
                .map_err(|_| CallError::Shutdown)?;
            rx.await.map_err(|_| CallError::Shutdown)?
        };
        match tracing::Instrument::instrument(opened, span.clone()).await {
            Ok(shared) => Ok((
                StreamSender::new(Arc::clone(&shared)).in_span(span.clone()),
                StreamReceiver::new(shared).in_span(span),
            )),
            Err(e) => {
                span.record("error", tracing::field::display(&e));
                Err(e)
            }
        }
    }
}

enum ReqState {
    Init {
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        route: Option<Arc<str>>,
        payload: Bytes,
        deadline: Option<Deadline>,
    },
    Waiting {
        ticket: u64,
        reply: oneshot::Receiver<Result<Option<Bytes>, CallError>>,
    },
    Done,
}

/// The answer to a single request: the response payload, or why it failed
/// ([`CallError::Remote`] / [`CallError::Refused`] come from the remote,
/// everything else is local). Dropping it before it completes cancels the
/// call on both sides.
#[must_use = "a request does nothing unless awaited"]
pub struct RequestFuture {
    shared: Arc<ConnShared>,
    /// The call's span (see `Connection::call_span`); closed when the
    /// future is dropped.
    span: tracing::Span,
    state: ReqState,
}

impl fmt::Debug for RequestFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFuture")
            .field("remote", &self.shared.remote)
            .finish()
    }
}

impl Future for RequestFuture {
    type Output = Result<Bytes, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        if let ReqState::Init { .. } = this.state {
            if let Some(e) = this.shared.refuse() {
                this.state = ReqState::Done;
                this.span.record("error", tracing::field::display(&e));
                return Poll::Ready(Err(e));
            }
            let ReqState::Init {
                handler,
                subroute,
                route,
                payload,
                deadline,
            } = std::mem::replace(&mut this.state, ReqState::Done)
            else {
                unreachable!("matched Init above")
            };
            let ticket = this.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Request {
                ticket,
                handler,
                subroute,
                route,
                payload,
                deadline,
                reply: tx,
            };
            if this.shared.mailbox.push(cmd).is_err() {
                return Poll::Ready(Err(CallError::Shutdown));
            }
            this.state = ReqState::Waiting { ticket, reply: rx };
        }
        match &mut this.state {
            ReqState::Waiting { reply, .. } => match Pin::new(reply).poll(cx) {
                Poll::Ready(result) => {
                    this.state = ReqState::Done;
                    let result = result.unwrap_or(Err(CallError::Shutdown));
                    if let Err(e) = &result {
                        this.span.record("error", tracing::field::display(e));
                    }
                    Poll::Ready(result.map(Option::unwrap_or_default))
                }
                Poll::Pending => Poll::Pending,
            },
            _ => Poll::Ready(Err(CallError::Shutdown)),
        }
    }
}

impl Drop for RequestFuture {
    fn drop(&mut self) {
        if let ReqState::Waiting { ticket, .. } = self.state {
            let _ = self.shared.mailbox.push(Command::CancelRequest { ticket });
        }
    }
}
