//! `wss://` / `https://` grids over rustls (feature `tls`).
//!
//! Dialing uses [`SmolTls`], the smol runtime with a rustls client
//! configuration (a [`TlsRuntime`] over [`RustlsDialer`]); accepting uses
//! [`serve_tls`] with a rustls server configuration. As in Go, no ALPN is
//! offered (docs/protocol.md#transport-upgrade: the exchange is HTTP/1.1),
//! and when both host strings are TLS URLs messages carry no CRC (§2.5; the
//! core decides this from the host strings).

use std::io;
use std::sync::Arc;

use async_net::{TcpListener, TcpStream};
use async_tungstenite::tungstenite;
use futures_rustls::{TlsAcceptor, TlsConnector};
use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

pub use futures_rustls::rustls;

use crate::{BoxFuture, BoxSocket, Runtime, Smol, TlsDialer, TlsRuntime};

/// Dials `wss://` hosts over rustls on smol.
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

fn url_error(e: tungstenite::error::UrlError) -> tungstenite::Error {
    tungstenite::Error::Url(e)
}

impl TlsDialer for RustlsDialer {
    fn dial_tls(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
        let connector = TlsConnector::from(Arc::clone(&self.client));
        Box::pin(async move {
            let uri = request.uri();
            let host = uri
                .host()
                .ok_or(url_error(tungstenite::error::UrlError::NoHostName))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| url_error(tungstenite::error::UrlError::NoHostName))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(name, tcp).await?;
            let (ws, _response) =
                async_tungstenite::client_async_with_config(request, tls, Some(config)).await?;
            Ok(Box::pin(ws) as BoxSocket)
        })
    }
}

/// The smol runtime dialing `wss://` with a rustls client configuration
/// (`SmolTls::new(client_config)`); plain `ws://` hosts are dialed
/// without TLS.
pub type SmolTls = TlsRuntime<Smol, RustlsDialer>;

/// A grid manager on smol that dials TLS hosts.
pub type TlsManager = grid_proto::driver::Manager<SmolTls>;

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
        crate::spawn(async move {
            let limit = manager.options().connection.handshake_timeout;
            let tls = match crate::within(limit, acceptor.accept(tcp)).await {
                Some(Ok(tls)) => tls,
                Some(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                None => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            if let Err(e) = crate::accept_stream(&manager, tls).await {
                tracing::debug!(%addr, error = %e, "incoming grid connection refused");
            }
        })
        .detach();
    }
}
