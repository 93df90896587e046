//! Stream halves: what the application holds of a stream, on either side.
//!
//! A caller gets a [`StreamSender`] and a [`StreamReceiver`] from
//! [`crate::driver::Connection::open_stream`]; a stream handler gets the same
//! two types for its output and input. Both talk to the connection task
//! through one small shared state per stream: the sender queues at most a
//! window of messages (the task moves them onto the wire as credit allows,
//! so a slow peer blocks the sender: real backpressure), and the receiver
//! takes delivered messages and reports how many it consumed (the task turns
//! that into credit for the peer).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};

use crate::driver::conn_shared::{StreamKey, StreamShared, StreamState};
use crate::driver::send_error::StreamSendError;
use crate::error::CallError;

/// The sending half of a stream. Also a [`Sink`] of messages: `poll_ready`
/// waits for room, `poll_flush` until every queued message is on the
/// wire, `poll_close` ends this direction.
#[derive(Debug)]
pub struct StreamSender {
    shared: Arc<StreamShared>,
    closed: bool,
    /// The span of the call this half belongs to (a stream this side
    /// opened); the span closes when both halves are gone.
    _span: tracing::Span,
}

impl StreamSender {
    pub(crate) fn new(shared: Arc<StreamShared>) -> StreamSender {
        StreamSender {
            shared,
            closed: false,
            _span: tracing::Span::none(),
        }
    }

    /// This half, keeping the call's span open while it lives.
    pub(crate) fn in_span(mut self, span: tracing::Span) -> StreamSender {
        self._span = span;
        self
    }

    /// Sends one message, waiting while the peer has no room for it.
    /// `Ok` means queued: the message is sent as soon as the peer has room
    /// (a failure after that shows on the next send and on the receiver).
    pub async fn send(&mut self, payload: Bytes) -> Result<(), StreamSendError> {
        // Room and queueing under one lock: the common case (room at
        // once) takes the stream's lock once per message, not twice.
        let mut payload = Some(payload);
        poll_fn(|cx| self.poll_send(cx, &mut payload)).await
    }

    /// Ready once a message can be queued (or never will be).
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamSendError>> {
        self.poll_send(cx, &mut None)
    }

    /// Ready once a message can be queued (or never will be); then queues
    /// `payload`, if any, under the same lock.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        payload: &mut Option<Bytes>,
    ) -> Poll<Result<(), StreamSendError>> {
        let mut st = self.shared.lock();
        if let Err(e) = self.can_send(&st) {
            return Poll::Ready(Err(e));
        }
        if st.outq.len() >= st.out_cap {
            st.park_sender(cx.waker());
            return Poll::Pending;
        }
        if let Some(p) = payload.take() {
            st.outq.push_back(p);
            self.shared.poke(&mut st);
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a message (room was checked; only this half fills the queue).
    fn queue(&mut self, payload: Bytes) -> Result<(), StreamSendError> {
        let mut st = self.shared.lock();
        self.can_send(&st)?;
        st.outq.push_back(payload);
        self.shared.poke(&mut st);
        Ok(())
    }

    /// Whether this sender may still send, room aside. This side's own
    /// close comes first: whatever happened to the stream since, this
    /// sender stopped sending.
    fn can_send(&self, st: &StreamState) -> Result<(), StreamSendError> {
        if self.closed || st.close_requested {
            return Err(StreamSendError::Closed);
        }
        match &st.send_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Whether a message could be queued right now without waiting.
    pub fn has_room(&self) -> bool {
        let st = self.shared.lock();
        st.send_error.is_none() && st.outq.len() < st.out_cap
    }

    /// Ends this direction (EOF) after the queued messages. Dropping the
    /// sender does the same.
    pub fn close(mut self) {
        self.close_inner();
    }

    fn close_inner(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let mut st = self.shared.lock();
        if matches!(self.shared.key, StreamKey::Call(_)) && st.out_cap > 0 {
            st.close_requested = true;
        }
        st.release_half();
        self.shared.poke(&mut st);
    }
}

impl Drop for StreamSender {
    fn drop(&mut self) {
        self.close_inner();
    }
}

impl Sink<Bytes> for StreamSender {
    type Error = StreamSendError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_room(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        self.queue(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut st = self.shared.lock();
        if st.outq.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.send_error {
            return Poll::Ready(Err(e.clone()));
        }
        // The task wakes the sender whenever it moves queued messages.
        st.park_sender(cx.waker());
        Poll::Pending
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.close_inner();
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The receiving half of a stream: a [`Stream`] of messages that ends after
/// the peer's EOF, or with one error item if the stream failed.
#[derive(Debug)]
pub struct StreamReceiver {
    shared: Arc<StreamShared>,
    done: bool,
    /// The span of the call (see [`StreamSender`]); records how the
    /// stream failed, if it did.
    span: tracing::Span,
}

impl StreamReceiver {
    pub(crate) fn new(shared: Arc<StreamShared>) -> StreamReceiver {
        StreamReceiver {
            shared,
            done: false,
            span: tracing::Span::none(),
        }
    }

    /// This half, keeping the call's span open while it lives.
    pub(crate) fn in_span(mut self, span: tracing::Span) -> StreamReceiver {
        self.span = span;
        self
    }

    /// The next message; `None` after the end.
    pub async fn recv(&mut self) -> Option<Result<Bytes, CallError>> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Waits until at least `n` delivered messages wait to be taken, or no
    /// more will come (the peer ended its side, or the stream failed), and
    /// returns how many wait. Takes none of them: a message counts as
    /// consumed, and the peer gets its credit back, only when
    /// [`recv`](Self::recv) takes it. So an application that must grant
    /// credit exactly when another node did (a replay of a capture) can
    /// still see what has arrived.
    pub async fn wait_pending(&mut self, n: usize) -> usize {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if self.done || st.inbox.len() >= n || st.end.is_some() {
                return Poll::Ready(st.inbox.len());
            }
            st.park_receiver(cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl Stream for StreamReceiver {
    type Item = Result<Bytes, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        if let Some(msg) = st.inbox.pop_front() {
            st.consumed += 1;
            shared.poke(&mut st);
            return Poll::Ready(Some(Ok(msg)));
        }
        match st.end.clone() {
            Some(Ok(())) => {
                drop(st);
                self.done = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                drop(st);
                self.done = true;
                self.span.record("error", tracing::field::display(&e));
                Poll::Ready(Some(Err(e)))
            }
            None => {
                st.park_receiver(cx.waker());
                Poll::Pending
            }
        }
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.release_half();
        self.shared.poke(&mut st);
    }
}
