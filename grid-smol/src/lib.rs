//! `grid` on smol: fast, multiplexed server-to-server RPC over one
//! WebSocket per pair of servers, wire-compatible with MinIO's Go grid.
//!
//! This crate only plugs smol's pieces (async-io timers, async-net sockets,
//! an async-executor executor) and async-tungstenite into the
//! runtime-neutral driver of [`grid_proto::driver`]; the API is the same as
//! `grid-tokio`'s.
//!
//! ```no_run
//! use bytes::Bytes;
//! use grid_smol::{HandlerId, Manager, Options, RemoteError};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async_io::block_on(async {
//!     let hosts = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"];
//!     let manager = Manager::new(grid_smol::Smol, hosts[0], &hosts, Options::default())?;
//!     manager.register_single(HandlerId(78), |payload: Bytes| async move {
//!         Ok::<_, RemoteError>(payload)
//!     })?;
//!     let listener = async_net::TcpListener::bind("127.0.0.1:9001").await?;
//!     grid_smol::spawn(grid_smol::serve(manager.clone(), listener)).detach();
//!     manager.start();
//!
//!     let peer = manager.connection(hosts[1]).expect("a known host");
//!     peer.wait_for_connect(std::time::Duration::from_secs(5)).await?;
//!     let answer = peer.request(HandlerId(78), Bytes::from_static(b"ping")).await?;
//!     assert_eq!(answer, "ping");
//!     Ok(())
//! })
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use futures_lite::{AsyncRead, AsyncWrite};
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

mod executor;
#[cfg(feature = "tls")]
pub mod tls;

pub use executor::spawn;

/// The smol runtime (tasks on [`spawn`]'s executor, async-io timers), for
/// [`grid_proto::driver::Manager`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

/// A grid manager running on smol: one per grid per node, owning a
/// connection to every other host. Its methods are those of
/// [`grid_proto::driver::Manager`] (listed below too): `new`, the
/// `register_*` handler registrations, `start`, `connection`, `stats`,
/// `accept` and `shutdown`. Another runtime (for example the `tls`
/// feature's) is named as `Manager<ThatRuntime>`.
pub type Manager<R = Smol> = grid_proto::driver::Manager<R>;

/// An async-io timer that resolves to `()`.
#[derive(Debug)]
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for Smol {
    type Socket = BoxSocket;
    type Sleep = Sleep;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        spawn(task).detach();
    }

    fn sleep_until(&self, at: Instant) -> Self::Sleep {
        Sleep(async_io::Timer::at(at))
    }

    fn dial(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
        Box::pin(async move {
            let authority = request
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or(tungstenite::Error::Url(
                    tungstenite::error::UrlError::NoHostName,
                ))?;
            if request.uri().scheme_str() == Some("wss") {
                return Err(tungstenite::Error::Url(
                    tungstenite::error::UrlError::TlsFeatureNotEnabled,
                ));
            }
            let tcp = TcpStream::connect(authority.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            let (ws, _response) =
                async_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
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
        spawn(async move {
            if let Err(e) = accept_stream(&manager, tcp).await {
                tracing::debug!(%addr, error = %e, "incoming grid connection refused");
            }
        })
        .detach();
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
    let upgrade = async_tungstenite::accept_hdr_async_with_config(
        stream,
        manager.upgrade_check(),
        Some(manager.websocket_config()),
    );
    let ws = within(manager.options().connection.handshake_timeout, upgrade)
        .await
        .ok_or(AcceptError::Timeout)?
        .map_err(|e| AcceptError::Transport(e.to_string()))?;
    manager.accept(Box::pin(ws)).await
}

/// Takes a connection your own HTTP server has already upgraded, after
/// answering with [`Manager::upgrade_response`]: the raw byte stream
/// becomes a grid WebSocket (with [`Manager::websocket_config`]) and goes
/// to the manager, which reads the peer's `Connect` as [`Manager::accept`]
/// does.
pub async fn accept_upgraded<R, S>(
    manager: &grid_proto::driver::Manager<R>,
    stream: S,
) -> Result<(), AcceptError>
where
    R: Runtime<Socket = BoxSocket>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = async_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tungstenite::protocol::Role::Server,
        Some(manager.websocket_config()),
    )
    .await;
    manager.accept(Box::pin(ws)).await
}

/// `future`'s output, or `None` if `limit` passes first.
pub(crate) async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let timeout = async {
        async_io::Timer::after(limit).await;
        None
    };
    futures_lite::future::or(async { Some(future.await) }, timeout).await
}
