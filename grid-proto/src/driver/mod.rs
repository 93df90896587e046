//! The runtime-neutral driver: user-facing handles, the handler registry,
//! typed handlers and the per-connection task, written once for every
//! runtime. A driver crate (`grid-tokio`, `grid-smol`) implements
//! [`Runtime`] and re-exports this module.
//!
//! Shape: a [`Manager`] per grid per node owns one task per remote host.
//! The task owns the sans-IO [`crate::Connection`] and the WebSocket; the
//! application talks to it through cheap handles ([`Connection`],
//! [`StreamSender`], [`StreamReceiver`]) that queue commands into a mailbox
//! drained in batches. A single handler's future is first polled on the
//! connection task, so one that answers at once costs no task switch; a
//! handler that waits (and every stream handler) runs on its own task, so
//! a slow handler never holds up the connection. As anywhere in async
//! code, do not block a thread in a handler: move blocking work to a
//! blocking pool.
//!
//! Handlers come raw (`Bytes` in, `Bytes` out: [`Manager::register_single`],
//! [`Manager::register_stream`]) or typed, through descriptors that bind an
//! id to its types once ([`SingleHandler`], [`StreamHandler`], with values
//! that are [`GridMessage`]s such as serde types or [`NoPayload`]). Every
//! handler can see its call's [`HandlerContext`]: the caller, the
//! subroute, the deadline and the cancellation.
//!
//! Where things live, layer by layer (a file imports only from the layers
//! below it): `options` and `error` (what a manager is built from and fails
//! with); `registry` (the handler tables, one way in) and `register` (every
//! `Manager::register_*`); `conn_shared` (the command mailbox and the
//! connection's and streams' shared state); `conn` and `stream` (the
//! handles on top of it); `manager_shared` (what the tasks share with their
//! manager); `task` and `dispatch` (the connection task); `manager` (build,
//! start, accept, stop). A runtime that also dials TLS hosts is a
//! [`TlsRuntime`], whatever the runtime.

mod conn;
mod conn_shared;
mod context;
mod descriptor;
mod dispatch;
mod error;
pub mod example;
mod http_upgrade;
mod isolate;
mod mailbox;
mod manager;
mod manager_shared;
mod message;
mod minio_auth;
mod options;
mod recorder;
mod recv_buffer;
mod refusals;
mod register;
mod registry;
mod runtime;
mod send_error;
mod stream;
mod task;
mod tls_runtime;
mod trace;
mod typed;

pub use crate::upgrade::{DEFAULT_ROUTE, LOCK_ROUTE, MAX_HTTP_CLOCK_SKEW, UpgradeError, ws_url};
pub use conn::{Connection, RequestFuture, StreamOptions};
pub use context::{Cancelled, HandlerContext};
pub use descriptor::{SingleHandler, StreamHandler};
pub use error::{AcceptError, ConfigError};
pub use http_upgrade::{HttpUpgradeError, switching_protocols};
pub use manager::{Manager, UpgradeCheck};
pub use message::{CodecError, GridMessage, Mss, NoInput, NoPayload, decode, encode};
pub use minio_auth::MinioAuth;
pub use options::{AuthFn, Options, ValidateFn};
#[cfg(feature = "recorder")]
pub use recorder::{OpenFn, Recorder, RecordingInfo};
pub use refusals::Refusals;
pub use registry::{RegisterError, RemoteError, StreamCall};
pub use runtime::{BoxFuture, BoxSocket, Runtime, WebSocket};
pub use send_error::StreamSendError;
pub use stream::{StreamReceiver, StreamSender};
pub use tls_runtime::{TlsDialer, TlsRuntime};
pub use trace::{
    CallKind, CallTrace, Direction, TraceError, TraceFn, TraceRoute, Transfer, handler_family,
};
pub use tungstenite;
pub use typed::{TypedError, TypedReceiver, TypedSender};
