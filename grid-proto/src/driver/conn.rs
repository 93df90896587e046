//! The application's handle on one remote host: requests and streams.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::capacities::Capacities;
use crate::driver::conn_shared::{Command, ConnShared, Deadline};
use crate::driver::stream::{StreamReceiver, StreamSender};
use crate::error::CallError;
use crate::handler::HandlerId;
use crate::redial::DialFailure;
use crate::state::State;
use crate::stats::Stats;
use crate::subroute::{Subroute, SubrouteId};

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
        self.shared.stats()
    }

    /// Why this node's latest attempt to connect failed, as soon as it
    /// failed; `None` once connected, and on the accepting side of the pair
    /// (see [`crate::driver::Manager::refusals`] there). A refusal
    /// ([`DialFailure::is_rejection`]: our token, host or clock was not
    /// accepted) will not fix itself.
    pub fn last_dial_failure(&self) -> Option<DialFailure> {
        self.shared.dial_failure()
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
        self.shared.begin_close();
    }

    /// Whether calls are in flight either way, as of the task's last turn
    /// (the stats snapshot may lag).
    pub(crate) fn busy(&self) -> bool {
        self.shared.is_busy()
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
            self.shared.wake_on_state_change(cx.waker());
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
            let ticket = this.shared.next_ticket();
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
