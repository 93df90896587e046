//! User code runs inside the connection's machinery: handler closures and
//! the futures they return, the token hooks, the recorder's sink. A panic
//! in any of it must cost only the call (or the attempt, or the recording)
//! that ran it, never the connection task and every other call with it.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use futures_util::FutureExt;

/// Runs `f`, turning a panic into its message.
///
/// `AssertUnwindSafe`: whatever `f` touched is either owned by `f` or
/// state the caller discards (or treats as failed) when `f` panics.
pub(crate) fn call<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_text(&*p))
}

/// Polls `fut` to completion, turning a panic in any poll into its message.
pub(crate) async fn run<F: Future>(fut: F) -> Result<F::Output, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| panic_text(&*p))
}

/// The message a panic was raised with (`panic!("...")` carries a `&str`
/// or a `String`; anything else has no text to show).
pub(crate) fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(call(|| 7), Ok(7));
        assert_eq!(call(|| -> u8 { panic!("boom") }), Err("boom".to_owned()));
        let n = 3;
        assert_eq!(
            call(|| -> u8 { panic!("boom {n}") }),
            Err("boom 3".to_owned())
        );
        assert_eq!(
            call(|| std::panic::panic_any(42u8)),
            Err("unknown panic".to_owned())
        );
        let fut = run(async { panic!("later") });
        assert_eq!(block_on(fut), Err::<(), _>("later".to_owned()));
    }

    /// A minimal executor for a future that never waits.
    fn block_on<F: Future>(fut: F) -> F::Output {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => unreachable!("the test future never waits"),
        }
    }
}
