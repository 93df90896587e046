//! Serving the grid route from an HTTP server of your own (axum, hyper...),
//! next to your other routes, as MinIO serves grid on its S3 port: the
//! server routes the grid path here, answers with
//! [`Manager::upgrade_response`], and once the connection is upgraded hands
//! the raw byte stream to the driver (`grid_tokio::accept_upgraded`,
//! `grid_smol::accept_upgraded`).

use std::fmt;

use tungstenite::handshake::derive_accept_key;
use tungstenite::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use tungstenite::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::driver::manager::Manager;
use crate::driver::runtime::Runtime;
use crate::upgrade::UpgradeError;

/// Why an HTTP request routed to the grid is not upgraded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpUpgradeError {
    /// Not a WebSocket upgrade request (RFC 6455 §4.2.1): the named part
    /// (method or header) is missing or wrong. Answer 400.
    NotWebSocket(&'static str),
    /// A WebSocket upgrade the grid refuses: wrong route, token or clock
    /// (logged and counted in [`Manager::refusals`]). Answer with its status.
    Refused(UpgradeError),
}

impl HttpUpgradeError {
    /// The HTTP status to answer with (and nothing more, as MinIO does).
    pub fn status(&self) -> StatusCode {
        match self {
            HttpUpgradeError::NotWebSocket(_) => StatusCode::BAD_REQUEST,
            HttpUpgradeError::Refused(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN)
            }
        }
    }
}

impl fmt::Display for HttpUpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpUpgradeError::NotWebSocket(what) => {
                write!(f, "not a WebSocket upgrade: bad or missing {what}")
            }
            HttpUpgradeError::Refused(e) => write!(f, "grid upgrade refused: {e}"),
        }
    }
}

impl std::error::Error for HttpUpgradeError {}

/// Whether a comma-separated header holds `token` (case-insensitive), as
/// `Connection: keep-alive, Upgrade` does.
fn has_token(
    headers: &HeaderMap,
    name: impl tungstenite::http::header::AsHeaderName,
    token: &str,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade request,
/// with its `Sec-WebSocket-Accept`; an error if the request is not one.
pub fn switching_protocols<B>(request: &Request<B>) -> Result<Response<()>, HttpUpgradeError> {
    let headers = request.headers();
    if request.method() != Method::GET {
        return Err(HttpUpgradeError::NotWebSocket("method (GET)"));
    }
    if !has_token(headers, UPGRADE, "websocket") {
        return Err(HttpUpgradeError::NotWebSocket("Upgrade: websocket"));
    }
    if !has_token(headers, CONNECTION, "upgrade") {
        return Err(HttpUpgradeError::NotWebSocket("Connection: upgrade"));
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(HttpUpgradeError::NotWebSocket("Sec-WebSocket-Version: 13"));
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or(HttpUpgradeError::NotWebSocket("Sec-WebSocket-Key"))?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| HttpUpgradeError::NotWebSocket("Sec-WebSocket-Key"))?;
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

impl<R: Runtime> Manager<R> {
    /// The answer to an upgrade request your own HTTP server routed to the
    /// grid: the WebSocket checks of [`switching_protocols`], then the
    /// grid's ([`check_upgrade`](Self::check_upgrade): route, token,
    /// clock), then `101 Switching Protocols`. Send it, and hand the
    /// upgraded connection to the driver's `accept_upgraded`; on an error
    /// answer with [`HttpUpgradeError::status`] and an empty body.
    pub fn upgrade_response<B>(
        &self,
        request: &Request<B>,
    ) -> Result<Response<()>, HttpUpgradeError> {
        let response = switching_protocols(request)?;
        self.check_upgrade(request)
            .map_err(HttpUpgradeError::Refused)?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request() -> tungstenite::http::request::Builder {
        Request::get("/minio/grid/v1")
            .header("Upgrade", "WebSocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Version", "13")
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        let request = upgrade_request()
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let response = switching_protocols(&request).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(response.headers()[UPGRADE], "websocket");
    }

    #[test]
    fn a_plain_request_is_not_upgraded() {
        let not = |r: Request<()>| switching_protocols(&r).unwrap_err();
        let plain = Request::get("/minio/grid/v1").body(()).unwrap();
        assert_eq!(
            not(plain),
            HttpUpgradeError::NotWebSocket("Upgrade: websocket")
        );
        let keyless = upgrade_request().body(()).unwrap();
        let e = not(keyless);
        assert_eq!(e, HttpUpgradeError::NotWebSocket("Sec-WebSocket-Key"));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let old = Request::get("/")
            .header("Upgrade", "websocket")
            .header("Connection", "upgrade")
            .header("Sec-WebSocket-Version", "8")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        assert_eq!(
            not(old),
            HttpUpgradeError::NotWebSocket("Sec-WebSocket-Version: 13")
        );
        let post = Request::post("/").body(()).unwrap();
        assert_eq!(not(post), HttpUpgradeError::NotWebSocket("method (GET)"));
    }
}
