//! The replayed peer on a real socket: a plain (blocking) tungstenite
//! WebSocket endpoint over loopback TCP. It accepts the subject's dial, or
//! dials the subject, then writes the frames the replay gives it and hands
//! back, through a reader thread, every frame the subject sends.

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use grid_proto::Timestamp;
use grid_proto::driver::tungstenite::{
    self, Message as WsMessage, WebSocket,
    client::IntoClientRequest,
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderName, HeaderValue, StatusCode},
    protocol::{Role, WebSocketConfig},
};

/// What the subject sent, as the reader thread saw it.
#[derive(Debug)]
pub(crate) enum Received {
    /// A binary message (grid frames).
    Binary(Bytes),
    /// The subject closed the connection (close frame or end of stream).
    Closed(String),
}

/// What the upgrade request of a dialing subject must carry.
#[derive(Debug, Clone)]
pub(crate) struct UpgradeRules {
    /// The grid route (the request path).
    pub(crate) route: String,
    /// The bearer token.
    pub(crate) token: String,
}

/// One WebSocket connection with the subject.
#[derive(Debug)]
pub(crate) struct WsPeer {
    writer: WebSocket<TcpStream>,
    received: Receiver<Received>,
    tcp: TcpStream,
    reader: Option<JoinHandle<()>>,
    closed: bool,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(1 << 30))
        .max_frame_size(Some(1 << 30))
}

/// Headers tungstenite writes itself on a client upgrade (or that name the
/// recorded connection only).
const HOP_HEADERS: [&str; 6] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "x-minio-time",
];

impl WsPeer {
    /// Waits up to `timeout` for the subject to dial `listener`, checks its
    /// upgrade request against `rules` and answers it: `101` if `accept`,
    /// else `403` (a refused upgrade, as recorded). Returns the request as
    /// text.
    // The upgrade callback's error type is tungstenite's (an HTTP response).
    #[allow(clippy::result_large_err)]
    pub(crate) fn accept(
        listener: &TcpListener,
        timeout: Duration,
        rules: &UpgradeRules,
        accept: bool,
    ) -> Result<(Option<WsPeer>, String), String> {
        let tcp = accept_within(listener, timeout)
            .map_err(|e| format!("the subject did not dial the peer within {timeout:?}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        // (request text, what is wrong with it)
        let seen = RefCell::new((String::new(), None));
        let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let problem = check_upgrade(req, rules).err();
            let refuse = problem.is_some() || !accept;
            *seen.borrow_mut() = (request_to_text(req), problem);
            if refuse {
                let mut refusal = ErrorResponse::new(None);
                *refusal.status_mut() = StatusCode::FORBIDDEN;
                return Err(refusal);
            }
            Ok(resp)
        };
        let stream = tcp.try_clone().map_err(|e| e.to_string())?;
        let handshake = tungstenite::accept_hdr_with_config(stream, callback, Some(config()));
        let (request_text, problem) = seen.borrow().clone();
        if let Some(p) = problem {
            return Err(format!(
                "the subject's upgrade request {p}:\n{request_text}"
            ));
        }
        if !accept {
            return Ok((None, request_text));
        }
        let ws = handshake.map_err(|e| format!("upgrade of the subject's dial failed: {e}"))?;
        Ok((Some(WsPeer::start(ws, tcp, Role::Server)?), request_text))
    }

    /// Dials the subject at `addr` with the upgrade request's headers taken
    /// from `recorded` (a recorded request; `Host`, the WebSocket key and
    /// version are tungstenite's, `X-Minio-Time` is the current time) plus
    /// `extra` headers not in it.
    pub(crate) fn dial(
        addr: SocketAddr,
        route: &str,
        recorded: &str,
        extra: &[(&str, String)],
        timeout: Duration,
    ) -> Result<WsPeer, String> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("cannot dial the subject at {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut request = format!("ws://{addr}{route}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        for line in recorded.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if HOP_HEADERS.contains(&name.trim().to_ascii_lowercase().as_str()) {
                continue;
            }
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?;
            headers.append(name, value);
        }
        for (name, value) in extra {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            if !headers.contains_key(&name) {
                let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                headers.insert(name, value);
            }
        }
        let now = Timestamp::from_system_time(SystemTime::now()).unix_nanos();
        headers.insert("X-Minio-Time", HeaderValue::from(now));
        let stream = tcp.try_clone().map_err(|e| e.to_string())?;
        let (ws, _response) = tungstenite::client::client_with_config(
            request,
            stream,
            Some(config()),
        )
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => format!(
                "the subject refused the upgrade: {} {}",
                resp.status(),
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
            ),
            e => format!("upgrade to the subject failed: {e}"),
        })?;
        WsPeer::start(ws, tcp, Role::Client)
    }

    /// Runs the reader thread on `ws`; writes go through a second
    /// WebSocket on the same TCP connection.
    fn start(mut ws: WebSocket<TcpStream>, tcp: TcpStream, role: Role) -> Result<WsPeer, String> {
        ws.get_mut()
            .set_read_timeout(None)
            .map_err(|e| e.to_string())?;
        let writer = WebSocket::from_raw_socket(
            tcp.try_clone().map_err(|e| e.to_string())?,
            role,
            Some(config()),
        );
        let (tx, received) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("replay-peer-reader".into())
            .spawn(move || {
                loop {
                    let item = match ws.read() {
                        Ok(WsMessage::Binary(b)) => Received::Binary(b),
                        Ok(WsMessage::Close(c)) => Received::Closed(format!("close frame {c:?}")),
                        Ok(_) => continue,
                        Err(e) => Received::Closed(e.to_string()),
                    };
                    let end = matches!(item, Received::Closed(_));
                    if tx.send(item).is_err() || end {
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(WsPeer {
            writer,
            received,
            tcp,
            reader: Some(reader),
            closed: false,
        })
    }

    /// Sends one binary frame.
    pub(crate) fn send(&mut self, frame: Bytes) -> Result<(), String> {
        self.writer
            .send(WsMessage::Binary(frame))
            .map_err(|e| format!("writing to the subject failed: {e}"))
    }

    /// Closes the connection (a close frame, then the TCP connection).
    pub(crate) fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = self.writer.close(None);
            let _ = self.writer.flush();
            let _ = self.tcp.shutdown(Shutdown::Write);
        }
    }

    /// The next thing the subject sent, if any arrives within `timeout`
    /// (zero: only what is there already).
    pub(crate) fn next(&mut self, timeout: Duration) -> Option<Received> {
        if timeout.is_zero() {
            return self.received.try_recv().ok();
        }
        self.received.recv_timeout(timeout).ok()
    }
}

impl Drop for WsPeer {
    fn drop(&mut self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let result = loop {
        match listener.accept() {
            Ok((tcp, _)) => break Ok(tcp),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    break Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => break Err(e),
        }
    };
    listener.set_nonblocking(false)?;
    let tcp = result?;
    tcp.set_nonblocking(false)?;
    Ok(tcp)
}

/// The route, `Authorization: Bearer <token>` and a numeric `X-Minio-Time`.
fn check_upgrade(req: &Request, rules: &UpgradeRules) -> Result<(), String> {
    if req.uri().path() != rules.route {
        return Err(format!(
            "has path {:?}, not the route {:?}",
            req.uri().path(),
            rules.route
        ));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let want = format!("Bearer {}", rules.token);
    match header("Authorization") {
        Some(auth) if auth == want => {}
        Some(auth) => return Err(format!("has Authorization {auth:?}, not {want:?}")),
        None => return Err("has no Authorization header".into()),
    }
    match header("X-Minio-Time") {
        Some(t) if t.trim().parse::<i64>().is_ok() => Ok(()),
        Some(t) => Err(format!("has a non-numeric X-Minio-Time {t:?}")),
        None => Err("has no X-Minio-Time header".into()),
    }
}

fn request_to_text(req: &Request) -> String {
    let mut text = format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        text.push_str(&format!(
            "{}: {}\r\n",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push_str("\r\n");
    text
}
