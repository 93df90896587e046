//! `wss://` / `https://` grids over rustls (feature `tls`).
//!
//! Dialing uses [`TokioTls`], a tokio runtime that carries the rustls client
//! configuration; accepting uses [`serve_tls`] with a rustls server
//! configuration. As in Go, no ALPN is offered (docs/protocol.md#transport-upgrade: the
//! exchange is HTTP/1.1), and when both host strings are TLS URLs messages
//! carry no CRC (§2.5; the core decides this from the host strings).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

pub use tokio_rustls::rustls;

use crate::{BoxFuture, BoxSocket, Runtime};

/// The tokio runtime dialing `wss://` with a rustls client configuration.
/// Plain `ws://` hosts are dialed without TLS.
#[derive(Clone)]
pub struct TokioTls {
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TokioTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioTls").finish_non_exhaustive()
    }
}

impl TokioTls {
    /// From a rustls client configuration (its trust roots and client
    /// certificate, if any). ALPN is cleared: Go offers none.
    pub fn new(client: rustls::ClientConfig) -> TokioTls {
        let mut client = client;
        client.alpn_protocols.clear();
        TokioTls {
            client: Arc::new(client),
        }
    }
}

/// A grid manager on tokio that dials TLS hosts.
pub type TlsManager = grid_proto::driver::Manager<TokioTls>;

impl Runtime for TokioTls {
    type Socket = BoxSocket;
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        crate::Tokio.now()
    }

    fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        crate::Tokio.spawn(task);
    }

    fn sleep_until(&self, at: Instant) -> Self::Sleep {
        crate::Tokio.sleep_until(at)
    }

    fn dial(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
        let connector = Connector::Rustls(Arc::clone(&self.client));
        Box::pin(async move {
            let (ws, _response) = tokio_tungstenite::connect_async_tls_with_config(
                request,
                Some(config),
                true,
                Some(connector),
            )
            .await?;
            Ok(Box::pin(ws) as BoxSocket)
        })
    }
}

/// Accepts TLS grid connections on `listener` until it fails: each TLS
/// handshake, upgrade and grid handshake runs on its own task.
pub async fn serve_tls<R: Runtime<Socket = BoxSocket>>(
    manager: grid_proto::driver::Manager<R>,
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(server);
    loop {
        let (tcp, addr) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let manager = manager.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let limit = manager.options().connection.handshake_timeout;
            let tls = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            if let Err(e) = crate::accept_stream(&manager, tls).await {
                tracing::debug!(%addr, error = %e, "incoming grid connection refused");
            }
        });
    }
}
