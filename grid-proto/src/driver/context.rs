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
    signal: Arc<CancelSignal>,
}

impl HandlerContext {
    pub(crate) fn new(
        caller: Arc<str>,
        handler: HandlerId,
        subroute: Option<Subroute>,
        deadline: Option<Instant>,
        signal: Arc<CancelSignal>,
    ) -> HandlerContext {
        HandlerContext {
            inner: Arc::new(Inner {
                caller,
                handler,
                subroute,
                deadline,
                signal,
            }),
        }
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
        Cancelled {
            signal: Arc::clone(&self.inner.signal),
        }
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
    signal: Arc<CancelSignal>,
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled")
            .field("reason", &self.signal.reason())
            .finish()
    }
}

impl Future for Cancelled {
    type Output = CancelReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CancelReason> {
        self.signal.register(cx.waker());
        match self.signal.reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

/// The cancellation of one served call, shared by its context(s) and the
/// connection task.
#[derive(Default)]
pub(crate) struct CancelSignal {
    state: Mutex<SignalState>,
}

#[derive(Default)]
struct SignalState {
    reason: Option<CancelReason>,
    /// The handler's task and every `Cancelled` future waiting (one entry
    /// per distinct waker).
    wakers: Vec<Waker>,
}

impl CancelSignal {
    pub(crate) fn new() -> Arc<CancelSignal> {
        Arc::new(CancelSignal::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancels the call (the first reason stays) and wakes whoever waits.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let wakers = {
            let mut st = self.lock();
            if st.reason.is_some() {
                return;
            }
            st.reason = Some(reason);
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    fn reason(&self) -> Option<CancelReason> {
        self.lock().reason.clone()
    }

    fn register(&self, waker: &Waker) {
        let mut st = self.lock();
        if st.reason.is_none() && !st.wakers.iter().any(|w| w.will_wake(waker)) {
            st.wakers.push(waker.clone());
        }
    }
}

/// Runs a handler's work until it finishes (`Some` of its output) or its
/// call is cancelled (`None`): after the cancellation the work is polled
/// once more, so it can notice, and then dropped; its output is discarded.
pub(crate) async fn until_cancelled<F: Future>(
    signal: Arc<CancelSignal>,
    work: F,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    poll_fn(move |cx| {
        // Register before looking, so a cancellation in between still wakes us.
        signal.register(cx.waker());
        let cancelled = signal.reason().is_some();
        match work.as_mut().poll(cx) {
            Poll::Ready(out) if !cancelled => Poll::Ready(Some(out)),
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending if cancelled => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
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

    fn context(signal: &Arc<CancelSignal>) -> HandlerContext {
        HandlerContext::new(
            Arc::from("http://10.0.0.1:9000"),
            HandlerId::DISK_INFO,
            Some(Subroute::from("/data1")),
            None,
            Arc::clone(signal),
        )
    }

    #[test]
    fn cancelled_resolves_with_the_first_reason() {
        let signal = CancelSignal::new();
        let ctx = context(&signal);
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
    fn cancelled_work_gets_one_more_poll_then_is_dropped() {
        let signal = CancelSignal::new();
        let ctx = context(&signal);
        let noticed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&noticed);
        // A handler that stops when cancelled, and one that never looks.
        let polite = until_cancelled(Arc::clone(&signal), async move {
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

        let signal = CancelSignal::new();
        let deaf = until_cancelled(Arc::clone(&signal), std::future::pending::<()>());
        let mut deaf = std::pin::pin!(deaf);
        assert!(deaf.as_mut().poll(&mut cx).is_pending());
        signal.cancel(CancelReason::Disconnected);
        assert_eq!(deaf.as_mut().poll(&mut cx), Poll::Ready(None));

        let finished = until_cancelled(CancelSignal::new(), async { 7 });
        let mut finished = std::pin::pin!(finished);
        assert_eq!(finished.as_mut().poll(&mut cx), Poll::Ready(Some(7)));
    }
}
