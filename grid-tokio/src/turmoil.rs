//! `grid` under [turmoil](https://docs.rs/turmoil): the real driver over a
//! simulated network, on simulated clocks, for deterministic tests of an
//! application built on grid-tokio (feature `turmoil`).
//!
//! turmoil runs every simulated host on its own single-threaded tokio
//! runtime with a paused clock, and routes `turmoil::net` sockets through a
//! network it controls: latency, partitions, host crashes and restarts, all
//! drawn from one seed. [`Turmoil`] is a [`Runtime`] for that world:
//!
//! - the monotonic clock is the host's tokio clock (simulated time);
//! - the wall clock is the simulation's (`Builder::epoch` plus the time
//!   simulated so far) moved by a per-host [`ClockSkew`], so the
//!   `X-Minio-Time` and `Connect` clock checks can be exercised;
//! - dialing connects a `turmoil::net::TcpStream` to the host part of the
//!   grid host URL, resolved by turmoil's names: the grid host
//!   `http://node3:9000` is port 9000 of the turmoil host `node3`. Plain
//!   `http://` / `ws://` only (the simulated network carries no TLS);
//! - [`serve`] accepts on a `turmoil::net::TcpListener` and upgrades with
//!   the same checks as [`crate::serve`].
//!
//! Everything else is the production code: the same [`crate::Manager`]
//! logic, handlers, calls, reconnects. A host that turmoil crashes loses its
//! tasks and sockets like a killed process; build a new manager when the
//! host software restarts (a new instance id, as a restarted Go node has).
//!
//! For runs that repeat exactly, fix every source of chance: turmoil's
//! (`Builder::rng_seed`, and `Builder::epoch` for the wall clock) and the
//! manager's ([`Options::seed`](crate::Options::seed), different per host
//! and per restart). One more is tokio's: a crashed host's tasks are dropped
//! in an order that depends on process-wide task ids, and every segment its
//! dying sockets send draws from turmoil's one random generator, so the
//! rest of the run can differ. Cutting the host off (`Sim::partition`)
//! before `Sim::crash` or `Sim::bounce`, and repairing after, keeps the run
//! exact: segments on a cut link draw nothing (the peers then learn of the
//! crash as of a power loss, from timeouts and new connections).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use bytes::Bytes;
//! use grid_tokio::turmoil::{Manager, Turmoil, serve};
//! use grid_tokio::{HandlerId, Options, RemoteError};
//!
//! const HOSTS: [&str; 2] = ["http://alpha:9000", "http://beta:9000"];
//!
//! /// One grid node: a manager with an echo handler, serving on port 9000.
//! async fn node(local: &'static str, seed: u64) -> Result<Manager, Box<dyn std::error::Error>> {
//!     let options = Options { seed: Some(seed), ..Options::default() };
//!     let manager = Manager::new(Turmoil::new(), local, &HOSTS, options)?;
//!     manager.register_single(HandlerId(78), |payload: Bytes| async move {
//!         Ok::<_, RemoteError>(payload)
//!     })?;
//!     let listener = turmoil::net::TcpListener::bind("0.0.0.0:9000").await?;
//!     tokio::spawn(serve(manager.clone(), listener));
//!     manager.start();
//!     Ok(manager)
//! }
//!
//! let mut sim = turmoil::Builder::new()
//!     .rng_seed(7)
//!     .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
//!     .build();
//! sim.host("alpha", || async {
//!     node(HOSTS[0], 1).await?;
//!     std::future::pending().await
//! });
//! sim.client("beta", async {
//!     let manager = node(HOSTS[1], 2).await?;
//!     let alpha = manager.connection(HOSTS[0]).expect("a known host");
//!     alpha.wait_for_connect(Duration::from_secs(5)).await?;
//!     let answer = alpha.request(HandlerId(78), Bytes::from_static(b"ping")).await?;
//!     assert_eq!(answer, "ping");
//!     Ok(())
//! });
//! sim.run().expect("the simulation passes");
//! ```

use std::io;
use std::time::{Duration, Instant, SystemTime};

use tokio_tungstenite::tungstenite;
use tungstenite::error::UrlError;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

use crate::{BoxFuture, BoxSocket, Runtime, accept_stream};

/// How far a simulated host's wall clock is from the simulation's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockSkew {
    /// The host's wall clock is the simulation's.
    #[default]
    None,
    /// The host's wall clock runs this far ahead.
    Ahead(Duration),
    /// The host's wall clock runs this far behind.
    Behind(Duration),
}

impl ClockSkew {
    /// `wall` as a host with this skew reads it.
    pub fn apply(self, wall: SystemTime) -> SystemTime {
        match self {
            ClockSkew::None => wall,
            ClockSkew::Ahead(d) => wall.checked_add(d).unwrap_or(wall),
            ClockSkew::Behind(d) => wall.checked_sub(d).unwrap_or(wall),
        }
    }
}

/// The turmoil runtime, for [`grid_proto::driver::Manager`]: simulated
/// clocks and network (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Turmoil {
    skew: ClockSkew,
}

/// A grid manager running in a turmoil simulation.
pub type Manager = grid_proto::driver::Manager<Turmoil>;

impl Turmoil {
    /// A runtime whose wall clock is the simulation's.
    pub fn new() -> Turmoil {
        Turmoil::default()
    }

    /// A runtime whose wall clock is off the simulation's by `skew`.
    pub fn with_clock_skew(skew: ClockSkew) -> Turmoil {
        Turmoil { skew }
    }

    /// This runtime's wall-clock skew.
    pub fn clock_skew(&self) -> ClockSkew {
        self.skew
    }
}

/// The host and port a `ws://` request dials; `None` for a `wss://` one or
/// a request without a host.
fn dial_target(request: &Request) -> Option<(String, u16)> {
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        return None;
    }
    // An IPv6 literal comes bracketed; turmoil parses it bare.
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), uri.port_u16().unwrap_or(80)))
}

impl Runtime for Turmoil {
    type Socket = BoxSocket;
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn wall(&self) -> SystemTime {
        // Outside a simulated host (e.g. a manager built before the
        // simulation runs) there is no simulated time to read.
        let sim =
            ::turmoil::since_epoch().map_or_else(SystemTime::now, |d| SystemTime::UNIX_EPOCH + d);
        self.skew.apply(sim)
    }

    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // A simulated host is a tokio runtime of its own: its tasks die
        // with it when turmoil crashes the host.
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
            let Some(target) = dial_target(&request) else {
                let e = if request.uri().scheme_str() == Some("wss") {
                    UrlError::TlsFeatureNotEnabled
                } else {
                    UrlError::NoHostName
                };
                return Err(tungstenite::Error::Url(e));
            };
            let tcp = ::turmoil::net::TcpStream::connect(target).await?;
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
            Ok(Box::pin(ws) as BoxSocket)
        })
    }
}

/// Accepts grid connections on a simulated `listener` until it fails; each
/// connection is upgraded (route, token and clock checks, bounded by
/// [`Options::connection`](crate::Options::connection)`.handshake_timeout`) and
/// handed to the manager on its own task. The simulated twin of
/// [`crate::serve`].
pub async fn serve<R: Runtime<Socket = BoxSocket>>(
    manager: grid_proto::driver::Manager<R>,
    listener: ::turmoil::net::TcpListener,
) -> io::Result<()> {
    loop {
        let (tcp, addr) = listener.accept().await?;
        let manager = manager.clone();
        tokio::spawn(async move {
            if let Err(e) = accept_stream(&manager, tcp).await {
                tracing::debug!(%addr, error = %e, "incoming grid connection refused");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::client::IntoClientRequest;

    fn target(url: &str) -> Option<(String, u16)> {
        dial_target(&url.into_client_request().unwrap())
    }

    #[test]
    fn dials_the_host_part_of_the_url() {
        let route = "/minio/grid/v1";
        assert_eq!(
            target(&format!("ws://node3:9000{route}")),
            Some(("node3".into(), 9000))
        );
        assert_eq!(target("ws://node3/x"), Some(("node3".into(), 80)));
        assert_eq!(
            target("ws://[fe80::1]:9000/x"),
            Some(("fe80::1".into(), 9000))
        );
        assert_eq!(target("wss://node3:9000/x"), None);
    }

    #[test]
    fn skew_moves_the_wall_clock_both_ways() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let d = Duration::from_secs(90);
        assert_eq!(ClockSkew::None.apply(t), t);
        assert_eq!(ClockSkew::Ahead(d).apply(t), t + d);
        assert_eq!(ClockSkew::Behind(d).apply(t), t - d);
        assert_eq!(
            Turmoil::with_clock_skew(ClockSkew::Ahead(d)).clock_skew(),
            ClockSkew::Ahead(d)
        );
    }
}
