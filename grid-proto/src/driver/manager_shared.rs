//! What a manager's connection tasks share with it, whatever the runtime:
//! the options, the handler registry and the log of refused connections.

use std::sync::Arc;
use std::time::SystemTime;

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;

use crate::driver::isolate;
use crate::driver::options::Options;
use crate::driver::refusals::RefusalLog;
use crate::driver::registry::Registry;
use crate::time::Timestamp;
use crate::upgrade::{self, ws_url};

/// How much tungstenite reads (and zero-fills) per read call.
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// What connection tasks share with their manager (not runtime-specific).
pub(crate) struct ManagerShared {
    pub(crate) local: Arc<str>,
    pub(crate) options: Options,
    pub(crate) registry: Registry,
    pub(crate) refusals: RefusalLog,
}

impl ManagerShared {
    /// The upgrade request to `remote`: its URL with the route, the bearer
    /// token and `X-Minio-Time`, as Go sends them.
    pub(crate) fn dial_request(
        &self,
        remote: &str,
        token: &str,
        wall: SystemTime,
    ) -> Result<Request, String> {
        let url =
            ws_url(remote, &self.options.route).ok_or_else(|| format!("bad host {remote}"))?;
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        let wall = Timestamp::from_system_time(wall);
        for (name, value) in upgrade::dial_headers(token, wall) {
            let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
            req.headers_mut().insert(name, value);
        }
        Ok(req)
    }

    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        let max = self.options.connection.max_message_size;
        // tungstenite zero-fills up to `read_buffer_size` before every read
        // attempt; its 128 KiB default made that memset the top cost of small
        // messages. 16 KiB keeps it small and still reads many messages at once.
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_SIZE)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .write_buffer_size(128 * 1024)
            .max_write_buffer_size(usize::MAX)
    }

    /// Runs the application's token check; a panic in it refuses the token.
    pub(crate) fn validate_token(&self, token: &str) -> Result<(), String> {
        isolate::call(|| (self.options.validate_token)(token)).unwrap_or_else(|panic| {
            tracing::error!(%panic, "the validate_token hook panicked; refusing the token");
            Err(format!("token check panicked: {panic}"))
        })
    }
}
