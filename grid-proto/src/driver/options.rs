//! The manager's options, with Go's values by default.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::driver::recorder::Recorder;
use crate::driver::trace::TraceFn;
use crate::upgrade::DEFAULT_ROUTE;

/// Produces the token for an outgoing connection to the given host.
pub type AuthFn = Arc<dyn Fn(&str) -> String + Send + Sync>;
/// Validates the token of an incoming connection.
pub type ValidateFn = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Manager settings; [`Options::default`] has Go's values.
#[derive(Clone)]
pub struct Options {
    /// The HTTP path of the grid (default [`DEFAULT_ROUTE`]).
    pub route: String,
    /// Token for outgoing connections (default: empty).
    pub auth_token: AuthFn,
    /// Check of incoming tokens (default: accept any).
    pub validate_token: ValidateFn,
    /// Dial + upgrade timeout (Go: 2 s).
    pub dial_timeout: Duration,
    /// A write blocked this long drops the connection (Go: about 4 s).
    pub write_timeout: Duration,
    /// The timers and limits of every connection (the manager gives each
    /// connection its hosts and a seed drawn from [`seed`](Self::seed)).
    /// Some reach past the connection: `handshake_timeout` also bounds an
    /// acceptor's wait for the HTTP upgrade and then for `Connect`,
    /// `max_message_size` also caps the WebSocket's messages and frames,
    /// and `backoff.retry` also spaces the restarts of a connection task
    /// that crashed.
    pub connection: Settings,
    /// Check `X-Minio-Time` on incoming upgrades (MinIO's 15 min rule).
    pub check_upgrade_time: bool,
    /// Seed of the managers' randomness (instance id, jitter); `None`: from
    /// the clock.
    pub seed: Option<u64>,
    /// Record every connection in the transcript format of the
    /// conformance suite (default: off; see [`Recorder`]).
    #[cfg(feature = "recorder")]
    pub recorder: Option<Recorder>,
    /// Called with a record of every call, made or served, when it ends
    /// (Go's `TraceTo`; default: off, and then tracing costs nothing). A
    /// call refused by its handle before it reached the connection (not
    /// connected, shutting down) leaves no record, as in Go.
    pub trace: Option<TraceFn>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Options");
        d.field("route", &self.route)
            .field("dial_timeout", &self.dial_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("connection", &self.connection)
            .field("trace", &self.trace.is_some());
        #[cfg(feature = "recorder")]
        d.field("recorder", &self.recorder.is_some());
        d.finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            route: DEFAULT_ROUTE.to_owned(),
            auth_token: Arc::new(|_| String::new()),
            validate_token: Arc::new(|_| Ok(())),
            dial_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(4),
            connection: Settings::default(),
            check_upgrade_time: true,
            seed: None,
            #[cfg(feature = "recorder")]
            recorder: None,
            trace: None,
        }
    }
}

impl Options {
    /// Where new transports are recorded, if anywhere.
    #[cfg(feature = "recorder")]
    pub(crate) fn recorder(&self) -> Option<&Recorder> {
        self.recorder.as_ref()
    }

    /// Where new transports are recorded: nowhere without the `recorder`
    /// feature.
    #[cfg(not(feature = "recorder"))]
    pub(crate) fn recorder(&self) -> Option<&Recorder> {
        None
    }
}
