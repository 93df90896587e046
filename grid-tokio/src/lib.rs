//! `grid` on tokio: fast, multiplexed server-to-server RPC over one
//! WebSocket per pair of servers, wire-compatible with MinIO's Go grid.
//!
//! This crate only plugs tokio and tokio-tungstenite into the
//! runtime-neutral driver of [`grid_proto::driver`]; the API is the same as
//! `grid-smol`'s.
//!
//! ```no_run
//! use bytes::Bytes;
//! use grid_tokio::{HandlerId, Manager, Options, RemoteError};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hosts = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
//! let manager = Manager::new(grid_tokio::Tokio, hosts[0], &hosts, Options::default())?;
//! manager.register_single(HandlerId(78), |payload: Bytes| async move {
//!     Ok::<_, RemoteError>(payload)
//! })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! tokio::spawn(grid_tokio::serve(manager.clone(), listener));
//! manager.start();
//!
//! let peer = manager.connection(hosts[1]).expect("a known host");
//! peer.wait_for_connect(std::time::Duration::from_secs(5)).await?;
//! let answer = peer.request(HandlerId(78), Bytes::from_static(b"ping")).await?;
//! assert_eq!(answer, "ping");
//! # Ok(())
//! # }
//! ```

use std::io;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

// The whole user-facing API of the runtime-neutral driver (handles,
// registry, typed calls, MinIO token helper, recorder with its feature),
// and the core types it speaks in. `Manager` below shadows the generic one.
pub use grid_proto::driver::*;
pub use grid_proto::{
    self as proto, Backoff, CallError, CancelReason, Capacities, CapacityTable, DisconnectReason,
    HandlerId, InstanceId, SendError, Settings, State, Stats, StatsTotal, Subroute, SubrouteId,
};

#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "turmoil")]
pub mod turmoil;

/// The tokio runtime, for [`grid_proto::driver::Manager`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A grid manager running on tokio: one per grid per node, owning a
/// connection to every other host. Its methods are those of
/// [`grid_proto::driver::Manager`] (listed below too): `new`, the
/// `register_*` handler registrations, `start`, `connection`, `stats`,
/// `accept` and `shutdown`. Another runtime (for example the `tls`
/// feature's) is named as `Manager<ThatRuntime>`.
pub type Manager<R = Tokio> = grid_proto::driver::Manager<R>;

impl Runtime for Tokio {
    type Socket = BoxSocket;
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(task);
    }

    fn sleep_until(&self, at: Instant) -> Self::Sleep {
        tokio::time::sleep_until(at.into())
    }

    fn dial(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
        Box::pin(async move {
            let (ws, _response) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
            Ok(Box::pin(ws) as BoxSocket)
        })
    }
}

/// Accepts grid connections on `listener` until it fails; each connection
/// is upgraded and handed to the manager on its own task.
pub async fn serve<R: Runtime<Socket = BoxSocket>>(
    manager: grid_proto::driver::Manager<R>,
    listener: TcpListener,
) -> io::Result<()> {
    loop {
        let (tcp, addr) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let manager = manager.clone();
        tokio::spawn(async move {
            if let Err(e) = accept_stream(&manager, tcp).await {
                tracing::debug!(%addr, error = %e, "incoming grid connection refused");
            }
        });
    }
}

/// Upgrades an accepted byte stream (plain TCP, or TLS you terminated) to
/// a grid WebSocket, checking the route, token and clock headers first, and
/// hands it to the manager. An upgrade not done within
/// `Options::connection.handshake_timeout` fails with [`AcceptError::Timeout`] (and
/// the stream is closed).
pub async fn accept_stream<R, S>(
    manager: &grid_proto::driver::Manager<R>,
    stream: S,
) -> Result<(), AcceptError>
where
    R: Runtime<Socket = BoxSocket>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        manager.upgrade_check(),
        Some(manager.websocket_config()),
    );
    let ws = tokio::time::timeout(manager.options().connection.handshake_timeout, upgrade)
        .await
        .map_err(|_| AcceptError::Timeout)?
        .map_err(|e| AcceptError::Transport(e.to_string()))?;
    manager.accept(Box::pin(ws)).await
}

/// Takes a connection your own HTTP server (axum, hyper...) has already
/// upgraded, after answering with [`Manager::upgrade_response`]: the raw
/// byte stream becomes a grid WebSocket (with
/// [`Manager::websocket_config`]) and goes to the manager, which reads the
/// peer's `Connect` as [`Manager::accept`] does. See `examples/axum.rs`.
pub async fn accept_upgraded<R, S>(
    manager: &grid_proto::driver::Manager<R>,
    stream: S,
) -> Result<(), AcceptError>
where
    R: Runtime<Socket = BoxSocket>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tungstenite::protocol::Role::Server,
        Some(manager.websocket_config()),
    )
    .await;
    manager.accept(Box::pin(ws)).await
}
