//! What a handler knows about the call it serves: [`HandlerContext`], and
//! the cancellation behind it.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::CancelReason;
use crate::handler::HandlerId;
use crate::subroute::Subroute;

/// The call a handler serves: who called, on which subroute, until when,
/// and whether it was cancelled. Cheap to clone.
///
/// Every handler kind gets one: typed handlers as their first argument
/// ([`SingleHandler`](crate::driver::SingleHandler),
/// [`StreamHandler`](crate::driver::StreamHandler)), raw stream handlers
/// in [`StreamCall::context`](crate::driver::StreamCall), raw single
/// handlers through
/// [`Manager::register_single_with_context`](crate::driver::Manager::register_single_with_context).
/// It is Go's `GetCaller` and `GetSubroute`, the call's deadline, and its
/// cancellation.
///
/// Cancellation is cooperative first, then enforced: when the caller
/// cancels, the deadline passes or the connection is lost, the context is
/// cancelled and the handler's task is woken and polled once more, so that
/// a handler waiting on [`cancelled`](Self::cancelled) (say, in a `select`
/// with its work) can stop cleanly. If it is still not done after that
/// poll, its future is dropped. Whatever it returns after the cancellation
/// is discarded: nobody waits for it. Work the handler hands to other
/// tasks or threads can hold a clone of the context and check
/// [`is_cancelled`](Self::is_cancelled).
///
/// ```
/// # fn demo<R: grid_proto::driver::Runtime>(manager: &grid_proto::driver::Manager<R>) {
/// use std::pin::pin;
///
/// use futures_util::future::{Either, select};
/// use grid_proto::HandlerId;
/// use grid_proto::driver::{NoInput, NoPayload, StreamHandler};
///
/// /// Reports progress until the caller has enough.
/// const PROGRESS: StreamHandler<NoPayload, NoInput, u64> = StreamHandler::new(HandlerId::TEST);
///
/// PROGRESS
///     .register(manager, |ctx, NoPayload, mut out| async move {
///         for step in 0..u64::MAX {
///             let sent = pin!(out.send(&step));
///             match select(pin!(ctx.cancelled()), sent).await {
///                 Either::Left((reason, _)) => {
///                     tracing::info!(caller = ctx.caller(), %reason, "stopped at step {step}");
///                     return Ok(());
///                 }
///                 Either::Right((sent, _)) => sent?,
///             }
///         }
///         Ok(())
///     })
///     .unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct HandlerContext {
    inner: Arc<Inner>,
}

struct Inner {
    caller: Arc<str>,
    handler: HandlerId,
    subroute: Option<Subroute>,
    deadline: Option<Instant>,
    /// In the same allocation as the rest: one per served call.
    signal: CancelSignal,
}

impl HandlerContext {
    /// The context of a call not cancelled yet.
    pub(crate) fn new(
        caller: Arc<str>,
        handler: HandlerId,
        subroute: Option<Subroute>,
        deadline: Option<Instant>,
    ) -> HandlerContext {
        HandlerContext {
            inner: Arc::new(Inner {
                caller,
                handler,
                subroute,
                deadline,
                signal: CancelSignal::default(),
            }),
        }
    }

    /// Cancels the call (the first reason stays) and wakes whoever waits
    /// for it.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        self.inner.signal.cancel(reason);
    }

    /// The calling node's host string (Go: `GetCaller`).
    pub fn caller(&self) -> &str {
        &self.inner.caller
    }

    /// The handler called.
    pub fn handler(&self) -> HandlerId {
        self.inner.handler
    }

    /// The subroute the handler was registered on (Go: `GetSubroute`): the
    /// route string when it was registered by one, the wire id when it was
    /// registered by that; `None` without a subroute.
    pub fn subroute(&self) -> Option<&Subroute> {
        self.inner.subroute.as_ref()
    }

    /// When the caller gives up (its `DeadlineMS`); the context is
    /// cancelled then.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Whether the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.signal.reason().is_some()
    }

    /// Why the call was cancelled, once it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.inner.signal.reason()
    }

    /// Resolves when the call is cancelled (by the caller, its deadline or
    /// the connection's loss), with the reason.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled { ctx: self.clone() }
    }
}

impl fmt::Debug for HandlerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerContext")
            .field("caller", &self.inner.caller)
            .field("handler", &self.inner.handler)
            .field("subroute", &self.inner.subroute)
            .field("deadline", &self.inner.deadline)
            .field("cancelled", &self.cancel_reason())
            .finish()
    }
}

/// The future of [`HandlerContext::cancelled`].
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled {
    ctx: HandlerContext,
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled")
            .field("reason", &self.ctx.cancel_reason())
            .finish()
    }
}

impl Future for Cancelled {
    type Output = CancelReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CancelReason> {
        let signal = &self.ctx.inner.signal;
        signal.register(cx.waker());
        match signal.reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

/// The cancellation of one served call, inside its context (which the
/// connection task keeps a clone of).
#[derive(Default)]
struct CancelSignal {
    state: Mutex<SignalState>,
}

#[derive(Default)]
struct SignalState {
    reason: Option<CancelReason>,
    /// The first waiter, usually the handler's task: kept here rather than
    /// in `more`, so a call that only ever has one costs no allocation.
    first: Option<Waker>,
    /// Every other `Cancelled` future waiting (one entry per distinct
    /// waker).
    more: Vec<Waker>,
}

impl CancelSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancels the call (the first reason stays) and wakes whoever waits.
    fn cancel(&self, reason: CancelReason) {
        let wakers = {
            let mut st = self.lock();
            if st.reason.is_some() {
                return;
            }
            st.reason = Some(reason);
            (st.first.take(), std::mem::take(&mut st.more))
        };
        for w in wakers.0.into_iter().chain(wakers.1) {
            w.wake();
        }
    }

    fn reason(&self) -> Option<CancelReason> {
        self.lock().reason.clone()
    }

    fn register(&self, waker: &Waker) {
        let mut st = self.lock();
        if st.reason.is_some() {
            return;
        }
        let known = |w: &Waker| w.will_wake(waker);
        match &st.first {
            None => st.first = Some(waker.clone()),
            Some(w) if known(w) => {}
            Some(_) if st.more.iter().any(known) => {}
            Some(_) => st.more.push(waker.clone()),
        }
    }
}

/// Runs a handler's work until it finishes (`Some` of its output) or its
/// call is cancelled (`None`): after the cancellation the work is polled
/// once more, so it can notice, and then dropped; its output is discarded.
pub(crate) async fn until_cancelled<F: Future>(ctx: HandlerContext, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    poll_fn(move |cx| {
        let signal = &ctx.inner.signal;
        let cancelled = signal.reason().is_some();
        match work.as_mut().poll(cx) {
            Poll::Ready(out) if !cancelled => Poll::Ready(Some(out)),
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending if cancelled => Poll::Ready(None),
            Poll::Pending => {
                // Only work that waits registers (a handler that answers at
                // once never touches the signal's lock). A cancellation that
                // came after the look above is seen here and polls again.
                signal.register(cx.waker());
                if signal.reason().is_some() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn context() -> HandlerContext {
        HandlerContext::new(
            Arc::from("http://10.0.0.1:9000"),
            HandlerId::DISK_INFO,
            Some(Subroute::from("/data1")),
            None,
        )
    }

    #[test]
    fn cancelled_resolves_with_the_first_reason() {
        let ctx = context();
        let signal = ctx.clone();
        assert_eq!(ctx.caller(), "http://10.0.0.1:9000");
        assert_eq!(ctx.subroute().and_then(Subroute::name), Some("/data1"));
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(ctx.cancelled());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(!ctx.is_cancelled());
        signal.cancel(CancelReason::CallerCancelled);
        signal.cancel(CancelReason::Disconnected);
        // One waker registered twice is woken once.
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            fut.as_mut().poll(&mut cx),
            Poll::Ready(CancelReason::CallerCancelled)
        );
        assert_eq!(ctx.cancel_reason(), Some(CancelReason::CallerCancelled));
    }

    #[test]
    fn every_distinct_waiter_is_woken_once() {
        let ctx = context();
        let signal = ctx.clone();
        let counters: Vec<_> = (0..3)
            .map(|_| Arc::new(CountWakes(AtomicUsize::new(0))))
            .collect();
        let mut waiters: Vec<_> = (0..3).map(|_| Box::pin(ctx.cancelled())).collect();
        // Three waiters with their own wakers (the first one twice over).
        for (fut, count) in waiters.iter_mut().zip(&counters) {
            let waker = Waker::from(Arc::clone(count));
            let mut cx = Context::from_waker(&waker);
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        let waker = Waker::from(Arc::clone(&counters[0]));
        assert!(
            waiters[0]
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        signal.cancel(CancelReason::Disconnected);
        let woken: Vec<usize> = counters
            .iter()
            .map(|c| c.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [1, 1, 1]);
    }

    #[test]
    fn work_cancelled_between_its_look_and_its_wait_is_polled_again() {
        // The work cancels its own call while it runs, as a cancellation
        // arriving from another thread between the check and the register
        // would: the task must be woken to take its last poll.
        let signal = context();
        let inside = signal.clone();
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let work = until_cancelled(
            signal.clone(),
            std::future::poll_fn(move |_| {
                inside.cancel(CancelReason::CallerCancelled);
                Poll::<()>::Pending
            }),
        );
        let mut work = std::pin::pin!(work);
        assert!(work.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(work.as_mut().poll(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn cancelled_work_gets_one_more_poll_then_is_dropped() {
        let ctx = context();
        let signal = ctx.clone();
        let noticed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&noticed);
        // A handler that stops when cancelled, and one that never looks.
        let polite = until_cancelled(signal.clone(), async move {
            let reason = ctx.cancelled().await;
            seen.store(true, Ordering::SeqCst);
            reason
        });
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut polite = std::pin::pin!(polite);
        assert!(polite.as_mut().poll(&mut cx).is_pending());
        signal.cancel(CancelReason::DeadlineExceeded);
        // It ran to its end in the extra poll; the output is discarded.
        assert_eq!(polite.as_mut().poll(&mut cx), Poll::Ready(None));
        assert!(noticed.load(Ordering::SeqCst));

        let signal = context();
        let deaf = until_cancelled(signal.clone(), std::future::pending::<()>());
        let mut deaf = std::pin::pin!(deaf);
        assert!(deaf.as_mut().poll(&mut cx).is_pending());
        signal.cancel(CancelReason::Disconnected);
        assert_eq!(deaf.as_mut().poll(&mut cx), Poll::Ready(None));

        let finished = until_cancelled(context(), async { 7 });
        let mut finished = std::pin::pin!(finished);
        assert_eq!(finished.as_mut().poll(&mut cx), Poll::Ready(Some(7)));
    }
}
