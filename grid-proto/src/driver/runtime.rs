//! What a driver crate provides: a clock, a spawner, a timer and a way to
//! dial a WebSocket. Everything else is written once, in this module.

use std::future::Future;
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use futures_util::{Sink, Stream};
use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An established WebSocket: a stream of received messages and a sink of
/// messages to send (what tokio-tungstenite and async-tungstenite give).
pub trait WebSocket:
    Stream<Item = Result<tungstenite::Message, tungstenite::Error>>
    + Sink<tungstenite::Message, Error = tungstenite::Error>
    + Send
    + Unpin
    + 'static
{
}

impl<T> WebSocket for T where
    T: Stream<Item = Result<tungstenite::Message, tungstenite::Error>>
        + Sink<tungstenite::Message, Error = tungstenite::Error>
        + Send
        + Unpin
        + 'static
{
}

/// A WebSocket of any concrete type: what drivers use as
/// [`Runtime::Socket`], so dialed, accepted and user-upgraded sockets (e.g.
/// from a hyper or axum server) are all the same type.
pub type BoxSocket = std::pin::Pin<Box<dyn WebSocket>>;

/// The runtime a [`crate::driver::Manager`] runs on.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The WebSocket type this runtime dials and accepts.
    type Socket: WebSocket;
    /// A timer future.
    type Sleep: Future<Output = ()> + Send + 'static;

    /// The monotonic clock (the runtime's own, so paused test clocks work).
    fn now(&self) -> Instant;

    /// The wall clock.
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Runs a task in the background. Generic, not boxed: the runtime's own
    /// task allocation is the only one per spawned handler.
    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// A future that completes at `at`.
    fn sleep_until(&self, at: Instant) -> Self::Sleep;

    /// Opens a TCP (or TLS) connection to the request's host and performs
    /// the WebSocket upgrade with the request's headers.
    fn dial(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> BoxFuture<Result<Self::Socket, tungstenite::Error>>;
}
