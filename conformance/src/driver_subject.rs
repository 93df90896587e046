//! A driver as a [`Subject`]: a real [`Manager`](grid_proto::driver::Manager)
//! of `grid-tokio` or `grid-smol` answering as the recording says
//! ([`crate::scripted`]), talking over
//! loopback TCP to the replayed peer ([`WsPeer`], a plain tungstenite
//! endpoint), on real time.
//!
//! - Hosts: the peer's end has a real port, so the recorded host strings
//!   are mapped to `http://127.0.0.1:<port>` strings chosen so that the dial
//!   rule gives the recorded answer. The subject's `Connect` is mapped back
//!   before the replay compares it (a byte-for-byte swap of the host
//!   string); the peer's `Connect` is mapped forward, with the current time
//!   (the recorded one is stale).
//! - Upgrade: a dialing subject dials the peer, which checks the request
//!   (route, bearer token, `X-Minio-Time`) and answers it when the replay
//!   reaches the recorded response; an accepting subject listens, and the
//!   peer dials it with the recorded request's headers (fresh
//!   `X-Minio-Time`).
//! - Calls go through the public API (`request`, `open_stream_with`,
//!   `send`, `recv`, `close`, dropping). Each call waits until what it
//!   causes is on the wire, so the next one cannot be batched with it and
//!   reordered; the mux ids of new calls are learned from the wire.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::{AbortHandle, Abortable};
use grid_proto::driver::{Connection, Options, StreamOptions, StreamReceiver, StreamSender};
use grid_proto::{
    CallError, ConnectRequest, Flags, HandlerId, Message, Op, SubrouteId, Timestamp, should_dial,
};

use crate::frame::{flatten, pack};
use crate::node::{Handlers, Node, RuntimeKind, with_timeout};
use crate::subject::{AppCall, Subject, SubjectSetup};
use crate::ws_peer::{Received, UpgradeRules, WsPeer};

/// Seed of the subject's manager (instance id, jitter).
const SEED: u64 = 0x6772_6964;

/// Recorded host strings and the loopback ones standing in for them.
#[derive(Debug, Clone)]
struct Hosts {
    local_recorded: String,
    remote_recorded: String,
    local: String,
    remote: String,
}

/// A stream the subject's application opened.
#[derive(Debug, Default)]
struct AppStream {
    tx: Option<StreamSender>,
    rx: Option<StreamReceiver>,
}

/// What the subject sent, counted by (op, mux, EOF): how a call sees its
/// effect on the wire.
type Seen = HashMap<(Op, u64, bool), usize>;

/// A `grid-tokio` or `grid-smol` manager under test.
pub struct DriverSubject {
    node: Option<Node>,
    conn: Connection,
    hosts: Hosts,
    rules: UpgradeRules,
    token: String,
    /// Dialer: where the peer listens. Acceptor: `None`.
    peer_listener: Option<TcpListener>,
    /// Acceptor: where the subject listens.
    subject_addr: Option<SocketAddr>,
    peer: Option<WsPeer>,
    /// How long to wait for anything the subject should do.
    wait: Duration,
    /// Frames the subject sent, not yet taken by the replay.
    sent: VecDeque<Bytes>,
    /// Why the subject's transport ended, if it did.
    closed: Option<String>,
    seen: Seen,
    /// Requests made whose `Request` has not been seen yet (their abort
    /// handles), and those seen, by mux id.
    pending_requests: VecDeque<AbortHandle>,
    requests: HashMap<u64, AbortHandle>,
    /// Streams opened whose `ConnectMux` has not been seen yet, and those
    /// seen, by mux id.
    pending_streams: VecDeque<AppStream>,
    streams: HashMap<u64, AppStream>,
    /// The mux ids bound to calls, in the order the calls were made.
    bound: VecDeque<u64>,
    /// Answers to the subject's requests (kept so the futures complete).
    answers: Arc<Mutex<Vec<Result<Bytes, CallError>>>>,
}

impl std::fmt::Debug for DriverSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverSubject")
            .field("node", &self.node)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

fn loopback_host(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A loopback host string for the side whose real port does not matter,
/// such that `should_dial(local, remote) == dials` (given as `(local,
/// remote)` by `pair`). Tries the recorded port first, then the ones after.
fn pick_host(
    recorded: &str,
    taken: u16,
    dials: bool,
    pair: impl Fn(&str) -> (String, String),
) -> String {
    let start = recorded
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or(19000)
        .max(10000);
    // Ports 10000..=65535, from the recorded one on (wrapping round).
    (0..1000u32)
        .map(|i| (10000 + (u32::from(start) - 10000 + i) % 55536) as u16)
        .filter(|&p| p != taken)
        .map(loopback_host)
        .find(|h| {
            let (l, r) = pair(h);
            should_dial(&l, &r) == dials
        })
        .expect("half of all ports satisfy the dial rule either way")
}

impl DriverSubject {
    /// A started manager of `kind` in the place of `setup.local_host`.
    pub fn new(kind: RuntimeKind, setup: &SubjectSetup) -> Result<DriverSubject, String> {
        let dials = should_dial(&setup.local_host, &setup.remote_host);
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("cannot listen on loopback: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (hosts, peer_listener, subject_listener) = if dials {
            // The peer listens; the subject's own host is only a name.
            let remote = loopback_host(port);
            let local = pick_host(&setup.local_host, port, true, |h| {
                (h.to_owned(), remote.clone())
            });
            (
                Hosts {
                    local_recorded: setup.local_host.clone(),
                    remote_recorded: setup.remote_host.clone(),
                    local,
                    remote,
                },
                Some(listener),
                None,
            )
        } else {
            let local = loopback_host(port);
            let remote = pick_host(&setup.remote_host, port, false, |h| {
                (local.clone(), h.to_owned())
            });
            (
                Hosts {
                    local_recorded: setup.local_host.clone(),
                    remote_recorded: setup.remote_host.clone(),
                    local,
                    remote,
                },
                None,
                Some(listener),
            )
        };
        let subject_addr = match &subject_listener {
            Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
            None => None,
        };
        let mut options = Options {
            route: setup.route.clone(),
            dial_timeout: setup.wait.max(Duration::from_secs(2)),
            seed: Some(SEED),
            ..Options::default()
        };
        let token = setup.token.clone();
        options.auth_token = Arc::new({
            let token = token.clone();
            move |_| token.clone()
        });
        options.validate_token = Arc::new({
            let token = token.clone();
            move |t| {
                if t == token {
                    Ok(())
                } else {
                    Err("invalid token".into())
                }
            }
        });
        if let Some(interval) = setup.ping_interval {
            options.connection.ping_interval = interval;
        }
        let all = [hosts.local.clone(), hosts.remote.clone()];
        let handlers = Handlers::Scripted(Arc::clone(&setup.answers));
        let node = Node::start_with(
            kind,
            &hosts.local,
            &all,
            options,
            subject_listener,
            &handlers,
        )?;
        let conn = node
            .connection(&hosts.remote)
            .ok_or("the manager has no connection to the peer")?;
        Ok(DriverSubject {
            node: Some(node),
            conn,
            rules: UpgradeRules {
                route: setup.route.clone(),
                token: setup.token.clone(),
            },
            token,
            hosts,
            peer_listener,
            subject_addr,
            peer: None,
            wait: setup.wait,
            sent: VecDeque::new(),
            closed: None,
            seen: Seen::new(),
            pending_requests: VecDeque::new(),
            requests: HashMap::new(),
            pending_streams: VecDeque::new(),
            streams: HashMap::new(),
            bound: VecDeque::new(),
            answers: Arc::default(),
        })
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("the node lives until drop")
    }

    /// Acceptor: dials the subject (once), with `recorded`'s headers.
    fn dial_subject(&mut self, recorded: &str) -> Result<(), String> {
        if self.peer.is_some() {
            return Ok(());
        }
        let addr = self
            .subject_addr
            .ok_or("the subject dials: the peer cannot dial it")?;
        let auth = ("Authorization", format!("Bearer {}", self.token));
        let peer = WsPeer::dial(addr, &self.rules.route, recorded, &[auth], self.wait)?;
        self.peer = Some(peer);
        Ok(())
    }

    /// Takes what the reader thread has (waiting up to `timeout` for the
    /// first item); returns whether a frame was taken.
    fn pull(&mut self, timeout: Duration) -> bool {
        let mut items = Vec::new();
        if let Some(peer) = self.peer.as_mut() {
            let mut wait = timeout;
            while let Some(item) = peer.next(wait) {
                wait = Duration::ZERO;
                items.push(item);
            }
        }
        let mut got = false;
        for item in items {
            match item {
                Received::Binary(frame) => {
                    got = true;
                    self.observe(&frame);
                    let frame = if self.rewrites_connect() {
                        map_connect(&frame, &self.hosts.local, &self.hosts.local_recorded, None)
                    } else {
                        frame
                    };
                    self.sent.push_back(frame);
                }
                Received::Closed(why) => {
                    self.closed.get_or_insert(why);
                    break;
                }
            }
        }
        got
    }

    fn rewrites_connect(&self) -> bool {
        self.hosts.local != self.hosts.local_recorded
    }

    /// Counts the subject's messages and binds new calls to their mux ids.
    fn observe(&mut self, frame: &Bytes) {
        let Ok(flat) = flatten(frame) else {
            return; // the replay reports it
        };
        for m in flat.messages {
            let eof = m.flags.contains(Flags::EOF);
            *self.seen.entry((m.op, m.mux_id, eof)).or_default() += 1;
            match m.op {
                Op::Request if m.mux_id != 0 => {
                    if let Some(h) = self.pending_requests.pop_front() {
                        self.requests.insert(m.mux_id, h);
                        self.bound.push_back(m.mux_id);
                    }
                }
                Op::ConnectMux => {
                    if let Some(s) = self.pending_streams.pop_front() {
                        self.streams.insert(m.mux_id, s);
                        self.bound.push_back(m.mux_id);
                    }
                }
                _ => {}
            }
        }
    }

    fn seen(&self, op: Op, mux: u64, eof: bool) -> usize {
        self.seen.get(&(op, mux, eof)).copied().unwrap_or(0)
    }

    /// Waits until `done` holds (checked after every frame the subject
    /// sends), at most `self.wait`.
    fn wait_until(&mut self, done: impl Fn(&DriverSubject) -> bool) -> bool {
        let deadline = Instant::now() + self.wait;
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let over = self.peer.is_none() || self.closed.is_some();
            if left.is_zero() || (!self.pull(left) && over) {
                return done(self);
            }
        }
    }

    /// Waits until one more (op, mux, eof) message than `before` was sent.
    fn wait_for(&mut self, op: Op, mux: u64, eof: bool, before: usize) {
        // A missing message is the replay's to report, with its context.
        self.wait_until(|s| s.seen(op, mux, eof) > before);
    }

    /// Waits for the next new call to be bound to its mux id.
    fn wait_bound(&mut self, what: &str) -> Result<u64, String> {
        if self.wait_until(|s| !s.bound.is_empty()) {
            Ok(self.bound.pop_front().expect("checked"))
        } else {
            Err(format!(
                "the subject's {what} did not go on the wire within {:?}",
                self.wait
            ))
        }
    }

    /// The connection handle scoped to the subroute, if any.
    fn scoped(
        &self,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
    ) -> Result<Connection, String> {
        let _ = handler;
        Ok(match subroute {
            Some(sub) => self.conn.subroute_raw(sub),
            None => self.conn.clone(),
        })
    }

    fn connected(&mut self) -> Result<(), String> {
        let conn = self.conn.clone();
        let wait = self.wait;
        self.node()
            .block_on(conn.wait_for_connect(wait))
            .map_err(|e| format!("not connected after {wait:?}: {e}"))
    }

    fn stream(&mut self, mux: u64) -> Result<&mut AppStream, String> {
        self.streams
            .get_mut(&mux)
            .ok_or_else(|| format!("no stream on mux {mux}"))
    }

    fn request(
        &mut self,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        payload: &Bytes,
        deadline_ms: Option<u32>,
    ) -> Result<Option<u64>, String> {
        let conn = self.scoped(handler, subroute)?;
        let fut = match deadline_ms {
            Some(ms) => conn.request_with_timeout(
                handler,
                payload.clone(),
                Duration::from_millis(u64::from(ms)),
            ),
            None => conn.request(handler, payload.clone()),
        };
        let (abort, registration) = AbortHandle::new_pair();
        let answers = Arc::clone(&self.answers);
        self.node().spawn(async move {
            if let Ok(answer) = Abortable::new(fut, registration).await {
                answers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(answer);
            }
        });
        self.pending_requests.push_back(abort);
        self.wait_bound("request").map(Some)
    }

    fn open_stream(
        &mut self,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        payload: Option<Bytes>,
        deadline_ms: Option<u32>,
        capacities: grid_proto::Capacities,
    ) -> Result<Option<u64>, String> {
        let conn = self.scoped(handler, subroute)?;
        let options = StreamOptions {
            timeout: deadline_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            capacities: Some(capacities),
            ..StreamOptions::default()
        };
        let wait = self.wait;
        let opened = self
            .node()
            .block_on(with_timeout(
                wait,
                conn.open_stream_with(handler, payload, options),
            ))
            .ok_or_else(|| format!("open_stream did not return within {wait:?}"))?
            .map_err(|e| format!("open_stream failed: {e}"))?;
        self.pending_streams.push_back(AppStream {
            tx: Some(opened.0),
            rx: Some(opened.1),
        });
        self.wait_bound("stream").map(Some)
    }

    fn send(&mut self, mux: u64, payload: &Bytes) -> Result<(), String> {
        let before = self.seen(Op::MuxClientMsg, mux, false);
        let wait = self.wait;
        let mut tx = self
            .stream(mux)?
            .tx
            .take()
            .ok_or_else(|| format!("the stream on mux {mux} was closed"))?;
        let sent = self
            .node()
            .block_on(with_timeout(wait, tx.send(payload.clone())));
        self.stream(mux)?.tx = Some(tx);
        sent.ok_or_else(|| format!("send on mux {mux} blocked for {wait:?}"))?
            .map_err(|e| format!("send on mux {mux} failed: {e}"))?;
        self.wait_for(Op::MuxClientMsg, mux, false, before);
        Ok(())
    }

    fn consume(&mut self, mux: u64) -> Result<(), String> {
        let before = self.seen(Op::UnblockSrvMux, mux, false);
        let wait = self.wait;
        let mut rx = self
            .stream(mux)?
            .rx
            .take()
            .ok_or_else(|| format!("the stream on mux {mux} was dropped"))?;
        let got = self.node().block_on(with_timeout(wait, rx.recv()));
        self.stream(mux)?.rx = Some(rx);
        match got {
            Some(Some(Ok(_))) => {}
            Some(Some(Err(e))) => return Err(format!("the stream on mux {mux} failed: {e}")),
            Some(None) => return Err(format!("the stream on mux {mux} ended")),
            None => {
                return Err(format!(
                    "no stream message arrived on mux {mux} within {wait:?}"
                ));
            }
        }
        self.wait_for(Op::UnblockSrvMux, mux, false, before);
        Ok(())
    }
}

impl Drop for DriverSubject {
    fn drop(&mut self) {
        self.streams.clear();
        self.pending_streams.clear();
        for (_, h) in self.requests.drain() {
            h.abort();
        }
        self.peer = None;
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
    }
}

impl Subject for DriverSubject {
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn transport_opened(&mut self, _now: Instant, wall: Option<Timestamp>) -> Result<(), String> {
        let listener = self
            .peer_listener
            .as_ref()
            .ok_or("the subject accepts: it opens no transport")?;
        let (peer, _request) = WsPeer::accept(listener, self.wait, &self.rules, wall.is_some())?;
        self.peer = peer;
        Ok(())
    }

    fn upgrade_requested(&mut self, _now: Instant, request: &str) -> Result<(), String> {
        self.dial_subject(request)
    }

    fn transport_closed(&mut self, _now: Instant) {
        if let Some(peer) = self.peer.as_mut() {
            peer.close();
        }
    }

    fn receive(&mut self, _now: Instant, frame: Bytes) -> Result<(), String> {
        if self.peer.is_none() && self.subject_addr.is_some() {
            // No upgrade in the recording: dial with the required headers.
            self.dial_subject("GET / HTTP/1.1\r\n\r\n")?;
        }
        let now = Timestamp::from_system_time(SystemTime::now());
        let frame = map_connect(
            &frame,
            &self.hosts.remote_recorded,
            &self.hosts.remote,
            Some(now),
        );
        let peer = self
            .peer
            .as_mut()
            .ok_or("no transport to the subject (the upgrade was refused)")?;
        peer.send(frame)
    }

    fn call(&mut self, _now: Instant, call: &AppCall) -> Result<Option<u64>, String> {
        self.connected()?;
        match call {
            AppCall::Request {
                handler,
                subroute,
                payload,
                deadline_ms,
            } => self.request(*handler, *subroute, payload, *deadline_ms),
            AppCall::OpenStream {
                handler,
                subroute,
                payload,
                deadline_ms,
                capacities,
                ..
            } => self.open_stream(
                *handler,
                *subroute,
                payload.clone(),
                *deadline_ms,
                *capacities,
            ),
            AppCall::Send { mux, payload } => self.send(*mux, payload).map(|()| None),
            AppCall::CloseInput { mux } => {
                let before = self.seen(Op::MuxClientMsg, *mux, true);
                let tx = self
                    .stream(*mux)?
                    .tx
                    .take()
                    .ok_or_else(|| format!("the stream on mux {mux} was closed already"))?;
                tx.close();
                self.wait_for(Op::MuxClientMsg, *mux, true, before);
                Ok(None)
            }
            AppCall::Consume { mux } => self.consume(*mux).map(|()| None),
            AppCall::Cancel { mux } => {
                let before = self.seen(Op::DisconnectServerMux, *mux, false);
                if let Some(mut stream) = self.streams.remove(mux) {
                    // The receiver first: dropping the sender alone would
                    // end the input (EOF) instead of cancelling.
                    drop(stream.rx.take());
                    drop(stream);
                } else if let Some(h) = self.requests.remove(mux) {
                    h.abort();
                } else {
                    return Err(format!("cancel on mux {mux}: no such call"));
                }
                self.wait_for(Op::DisconnectServerMux, *mux, false, before);
                Ok(None)
            }
        }
    }

    fn poll_sent(&mut self) -> Option<Bytes> {
        if self.sent.is_empty() {
            self.pull(Duration::ZERO);
        }
        self.sent.pop_front()
    }

    fn wait_sent(&mut self, timeout: Duration) -> bool {
        !self.sent.is_empty() || self.pull(timeout)
    }
}

/// A frame with any `Connect`'s host `from` replaced by `to` (the msgpack
/// string swapped byte for byte, so nothing else changes) and, with
/// `time`, its time replaced.
fn map_connect(frame: &Bytes, from: &str, to: &str, time: Option<Timestamp>) -> Bytes {
    let Ok(flat) = flatten(frame) else {
        return frame.clone();
    };
    if !flat.messages.iter().any(|m| m.op == Op::Connect) {
        return frame.clone();
    }
    let mut messages: Vec<Message> = flat.messages;
    for m in messages.iter_mut().filter(|m| m.op == Op::Connect) {
        let mut payload = replace_bytes(&m.payload, &msgpack_str(from), &msgpack_str(to));
        if let Some(t) = time
            && let Ok(mut req) = ConnectRequest::decode(&payload)
        {
            req.time = t;
            payload = req.to_bytes();
        }
        m.payload = payload;
    }
    if messages.len() == 1 && !flat.merged {
        messages[0].to_bytes()
    } else {
        pack(&messages).unwrap_or_else(|| frame.clone())
    }
}

/// The msgpack encoding of a string (what Go writes for a `Host`).
fn msgpack_str(s: &str) -> Vec<u8> {
    let len = s.len();
    let mut out = Vec::with_capacity(len + 5);
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len < 256 {
        out.extend([0xd9, len as u8]);
    } else if len < 65536 {
        out.push(0xda);
        out.extend((len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend((len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
    out
}

fn replace_bytes(haystack: &Bytes, from: &[u8], to: &[u8]) -> Bytes {
    match haystack.windows(from.len()).position(|w| w == from) {
        Some(at) => {
            let mut out = Vec::with_capacity(haystack.len() + to.len());
            out.extend_from_slice(&haystack[..at]);
            out.extend_from_slice(to);
            out.extend_from_slice(&haystack[at + from.len()..]);
            Bytes::from(out)
        }
        None => haystack.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_hosts_keep_the_dial_direction() {
        for dials in [true, false] {
            let remote = loopback_host(40000);
            let h = pick_host("http://127.0.0.1:19002", 40000, dials, |h| {
                (h.to_owned(), remote.clone())
            });
            assert_eq!(should_dial(&h, &remote), dials);
            assert_eq!(h.len(), "http://127.0.0.1:19002".len());
            // Recorded ports below 10000 and at the top of the range too.
            for recorded in ["http://127.0.0.1:9001", "http://127.0.0.1:65535"] {
                let h = pick_host(recorded, 40000, dials, |h| (h.to_owned(), remote.clone()));
                assert_eq!(should_dial(&h, &remote), dials);
            }
        }
    }

    #[test]
    fn connect_hosts_are_swapped_byte_for_byte() {
        let req = ConnectRequest {
            id: grid_proto::InstanceId::from_seed(1),
            host: "http://127.0.0.1:19002".into(),
            time: Timestamp {
                secs: 1_795_000_000,
                nanos: 5,
            },
            token: "debug".into(),
        };
        let mut m = Message::new(Op::Connect, 0);
        m.payload = req.to_bytes();
        let frame = m.to_bytes();
        let mapped = map_connect(&frame, &req.host, "http://127.0.0.1:40001", None);
        let back = map_connect(&mapped, "http://127.0.0.1:40001", &req.host, None);
        assert_eq!(back, frame);
        let got = ConnectRequest::decode(&Message::decode(&mapped).unwrap().payload).unwrap();
        assert_eq!(got.host, "http://127.0.0.1:40001");
        assert_eq!(got.time, req.time);
    }
}
