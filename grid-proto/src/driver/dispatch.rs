//! What the connection task does with what it is told: commands from the
//! application's handles and handler tasks, and events from the core
//! (answers routed to waiting callers, stream traffic to stream halves,
//! incoming calls to spawned handlers). The loop itself, the transport and
//! the timer are in `task.rs`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::FutureExt;
use tracing::{debug, error, info, warn};

use crate::driver::conn_shared::{Command, StreamKey, StreamShared};
use crate::driver::context::{HandlerContext, until_cancelled};
use crate::driver::isolate;
use crate::driver::registry::{Route, StreamCall};
use crate::driver::runtime::Runtime;
use crate::driver::send_error::StreamSendError;
use crate::driver::stream::{StreamReceiver, StreamSender};
use crate::driver::task::ConnTask;
use crate::driver::trace::{CallKind, Outcome};
use crate::error::{CallError, CancelReason, DisconnectReason, SendError};
use crate::event::{CallId, Event, IncomingId};
use crate::handler::HandlerId;
use crate::outgoing::{OpenStream, Request};
use crate::state::State;
use crate::subroute::Subroute;

impl<R: Runtime> ConnTask<R> {
    // ---- commands from handles and handler tasks ----

    pub(super) fn apply(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Request {
                ticket,
                handler,
                subroute,
                route,
                payload,
                deadline,
                reply,
            } => {
                let size = Some(payload.len());
                let request = Request {
                    handler,
                    subroute,
                    payload,
                    deadline: deadline.map(|d| d.at(now)),
                };
                let route = route.as_ref();
                match self.core.request(now, request) {
                    Ok(id) => {
                        let key = StreamKey::Call(id.0);
                        let kind = CallKind::Request;
                        self.trace
                            .start(key, kind, handler, route, subroute, now, size);
                        self.calls.insert(id.0, (ticket, reply));
                        self.tickets.insert(ticket, id.0);
                    }
                    Err(e) => {
                        let (kind, conn, core) = (CallKind::Request, &self.shared, &self.core);
                        self.trace
                            .refused(kind, handler, route, subroute, now, size, &e, conn, core);
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::CancelRequest { ticket } => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    self.calls.remove(&id);
                    self.core.call(CallId(id)).cancel();
                    self.trace_end(StreamKey::Call(id), Outcome::Cancelled);
                }
            }
            Command::OpenStream {
                handler,
                subroute,
                route,
                payload,
                deadline,
                capacities,
                reply,
            } => {
                let caps =
                    capacities.or_else(|| self.mgr.registry.capacities(handler, subroute.as_ref()));
                let deadline = deadline.map(|d| d.at(now));
                let size = payload.as_ref().map(Bytes::len);
                let route = route.as_ref();
                match self.core.open_stream(
                    now,
                    OpenStream {
                        handler,
                        subroute,
                        payload,
                        deadline,
                        capacities: caps,
                    },
                ) {
                    Ok(id) => {
                        let window = caps.map_or(0, |c| c.in_capacity as usize);
                        let key = StreamKey::Call(id.0);
                        let kind = CallKind::Stream;
                        self.trace
                            .start(key, kind, handler, route, subroute, now, size);
                        let shared = StreamShared::new(key, Arc::clone(&self.shared), window);
                        if reply.send(Ok(Arc::clone(&shared))).is_err() {
                            // The opener went away before it got the stream.
                            self.core.call(id).cancel();
                            self.trace_end(key, Outcome::Cancelled);
                        } else {
                            self.streams.insert(key, shared);
                        }
                    }
                    Err(e) => {
                        let (kind, conn, core) = (CallKind::Stream, &self.shared, &self.core);
                        self.trace
                            .refused(kind, handler, route, subroute, now, size, &e, conn, core);
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Poke(key) => self.sync_stream(key),
            Command::Respond { id, result } => {
                self.handlers.remove(&id);
                let key = StreamKey::Incoming(id);
                match &result {
                    Ok(response) => {
                        self.trace
                            .sent(key, response.as_ref().map_or(0, Bytes::len));
                        self.trace_end(key, Outcome::Ok);
                    }
                    Err(text) => self.trace_end(key, Outcome::Handler(text)),
                }
                self.core.incoming(IncomingId(id)).respond(result);
            }
            Command::HandlerDone { id, result } => {
                self.handlers.remove(&id);
                if let Some(s) = self.streams.get(&StreamKey::Incoming(id)) {
                    s.lock().finish = Some(result);
                    self.sync_stream(StreamKey::Incoming(id));
                }
            }
            Command::Shutdown => self.shutdown(now),
        }
    }

    /// Moves a stream's queued messages onto the wire as credit allows, and
    /// applies its EOF, consumed count, finish and abandonment.
    fn sync_stream(&mut self, key: StreamKey) {
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
                StreamKey::Call(id) => self.core.call(CallId(id)).consumed(),
                StreamKey::Incoming(id) => self.core.incoming(IncomingId(id)).consumed(),
            }
        }
        let mut moved = false;
        while let Some(payload) = st.outq.pop_front() {
            let len = payload.len();
            let sent = match key {
                StreamKey::Call(id) => self.core.call(CallId(id)).send(payload.clone()),
                StreamKey::Incoming(id) => self.core.incoming(IncomingId(id)).send(payload.clone()),
            };
            match sent {
                Ok(()) => {
                    moved = true;
                    self.trace.sent(key, len);
                }
                Err(SendError::NoCredit) | Err(SendError::QueueFull) => {
                    // The core reports credit back with an event.
                    st.outq.push_front(payload);
                    break;
                }
                Err(e) => {
                    st.outq.clear();
                    st.send_error = Some(match e {
                        SendError::TooLarge { size, max } => {
                            StreamSendError::TooLarge { size, max }
                        }
                        // The core already forgot the stream: its end is
                        // on its way as an event.
                        SendError::UnknownStream => StreamSendError::Ended,
                        _ => StreamSendError::Closed,
                    });
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
                    self.core.call(CallId(id)).cancel();
                    self.trace_end(key, Outcome::Cancelled);
                    remove = true;
                } else if st.close_requested && st.outq.is_empty() {
                    st.close_requested = false;
                    let _ = self.core.call(CallId(id)).close();
                }
            }
            StreamKey::Incoming(id) => {
                if st.outq.is_empty()
                    && let Some(result) = st.finish.take()
                {
                    st.send_error = Some(StreamSendError::Closed);
                    let outcome = match &result {
                        Ok(()) => Outcome::Ok,
                        Err(text) => Outcome::Handler(text),
                    };
                    self.trace_end(key, outcome);
                    self.core.incoming(IncomingId(id)).finish(result);
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

    pub(super) fn on_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected {
                remote_id,
                peer_restarted,
            } => {
                info!(remote = %self.shared.remote, %remote_id, peer_restarted, "connected");
                self.logged_failure = None;
                self.shared.set_dial_failure(None);
                // Stats first: whoever waits for the state (as
                // `wait_for_connect` does) then reads this session's numbers.
                self.shared.publish_stats(self.core.stats(now));
                self.shared.set_state(State::Connected);
            }
            Event::Disconnected { reason } => {
                let established = self.shared.state() == State::Connected;
                match &reason {
                    DisconnectReason::Shutdown => info!(remote = %self.shared.remote, "shut down"),
                    // A failed handshake is reported as a dial failure below.
                    _ if !established => {}
                    other => info!(remote = %self.shared.remote, reason = %other, "disconnected"),
                }
                if !established && self.core.is_dialer() {
                    self.report_dial_failure();
                }
                // A replaced session ends because a new transport just took
                // its place: that one is already the socket and must stay.
                if reason != DisconnectReason::Replaced {
                    self.drop_socket();
                }
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
                    let key = StreamKey::Call(id.0);
                    match &result {
                        Ok(response) => {
                            let len = response.as_ref().map_or(0, Bytes::len);
                            self.trace.received(key, len);
                            self.trace_end(key, Outcome::Ok);
                        }
                        Err(e) => self.trace_end(key, Outcome::Failed(e)),
                    }
                    let _ = reply.send(result);
                }
            }
            Event::StreamMessage { id, payload } => {
                self.trace.received(StreamKey::Call(id.0), payload.len());
                if let Some(s) = self.streams.get(&StreamKey::Call(id.0)) {
                    let mut st = s.lock();
                    st.inbox.push_back(payload);
                    st.wake_receiver();
                }
            }
            Event::StreamCredit { id } => self.sync_stream(StreamKey::Call(id.0)),
            Event::StreamEnd { id, result } => {
                let outcome = match &result {
                    Ok(()) => Outcome::Ok,
                    Err(e) => Outcome::Failed(e),
                };
                self.trace_end(StreamKey::Call(id.0), outcome);
                if let Some(s) = self.streams.remove(&StreamKey::Call(id.0)) {
                    s.lock().end(result);
                }
            }
            Event::IncomingRequest {
                id,
                handler,
                subroute,
                payload,
                deadline,
            } => {
                let key = StreamKey::Incoming(id.0);
                let size = Some(payload.as_ref().map_or(0, Bytes::len));
                let kind = CallKind::Request;
                self.trace
                    .start(key, kind, handler, None, subroute, now, size);
                let route = Route::of(handler, subroute);
                self.start_single_handler(now, id, handler, route, payload, deadline)
            }
            Event::IncomingStream {
                id,
                handler,
                subroute,
                payload,
                deadline,
            } => {
                let key = StreamKey::Incoming(id.0);
                let size = payload.as_ref().map(Bytes::len);
                let kind = CallKind::Stream;
                self.trace
                    .start(key, kind, handler, None, subroute, now, size);
                let route = Route::of(handler, subroute);
                self.start_stream_handler(now, id, handler, route, payload, deadline)
            }
            Event::IncomingMessage { id, payload } => {
                let len = payload.as_ref().map_or(0, Bytes::len);
                self.trace.received(StreamKey::Incoming(id.0), len);
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
            Event::IncomingCredit { id } => self.sync_stream(StreamKey::Incoming(id.0)),
            Event::IncomingCancelled { id, reason } => {
                debug!(remote = %self.shared.remote, id = id.0, %reason, "incoming call cancelled");
                self.trace_end(StreamKey::Incoming(id.0), Outcome::Ended(&reason));
                if let Some(s) = self.streams.remove(&StreamKey::Incoming(id.0)) {
                    s.lock().cancel(reason.clone());
                }
                if let Some(h) = self.handlers.remove(&id.0) {
                    h.cancel(reason);
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
            h.cancel(CancelReason::Disconnected);
        }
        for (_, s) in self.streams.drain() {
            s.lock().end(Err(CallError::Shutdown));
        }
        for (_, (_, reply)) in self.calls.drain() {
            let _ = reply.send(Err(CallError::Shutdown));
        }
        self.tickets.clear();
        let now = self.rt.now();
        self.trace
            .end_all(now, ended_by_shutdown, &self.shared, &self.core);
        // The last snapshot: shut down, nothing in flight.
        self.shared.publish_stats(self.core.stats(self.rt.now()));
    }

    /// Hands a finished call's record to the trace hook, if one is set (the
    /// clock is read only then).
    fn trace_end(&mut self, key: StreamKey, outcome: Outcome<'_>) {
        if self.trace.is_on() {
            let now = self.rt.now();
            self.trace.end(key, now, outcome, &self.shared, &self.core);
        }
    }

    /// Runs `work` as the handler of incoming call `id` on a task of its
    /// own, inside `span`; `ctx` cancels it (see [`until_cancelled`]).
    /// Panics are caught inside `work`.
    fn spawn_handler(
        &mut self,
        id: u64,
        span: tracing::Span,
        ctx: HandlerContext,
        work: impl Future<Output = Command> + Send + 'static,
    ) {
        let work = tracing::Instrument::instrument(work, span);
        let work = until_cancelled(ctx.clone(), work);
        self.handlers.insert(id, ctx);
        let shared = Arc::clone(&self.shared);
        let task = work.map(move |done| {
            if let Some(cmd) = done {
                let _ = shared.mailbox.push(cmd);
            }
        });
        self.rt.spawn(task);
    }

    /// The context of a call to the handler registered on `subroute`.
    fn context(
        &self,
        handler: HandlerId,
        subroute: Option<crate::Subroute>,
        deadline: Option<Instant>,
    ) -> HandlerContext {
        HandlerContext::new(Arc::clone(&self.shared.remote), handler, subroute, deadline)
    }

    fn start_single_handler(
        &mut self,
        now: Instant,
        id: IncomingId,
        handler: HandlerId,
        route: Route,
        payload: Option<Bytes>,
        deadline: Option<Instant>,
    ) {
        let Some(entry) = self.mgr.registry.single(route) else {
            self.core.incoming(id).reject_unknown_handler();
            self.trace_end(StreamKey::Incoming(id.0), Outcome::NoHandler);
            return;
        };
        let ctx = self.context(handler, entry.subroute.clone(), deadline);
        let panicked = on_panic(
            Arc::clone(&self.shared.remote),
            handler,
            "handleMessages: panic recovered: ",
        );
        let span = incoming_span(id, handler);
        let mut fut = match isolate::call(|| (entry.handler)(ctx.clone(), payload)) {
            Ok(fut) => fut,
            Err(text) => {
                let result = Err(panicked(text));
                return self.apply(now, Command::Respond { id: id.0, result });
            }
        };
        // The first poll happens here, on the connection task: a handler
        // that answers at once (most single handlers do) answers in this
        // turn, its response goes out with this turn's write, and no task
        // is allocated, spawned or woken for it. Only a handler that waits
        // goes to a task of its own, which polls it again at once (so the
        // throwaway waker of this poll is never relied on).
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let result = match span.in_scope(|| isolate::call(|| fut.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => {
                let panicked = panicked.clone();
                self.spawn_handler(id.0, span, ctx, async move {
                    let result = match isolate::run(fut).await {
                        Ok(r) => r.map_err(|e| e.0),
                        Err(text) => Err(panicked(text)),
                    };
                    Command::Respond { id: id.0, result }
                });
                return;
            }
            Ok(Poll::Ready(r)) => r.map_err(|e| e.0),
            Err(text) => Err(panicked(text)),
        };
        self.apply(now, Command::Respond { id: id.0, result });
    }

    fn start_stream_handler(
        &mut self,
        now: Instant,
        id: IncomingId,
        handler: HandlerId,
        route: Route,
        payload: Option<Bytes>,
        deadline: Option<Instant>,
    ) {
        let Some(entry) = self.mgr.registry.stream(route) else {
            self.core.incoming(id).reject_unknown_handler();
            self.trace_end(StreamKey::Incoming(id.0), Outcome::NoHandler);
            return;
        };
        if !self.core.incoming(id).accept(now, entry.capacities) {
            return;
        }
        let key = StreamKey::Incoming(id.0);
        self.trace
            .name_route(key, entry.subroute.as_ref().and_then(Subroute::shared_name));
        let out_cap = entry.capacities.effective_out() as usize;
        let shared = StreamShared::new(key, Arc::clone(&self.shared), out_cap);
        self.streams.insert(key, Arc::clone(&shared));
        let input = StreamReceiver::new(Arc::clone(&shared));
        let input = (entry.capacities.in_capacity > 0).then_some(input);
        let ctx = self.context(handler, entry.subroute.clone(), deadline);
        let call = StreamCall {
            payload,
            input,
            output: StreamSender::new(Arc::clone(&shared)),
            context: ctx.clone(),
        };
        let panicked = on_panic(Arc::clone(&self.shared.remote), handler, "handler panic: ");
        match isolate::call(|| (entry.handler)(call)) {
            Ok(fut) => {
                self.spawn_handler(id.0, incoming_span(id, handler), ctx, async move {
                    let result = match isolate::run(fut).await {
                        Ok(r) => r.map_err(|e| e.0),
                        Err(text) => Err(panicked(text)),
                    };
                    Command::HandlerDone { id: id.0, result }
                });
            }
            Err(text) => shared.lock().finish = Some(Err(panicked(text))),
        }
        // The core may already hold input for it (EOF-on-connect), or the
        // handler already failed.
        self.sync_stream(key);
    }
}

/// How a call still traced ends when the connection shuts down.
fn ended_by_shutdown(key: StreamKey) -> Outcome<'static> {
    match key {
        StreamKey::Call(_) => Outcome::Failed(&CallError::Shutdown),
        StreamKey::Incoming(_) => Outcome::Ended(&CancelReason::Disconnected),
    }
}

/// What a served call answers when its handler panics: the panic is said
/// once, with the handler's name, where the connection's operator looks,
/// and the caller gets Go's text (`prefix` and the panic's message).
fn on_panic(
    remote: Arc<str>,
    handler: HandlerId,
    prefix: &'static str,
) -> impl Fn(String) -> String + Clone + Send + 'static {
    move |text| {
        error!(%remote, %handler, panic = %text, "handler panicked; the call failed, the connection goes on");
        format!("{prefix}{text}")
    }
}

/// The span of one served call, under the connection's (the handler's
/// first poll and its task run inside it).
fn incoming_span(id: IncomingId, handler: HandlerId) -> tracing::Span {
    tracing::debug_span!("incoming", mux = id.0, %handler)
}
