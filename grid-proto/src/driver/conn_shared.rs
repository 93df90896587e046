//! What a connection task shares with its handles: the command mailbox
//! the handles write to ([`Command`]), the connection's state they read
//! ([`ConnShared`]) and each stream's state ([`StreamShared`]), which the
//! stream's two halves and the task both lock.
//!
//! The task is the only reader of the mailbox; handles and handler tasks
//! only push. A stream's halves poke the task through the same mailbox
//! when they change their stream's state.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::capacities::Capacities;
use crate::driver::mailbox::Mailbox;
use crate::driver::runtime::BoxFuture;
use crate::driver::send_error::StreamSendError;
use crate::error::{CallError, CancelReason};
use crate::handler::HandlerId;
use crate::redial::DialFailure;
use crate::state::State;
use crate::stats::Stats;
use crate::subroute::SubrouteId;

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

    /// The last published stats.
    pub(crate) fn stats(&self) -> Option<Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the latest attempt to connect failed, until connected.
    pub(crate) fn dial_failure(&self) -> Option<DialFailure> {
        self.dial_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether calls are in flight either way, as of the task's last turn.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Graceful shutdown, step one: new calls are refused from now on.
    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// A ticket for a new request (the key it is cancelled by).
    pub(crate) fn next_ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// Wakes `waker` on the next state change.
    pub(crate) fn wake_on_state_change(&self, waker: &Waker) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker.clone());
    }

    /// Why a new call is refused right now, if it is.
    pub(crate) fn refuse(&self) -> Option<CallError> {
        match self.state() {
            State::Connected if !self.closing.load(Ordering::Acquire) => None,
            State::Shutdown => Some(CallError::Shutdown),
            State::Connected => Some(CallError::Shutdown),
            _ => Some(CallError::NotConnected),
        }
    }
}

/// Which table of the connection a stream lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StreamKey {
    /// A stream this side called (a [`crate::CallId`]).
    Call(u64),
    /// A stream this side serves (an [`crate::IncomingId`]).
    Incoming(u64),
}

#[derive(Debug)]
pub(crate) struct StreamShared {
    pub(crate) key: StreamKey,
    conn: Arc<ConnShared>,
    state: Mutex<StreamState>,
}

#[derive(Debug, Default)]
pub(crate) struct StreamState {
    // application -> task
    /// Messages waiting for credit.
    pub(crate) outq: VecDeque<Bytes>,
    /// How many messages the sender may queue (the window, at least 1);
    /// 0 when this direction does not exist.
    pub(crate) out_cap: usize,
    /// The sender asked to end its direction (caller EOF).
    pub(crate) close_requested: bool,
    /// The handler returned (incoming streams): its result, sent after `outq`.
    pub(crate) finish: Option<Result<(), String>>,
    /// Messages the receiver consumed that the task has not credited yet.
    pub(crate) consumed: u32,
    /// Both halves are gone.
    pub(crate) abandoned: bool,
    /// A poke is queued for the task already.
    poked: bool,
    send_waker: Option<Waker>,
    /// Why sending is impossible now (stream ended / direction closed).
    pub(crate) send_error: Option<StreamSendError>,

    // task -> application
    pub(crate) inbox: VecDeque<Bytes>,
    /// The receive direction ended: `Ok` at EOF, or the stream's error.
    pub(crate) end: Option<Result<(), CallError>>,
    recv_waker: Option<Waker>,
    halves: u8,
}

impl StreamShared {
    pub(crate) fn new(key: StreamKey, conn: Arc<ConnShared>, out_cap: usize) -> Arc<StreamShared> {
        Arc::new(StreamShared {
            key,
            conn,
            state: Mutex::new(StreamState {
                out_cap,
                halves: 2,
                send_error: (out_cap == 0).then_some(StreamSendError::NoInput),
                ..StreamState::default()
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the task to look at this stream (at most one pending poke).
    pub(crate) fn poke(&self, st: &mut StreamState) {
        if !st.poked {
            st.poked = true;
            // If the task is gone the stream is over anyway.
            let _ = self.conn.mailbox.push(Command::Poke(self.key));
        }
    }
}

impl StreamState {
    /// Wakes the sender when there is room again (or the stream ended).
    pub(crate) fn park_sender(&mut self, waker: &Waker) {
        park(&mut self.send_waker, waker);
    }

    /// Wakes the receiver when a message arrives (or the stream ended).
    pub(crate) fn park_receiver(&mut self, waker: &Waker) {
        park(&mut self.recv_waker, waker);
    }

    /// One half of the stream is gone; with both gone the stream is
    /// abandoned.
    pub(crate) fn release_half(&mut self) {
        self.halves = self.halves.saturating_sub(1);
        if self.halves == 0 {
            self.abandoned = true;
        }
    }

    /// The task took the poke.
    pub(crate) fn clear_poke(&mut self) {
        self.poked = false;
    }

    pub(crate) fn wake_sender(&mut self) {
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn wake_receiver(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
    }

    /// Ends the stream for both halves (task side).
    pub(crate) fn end(&mut self, result: Result<(), CallError>) {
        if self.send_error.is_none() {
            self.send_error = Some(match &result {
                Ok(()) => StreamSendError::Ended,
                Err(e) => StreamSendError::Failed(e.clone()),
            });
        }
        if self.end.is_none() {
            self.end = Some(result);
        }
        self.outq.clear();
        self.wake_receiver();
        self.wake_sender();
    }

    /// Ends a served stream that was cancelled from outside its handler.
    pub(crate) fn cancel(&mut self, reason: CancelReason) {
        if self.send_error.is_none() {
            self.send_error = Some(StreamSendError::Cancelled(reason));
        }
        self.end(Err(CallError::Disconnected));
    }
}

/// Keeps `waker` in `slot`, cloning it only if it is not already there (a
/// busy stream parks the same task again and again).
fn park(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}
