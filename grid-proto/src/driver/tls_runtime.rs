//! A runtime that also dials `wss://` hosts: what a driver's TLS support
//! adds to its runtime, written once. The driver supplies only the TLS
//! dial (its TLS library's glue, a [`TlsDialer`]); the clocks, tasks,
//! timers and plain `ws://` dials stay the wrapped runtime's.

use std::time::{Instant, SystemTime};

use tungstenite::handshake::client::Request;
use tungstenite::protocol::WebSocketConfig;

use crate::driver::runtime::{BoxFuture, BoxSocket, Runtime};

/// Opens TLS connections for a [`TlsRuntime`].
pub trait TlsDialer: Clone + Send + Sync + 'static {
    /// Opens a TLS connection to the host of `request` (a `wss://` URL) and
    /// performs the WebSocket upgrade over it with the request's headers.
    fn dial_tls(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>>;
}

/// The runtime `R`, dialing `wss://` hosts with the TLS dialer `D`. Hosts
/// given as `https://` URLs are dialed as `wss://`; as in Go no ALPN is
/// offered (the exchange is HTTP/1.1), and when both host strings of a
/// pair are TLS URLs its messages carry no CRC (the core decides this from
/// the host strings).
#[derive(Debug, Clone)]
pub struct TlsRuntime<R, D> {
    runtime: R,
    tls: D,
}

impl<R, D> TlsRuntime<R, D> {
    /// `runtime`, dialing TLS hosts with `tls`.
    pub fn with_runtime(runtime: R, tls: D) -> Self {
        TlsRuntime { runtime, tls }
    }

    /// The wrapped runtime.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }
}

impl<R: Default, D> TlsRuntime<R, D> {
    /// The default runtime, dialing TLS hosts with the dialer made from
    /// `tls` (for the drivers' rustls dialers, a rustls client
    /// configuration).
    pub fn new(tls: impl Into<D>) -> Self {
        TlsRuntime::with_runtime(R::default(), tls.into())
    }
}

impl<R, D> Runtime for TlsRuntime<R, D>
where
    R: Runtime<Socket = BoxSocket>,
    D: TlsDialer,
{
    type Socket = BoxSocket;
    type Sleep = R::Sleep;

    fn now(&self) -> Instant {
        self.runtime.now()
    }

    fn wall(&self) -> SystemTime {
        self.runtime.wall()
    }

    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(task);
    }

    fn sleep_until(&self, at: Instant) -> Self::Sleep {
        self.runtime.sleep_until(at)
    }

    fn dial(
        &self,
        request: Request,
        config: WebSocketConfig,
    ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
        if request.uri().scheme_str() == Some("wss") {
            self.tls.dial_tls(request, config)
        } else {
            self.runtime.dial(request, config)
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use tungstenite::client::IntoClientRequest;

    use super::*;

    /// A runtime whose dials fail with a text naming who dialed.
    #[derive(Clone, Default)]
    struct Named(&'static str);

    fn fail(who: &'static str) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
        Box::pin(async move { Err(tungstenite::Error::Io(std::io::Error::other(who))) })
    }

    impl Runtime for Named {
        type Socket = BoxSocket;
        type Sleep = std::future::Ready<()>;

        fn now(&self) -> Instant {
            Instant::now()
        }

        fn spawn<F>(&self, _task: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
        }

        fn sleep_until(&self, _at: Instant) -> Self::Sleep {
            std::future::ready(())
        }

        fn dial(
            &self,
            _: Request,
            _: WebSocketConfig,
        ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
            fail(self.0)
        }
    }

    impl TlsDialer for Named {
        fn dial_tls(
            &self,
            _: Request,
            _: WebSocketConfig,
        ) -> BoxFuture<Result<BoxSocket, tungstenite::Error>> {
            fail(self.0)
        }
    }

    fn dialer_of(url: &str) -> String {
        let rt = TlsRuntime::with_runtime(Named("runtime"), Named("tls"));
        let request = url.into_client_request().unwrap();
        match rt.dial(request, WebSocketConfig::default()).now_or_never() {
            Some(Err(e)) => e.to_string(),
            _ => panic!("the fake dials fail at once"),
        }
    }

    #[test]
    fn wss_goes_to_the_tls_dialer_and_ws_to_the_runtime() {
        assert!(dialer_of("wss://10.0.0.1:9000/minio/grid/v1").contains("tls"));
        assert!(dialer_of("ws://10.0.0.1:9000/minio/grid/v1").contains("runtime"));
    }
}
