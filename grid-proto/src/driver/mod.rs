//! The runtime-neutral driver: user-facing handles, the handler registry,
//! typed handlers and the per-connection task, written once for every
//! runtime. A driver crate (`grid-tokio`, `grid-smol`) implements
//! [`Runtime`] and re-exports this module.
//!
//! Shape: a [`Manager`] per grid per node owns one task per remote host.
//! The task owns the sans-IO [`crate::Connection`] and the WebSocket; the
//! application talks to it through cheap handles ([`Connection`],
//! [`StreamSender`], [`StreamReceiver`]) that queue commands into a mailbox
//! drained in batches. Handlers run on their own tasks, so a slow handler
//! never blocks the connection.

mod conn;
mod dispatch;
mod isolate;
mod mailbox;
mod manager;
mod minio_auth;
#[cfg(feature = "recorder")]
mod recorder;
mod recording;
mod refusals;
mod registry;
mod runtime;
mod stream;
mod task;
mod typed;

pub use conn::{Connection, RequestFuture, StreamOptions};
pub use manager::{
    AcceptError, AuthFn, ConfigError, DEFAULT_ROUTE, LOCK_ROUTE, MAX_HTTP_CLOCK_SKEW, Manager,
    Options, UpgradeCheck, UpgradeError, ValidateFn, default_capacities, ws_url,
};
pub use minio_auth::MinioAuth;
#[cfg(feature = "recorder")]
pub use recorder::{OpenFn, Recorder, RecordingInfo};
pub use refusals::Refusals;
pub use registry::{RegisterError, RemoteError, StreamCall};
pub use runtime::{BoxFuture, BoxSocket, Runtime, WebSocket};
pub use stream::{StreamReceiver, StreamSender};
pub use tungstenite;
pub use typed::{Mss, TypedError, TypedReceiver, TypedSender, decode, encode};
