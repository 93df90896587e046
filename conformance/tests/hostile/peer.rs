//! The hostile peer: blocking tungstenite over a std `TcpStream`, driven by
//! hand. Every read and write has a socket timeout, so nothing here can
//! block for longer than [`LIMIT`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use grid_proto::driver::DEFAULT_ROUTE;
use grid_proto::driver::tungstenite::{
    self, Message as WsMessage, WebSocket,
    client::IntoClientRequest,
    protocol::{Role, WebSocketConfig},
};
use grid_proto::{
    ConnectRequest, ConnectResponse, Flags, FrameDecoder, HandlerId, InstanceId, Message, Op,
    Timestamp,
};

use crate::harness::TOKEN;

/// The longest any single blocking step may take.
pub(crate) const LIMIT: Duration = Duration::from_secs(5);

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// A loopback TCP connection to `addr` with read and write timeouts.
pub(crate) fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect_timeout(&addr, LIMIT).expect("tcp connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(LIMIT)).expect("read timeout");
    tcp.set_write_timeout(Some(LIMIT)).expect("write timeout");
    tcp
}

/// A well-formed upgrade request (right route, token and clock).
pub(crate) fn upgrade_request(addr: SocketAddr) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}{DEFAULT_ROUTE}")
        .into_client_request()
        .expect("a request");
    let headers = req.headers_mut();
    let bearer = format!("Bearer {TOKEN}");
    headers.insert("Authorization", bearer.parse().expect("header"));
    let now = Timestamp::from_system_time(SystemTime::now()).unix_nanos();
    headers.insert("X-Minio-Time", now.into());
    req
}

/// A completed, accepted HTTP upgrade; no grid message sent yet.
pub(crate) fn upgrade(addr: SocketAddr) -> WebSocket<TcpStream> {
    let (ws, resp) =
        tungstenite::client::client_with_config(upgrade_request(addr), tcp(addr), Some(config()))
            .expect("the upgrade is accepted");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// An encoded `Connect` message.
pub(crate) fn connect_frame(host: &str, time: SystemTime, token: &str) -> Bytes {
    let req = ConnectRequest {
        id: InstanceId::from_seed(7),
        host: host.to_owned(),
        time: Timestamp::from_system_time(time),
        token: token.to_owned(),
    };
    let mut msg = Message::new(Op::Connect, 0);
    msg.payload = req.to_bytes();
    msg.to_bytes()
}

/// Sends `connect` as the first message and reads the `ConnectResponse`.
pub(crate) fn handshake(ws: &mut WebSocket<TcpStream>, connect: Bytes) -> ConnectResponse {
    ws.send(WsMessage::Binary(connect)).expect("send connect");
    loop {
        match ws.read().expect("a connect response") {
            WsMessage::Binary(frame) => {
                let msg = Message::decode(&frame).expect("an envelope");
                assert_eq!(msg.op, Op::ConnectResponse, "{msg:?}");
                return ConnectResponse::decode(&msg.payload).expect("a response payload");
            }
            _ => continue,
        }
    }
}

/// Whether a read error means the connection is gone (as opposed to a
/// read timeout).
fn is_gone(e: &tungstenite::Error) -> bool {
    match e {
        tungstenite::Error::Io(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        _ => true,
    }
}

/// Reads (and discards) until the server closes the WebSocket; panics if
/// it is still open after `limit`. Returns how long that took.
pub(crate) fn ws_closed_within(ws: &mut WebSocket<TcpStream>, limit: Duration) -> Duration {
    let start = Instant::now();
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(e) if is_gone(&e) => return start.elapsed(),
            Err(_) => {}
        }
        assert!(
            start.elapsed() < limit,
            "the server kept the connection open for {limit:?}"
        );
    }
}

/// Reads (and discards) raw bytes until the server closes the TCP
/// connection; panics if it is still open after `limit`. Returns how long
/// that took.
pub(crate) fn tcp_closed_within(tcp: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    tcp.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return start.elapsed(),
        }
        assert!(
            start.elapsed() < limit,
            "the server kept the connection open for {limit:?}"
        );
    }
}

/// A request to the echo handler (78), with a CRC.
pub(crate) fn echo_request(mux_id: u64, payload: Bytes) -> Message {
    let mut msg = Message::new(Op::Request, mux_id);
    msg.handler = HandlerId::TEST;
    msg.deadline_ms = 10_000;
    msg.flags = Flags::CRC;
    msg.payload = payload;
    msg
}

/// What the reader thread saw.
#[derive(Debug)]
pub(crate) enum Seen {
    /// One grid message (merged frames are split).
    Msg(Message),
    /// The server closed the connection (or sent something undecodable).
    Closed(String),
}

/// A hostile peer after an accepted handshake: a reader thread hands over
/// everything the server sends; writes go through a second WebSocket on
/// the same TCP connection.
pub(crate) struct Peer {
    writer: WebSocket<TcpStream>,
    tcp: TcpStream,
    seen: Receiver<Seen>,
    reader: Option<JoinHandle<()>>,
}

impl Peer {
    /// Upgrades and shakes hands as `host` (which must be accepted).
    pub(crate) fn connect(addr: SocketAddr, host: &str) -> Peer {
        let mut ws = upgrade(addr);
        let answer = handshake(&mut ws, connect_frame(host, SystemTime::now(), TOKEN));
        assert!(answer.accepted, "refused: {}", answer.rejected_reason);
        Peer::start(ws)
    }

    /// Runs the reader thread on an established WebSocket.
    pub(crate) fn start(mut ws: WebSocket<TcpStream>) -> Peer {
        ws.get_mut()
            .set_read_timeout(None)
            .expect("no read timeout");
        let tcp = ws.get_ref().try_clone().expect("tcp clone");
        let writer = WebSocket::from_raw_socket(
            tcp.try_clone().expect("tcp clone"),
            Role::Client,
            Some(config()),
        );
        let (tx, seen) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("hostile-reader".into())
            .spawn(move || {
                loop {
                    let frame = match ws.read() {
                        Ok(WsMessage::Binary(b)) => b,
                        Ok(WsMessage::Close(c)) => {
                            let _ = tx.send(Seen::Closed(format!("close frame {c:?}")));
                            return;
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            let _ = tx.send(Seen::Closed(e.to_string()));
                            return;
                        }
                    };
                    let decoder = match FrameDecoder::new(frame, usize::MAX) {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = tx.send(Seen::Closed(format!("undecodable frame: {e}")));
                            return;
                        }
                    };
                    for item in decoder {
                        let seen = match item {
                            Ok(m) => Seen::Msg(m),
                            Err(e) => Seen::Closed(format!("undecodable message: {e}")),
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                }
            })
            .expect("a reader thread");
        Peer {
            writer,
            tcp,
            seen,
            reader: Some(reader),
        }
    }

    /// Sends one message in a frame of its own.
    pub(crate) fn send(&mut self, msg: &Message) {
        self.send_raw(msg.to_bytes());
    }

    /// Sends one binary WebSocket message, whatever its bytes.
    pub(crate) fn send_raw(&mut self, frame: Bytes) {
        self.writer
            .send(WsMessage::Binary(frame))
            .expect("writing to the server");
    }

    /// Sends a WebSocket message of any kind; errors are returned (the
    /// server may already have closed).
    pub(crate) fn try_send_ws(&mut self, msg: WsMessage) -> Result<(), tungstenite::Error> {
        self.writer.send(msg)
    }

    /// The next thing seen within `timeout`.
    pub(crate) fn next(&self, timeout: Duration) -> Option<Seen> {
        match self.seen.recv_timeout(timeout) {
            Ok(s) => Some(s),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Seen::Closed("reader gone".into())),
        }
    }

    /// Waits for the first message matching `pred`, handing every other one
    /// to `other`; panics on a close or after [`LIMIT`].
    pub(crate) fn expect(
        &self,
        what: &str,
        mut pred: impl FnMut(&Message) -> bool,
        mut other: impl FnMut(Message),
    ) -> Message {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Seen::Msg(m)) if pred(&m) => return m,
                Some(Seen::Msg(m)) => other(m),
                Some(Seen::Closed(why)) => panic!("closed while waiting for {what}: {why}"),
                None => panic!("no {what} within {LIMIT:?}"),
            }
        }
    }

    /// Echo request `mux_id` with `payload`; waits for its response and
    /// checks it.
    pub(crate) fn echo(&mut self, mux_id: u64, payload: &'static [u8]) {
        self.send(&echo_request(mux_id, Bytes::from_static(payload)));
        let resp = self.expect(
            "the echo response",
            |m| m.op == Op::Response && m.mux_id == mux_id,
            |_| {},
        );
        assert!(!resp.flags.contains(Flags::PAYLOAD_IS_ERR), "{resp:?}");
        assert_eq!(resp.payload, payload);
    }

    /// Waits until the server closes the connection, skipping messages;
    /// panics if it is still open after `limit`. Returns the close reason.
    pub(crate) fn closed_within(&self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Seen::Msg(_)) => {}
                Some(Seen::Closed(why)) => return why,
                None => panic!("the server kept the connection open for {limit:?}"),
            }
        }
    }

    /// Writes raw bytes to the TCP connection (hand-made frames).
    pub(crate) fn write_tcp(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tcp.write_all(bytes)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
