//! A multi-producer queue drained in batches by one consumer task.
//!
//! Producers lock only to push; the consumer swaps the whole queue out in
//! one short lock and works on it unlocked, so no lock is ever held across
//! the connection's work, and a busy connection drains many commands per
//! wake-up without allocating per message.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Context;

use futures_util::task::AtomicWaker;

#[derive(Debug)]
pub(crate) struct Mailbox<T> {
    queue: Mutex<Inner<T>>,
    waker: AtomicWaker,
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Mailbox<T> {
    pub(crate) fn new() -> Mailbox<T> {
        Mailbox {
            queue: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
            }),
            waker: AtomicWaker::new(),
        }
    }

    /// Queues an item and wakes the consumer. Returns the item back if the
    /// consumer is gone.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.closed {
                return Err(item);
            }
            q.items.push_back(item);
        }
        self.waker.wake();
        Ok(())
    }

    /// Moves every queued item into `out` (which should be empty; its
    /// buffer is reused). Registers the consumer's waker first, so a push
    /// racing with the drain is never missed.
    pub(crate) fn drain_into(&self, cx: &mut Context<'_>, out: &mut VecDeque<T>) {
        self.waker.register(cx.waker());
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut q.items, out);
    }

    /// Takes what is queued, leaving the mailbox open.
    pub(crate) fn take_all(&self) -> VecDeque<T> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut q.items)
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).closed
    }

    /// Refuses further pushes and returns what was queued.
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.closed = true;
        std::mem::take(&mut q.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    #[test]
    fn drains_in_order_and_refuses_after_close() {
        let m = Mailbox::new();
        m.push(1).unwrap();
        m.push(2).unwrap();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        m.drain_into(&mut cx, &mut out);
        assert_eq!(out, [1, 2]);
        m.push(3).unwrap();
        assert_eq!(m.close(), [3]);
        assert_eq!(m.push(4), Err(4));
    }
}
