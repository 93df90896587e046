//! `wss://` / `https://` grids over rustls (feature `tls`).
//!
//! Dialing uses [`TokioTls`], the tokio runtime with a rustls client
//! configuration (a [`TlsRuntime`] over [`RustlsDialer`]); accepting uses
//! [`serve_tls`] with a rustls server configuration. As in Go, no ALPN is
//! offered (docs/protocol.md#transport-upgrade: the exchange is HTTP/1.1),
//! and when both host strings are TLS URLs messages carry no CRC (§2.5; the
//! core decides this from the host strings).

use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

pub use tokio_rustls::rustls;

use crate::{BoxFuture, BoxSocket, Runtime, TlsDialer, TlsRuntime, Tokio};

/// Dials `wss://` hosts over rustls on tokio.
#[derive(Clone)]
pub struct RustlsDialer {
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for RustlsDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustlsDialer").finish_non_exhaustive()
    }
}

impl From<rustls::ClientConfig> for RustlsDialer {
    /// From a rustls client configuration (its trust roots and client
    /// certificate, if any). ALPN is cleared: Go offers none.
    fn from(client: rustls::ClientConfig) -> RustlsDialer {
        let mut client = client;
        client.alpn_protocols.clear();
        RustlsDialer {
            client: Arc::new(client),
        }
    }
}

impl TlsDialer for RustlsDialer {
    fn dial_tls(
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

/// The tokio runtime dialing `wss://` with a rustls client configuration
/// (`TokioTls::new(client_config)`); plain `ws://` hosts are dialed
/// without TLS.
pub type TokioTls = TlsRuntime<Tokio, RustlsDialer>;

/// A grid manager on tokio that dials TLS hosts.
pub type TlsManager = grid_proto::driver::Manager<TokioTls>;

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
