//! Typed stream halves and the error of typed calls: [`TypedSender`] and
//! [`TypedReceiver`] carry [`GridMessage`] values over a stream; the
//! handler descriptors that hand them out are in `descriptor.rs`
//! ([`SingleHandler`](crate::driver::SingleHandler),
//! [`StreamHandler`](crate::driver::StreamHandler)).

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};

use crate::driver::message::GridMessage;
use crate::driver::send_error::StreamSendError;
use crate::driver::stream::{StreamReceiver, StreamSender};
use crate::error::CallError;

/// Why a typed call, or a typed stream message, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypedError {
    /// The call itself failed, locally or remotely (a remote handler's
    /// error is [`CallError::Remote`], with a remote decode error's text).
    Call(CallError),
    /// The request (or message) could not be encoded; nothing was sent.
    Encode(String),
    /// The response (or message) could not be decoded.
    Decode(String),
    /// A stream message could not be sent; the error says why.
    Send(StreamSendError),
}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedError::Call(e) => e.fmt(f),
            TypedError::Encode(e) => write!(f, "encoding the request: {e}"),
            TypedError::Decode(e) => write!(f, "decoding the response: {e}"),
            TypedError::Send(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TypedError {}

impl From<CallError> for TypedError {
    fn from(e: CallError) -> Self {
        TypedError::Call(e)
    }
}

impl From<StreamSendError> for TypedError {
    fn from(e: StreamSendError) -> Self {
        TypedError::Send(e)
    }
}

/// A [`StreamSender`] of `T` values; also a [`Sink`] of them.
#[derive(Debug)]
pub struct TypedSender<T> {
    inner: StreamSender,
    _type: PhantomData<fn(T)>,
}

impl<T: GridMessage> TypedSender<T> {
    /// Wraps a raw sender.
    pub fn new(inner: StreamSender) -> Self {
        TypedSender {
            inner,
            _type: PhantomData,
        }
    }

    /// Encodes and sends one message, waiting for room.
    pub async fn send(&mut self, value: &T) -> Result<(), TypedError> {
        let bytes = value.encode().map_err(|e| TypedError::Encode(e.0))?;
        Ok(self.inner.send(bytes).await?)
    }

    /// Ends this direction.
    pub fn close(self) {
        self.inner.close();
    }

    /// The raw sender.
    pub fn into_inner(self) -> StreamSender {
        self.inner
    }
}

impl<T: GridMessage> Sink<T> for TypedSender<T> {
    type Error = TypedError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TypedError>> {
        Pin::new(&mut self.inner)
            .poll_ready(cx)
            .map_err(TypedError::Send)
    }

    fn start_send(mut self: Pin<&mut Self>, item: T) -> Result<(), TypedError> {
        let bytes = item.encode().map_err(|e| TypedError::Encode(e.0))?;
        Pin::new(&mut self.inner)
            .start_send(bytes)
            .map_err(TypedError::Send)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TypedError>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(TypedError::Send)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TypedError>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(TypedError::Send)
    }
}

/// A [`StreamReceiver`] of `T` values; also a [`Stream`] of them, which
/// ends after the peer's end, or with one error item if the stream failed.
#[derive(Debug)]
pub struct TypedReceiver<T> {
    inner: StreamReceiver,
    _type: PhantomData<fn() -> T>,
}

impl<T: GridMessage> TypedReceiver<T> {
    /// Wraps a raw receiver.
    pub fn new(inner: StreamReceiver) -> Self {
        TypedReceiver {
            inner,
            _type: PhantomData,
        }
    }

    /// The next decoded message; `None` after the end.
    pub async fn recv(&mut self) -> Option<Result<T, TypedError>> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The raw receiver.
    pub fn into_inner(self) -> StreamReceiver {
        self.inner
    }
}

impl<T: GridMessage> Stream for TypedReceiver<T> {
    type Item = Result<T, TypedError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|item| match item {
                Ok(bytes) => T::decode(&bytes).map_err(|e| TypedError::Decode(e.0)),
                Err(e) => Err(TypedError::Call(e)),
            })
        })
    }
}
