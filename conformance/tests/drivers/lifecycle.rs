//! Connection lifecycle between real nodes: authentication and handshake
//! rejections, reconnecting to a restarted node, graceful shutdown.

use std::net::{SocketAddr, TcpStream};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use grid_proto::driver::tungstenite::{self, Message as WsMessage, client::IntoClientRequest};
use grid_proto::driver::{DEFAULT_ROUTE, RemoteError};
use grid_proto::{
    CallError, ConnectRequest, ConnectResponse, HandlerId, InstanceId, Message, Op, State,
    Timestamp,
};

use crate::harness::{
    Cluster, Counter, Gate, Handlers, Probe, Setup, TOKEN, WAIT, drive_until, eventually,
    test_options, wait, within,
};

const ECHO: HandlerId = HandlerId::TEST;
/// A single handler that never answers.
const NEVER: HandlerId = HandlerId(40);
/// A single handler that answers its payload once let through a gate.
const GATED: HandlerId = HandlerId(42);

/// Nodes whose tokens the other side refuses never connect; the dialer
/// keeps trying.
pub(crate) async fn auth_rejected(setup: Setup) {
    let refusals = Counter::default();
    let counted = refusals.clone();
    let mut options = test_options();
    options.auth_token = Arc::new(|_| "not the token".to_owned());
    options.validate_token = Arc::new(move |t| {
        if t == TOKEN {
            Ok(())
        } else {
            counted.add();
            Err("wrong token".into())
        }
    });
    let c = Cluster::launch(setup, Handlers::default(), options);
    eventually("the acceptor to refuse the dialer twice", || {
        refusals.get() >= 2
    })
    .await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let r = within(
            WAIT,
            "wait_for_connect",
            conn.wait_for_connect(Duration::from_millis(200)),
        )
        .await;
        assert_eq!(r, Err(CallError::NotConnected), "node {from} -> node {to}");
        let r = wait("a refused call", conn.request(ECHO, Bytes::new())).await;
        assert_eq!(r, Err(CallError::NotConnected));
    }
    let seen = refusals.get();
    eventually("the dialer to retry", || refusals.get() > seen).await;
    c.shutdown().await;
}

/// What a hand-made dialer got.
#[derive(Debug)]
enum RawOutcome {
    /// The upgrade was refused with this HTTP status.
    Http(u16),
    /// The handshake was answered.
    Answer(ConnectResponse),
}

/// A hand-made dialer: upgrades with `bearer` and `header_time` on
/// `route`, sends `connect`, and reads the answer.
async fn raw_dial(
    addr: SocketAddr,
    route: &'static str,
    bearer: &'static str,
    header_time: SystemTime,
    connect: ConnectRequest,
) -> RawOutcome {
    let blocking = smol::unblock(move || {
        let tcp = TcpStream::connect(addr).expect("tcp connect");
        tcp.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut request = format!("ws://{addr}{route}")
            .into_client_request()
            .expect("a request");
        let headers = request.headers_mut();
        let bearer = format!("Bearer {bearer}");
        headers.insert("Authorization", bearer.parse().expect("header"));
        let nanos = Timestamp::from_system_time(header_time).unix_nanos();
        headers.insert("X-Minio-Time", nanos.into());
        let mut ws = match tungstenite::client::client(request, tcp) {
            Ok((ws, _)) => ws,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                return RawOutcome::Http(resp.status().as_u16());
            }
            Err(e) => panic!("upgrade failed: {e}"),
        };
        let mut msg = Message::new(Op::Connect, 0);
        msg.payload = connect.to_bytes();
        ws.send(WsMessage::Binary(msg.to_bytes()))
            .expect("send connect");
        loop {
            match ws.read().expect("a connect response") {
                WsMessage::Binary(frame) => {
                    let msg = Message::decode(&frame).expect("an envelope");
                    assert_eq!(msg.op, Op::ConnectResponse);
                    let answer = ConnectResponse::decode(&msg.payload).expect("a response");
                    if !answer.accepted {
                        // The acceptor closes a refused transport.
                        match ws.read() {
                            Ok(WsMessage::Close(_)) | Err(_) => {}
                            Ok(other) => panic!("after a rejection: {other:?}"),
                        }
                    }
                    return RawOutcome::Answer(answer);
                }
                _ => continue,
            }
        }
    });
    wait("a hand-made dial", blocking).await
}

fn connect_req(host: &str, time: SystemTime, token: &str) -> ConnectRequest {
    ConnectRequest {
        id: InstanceId::from_seed(99),
        host: host.to_owned(),
        time: Timestamp::from_system_time(time),
        token: token.to_owned(),
    }
}

fn rejection(outcome: RawOutcome) -> String {
    match outcome {
        RawOutcome::Answer(a) if !a.accepted => a.rejected_reason,
        other => panic!("expected a rejected handshake, got {other:?}"),
    }
}

/// Each node, as acceptor, refuses a hand-made dialer that is unknown,
/// whose clock is 10 minutes off, or whose token is wrong (in the upgrade
/// or in `Connect`); a wrong route is not found. The real connection
/// between the nodes is untouched.
pub(crate) async fn handshake_rejections(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (node, peer) in c.directions() {
        let addr: SocketAddr = c.hosts[node]
            .trim_start_matches("http://")
            .parse()
            .expect("an address");
        let known = c.hosts[peer].clone();
        let now = SystemTime::now();

        let unknown = "http://127.0.0.1:1";
        let r = raw_dial(
            addr,
            DEFAULT_ROUTE,
            TOKEN,
            now,
            connect_req(unknown, now, TOKEN),
        )
        .await;
        assert_eq!(rejection(r), format!("unknown incoming host: {unknown}"));

        let skewed = now - Duration::from_secs(600);
        let r = raw_dial(
            addr,
            DEFAULT_ROUTE,
            TOKEN,
            now,
            connect_req(&known, skewed, TOKEN),
        )
        .await;
        let reason = rejection(r);
        assert!(
            reason.starts_with("time difference too large between servers: 10m0"),
            "{reason}"
        );

        let r = raw_dial(
            addr,
            DEFAULT_ROUTE,
            TOKEN,
            now,
            connect_req(&known, now, "bad"),
        )
        .await;
        let reason = rejection(r);
        assert!(reason.starts_with("auth token: "), "{reason}");

        let r = raw_dial(
            addr,
            DEFAULT_ROUTE,
            "bad",
            now,
            connect_req(&known, now, TOKEN),
        )
        .await;
        assert!(matches!(r, RawOutcome::Http(403)), "{r:?}");
        let late = now + Duration::from_secs(20 * 60);
        let r = raw_dial(
            addr,
            DEFAULT_ROUTE,
            TOKEN,
            late,
            connect_req(&known, now, TOKEN),
        )
        .await;
        assert!(matches!(r, RawOutcome::Http(403)), "{r:?}");
        let r = raw_dial(
            addr,
            "/not/grid",
            TOKEN,
            now,
            connect_req(&known, now, TOKEN),
        )
        .await;
        assert!(matches!(r, RawOutcome::Http(404)), "{r:?}");
    }
    for (from, to) in c.directions() {
        assert!(c.conn(from, to).is_connected());
        let r = wait(
            "echo",
            c.conn(from, to).request(ECHO, Bytes::from_static(b"ok")),
        )
        .await;
        assert_eq!(r, Ok(Bytes::from_static(b"ok")));
        assert_eq!(c.stats(from, to).reconnects, 0);
    }
    c.shutdown().await;
}

fn never_handler(probe: &Probe) -> Handlers {
    let probe = probe.clone();
    Handlers::default().single(NEVER, move |_| {
        let p = probe.clone();
        async move {
            let _guard = p.enter();
            std::future::pending::<Result<Bytes, RemoteError>>().await
        }
    })
}

/// A node goes away (its in-flight calls fail, new ones are refused) and a
/// new manager with a new instance id comes back on the same address: the
/// survivor reconnects and calls work again. Each node takes a turn as the
/// one restarted, so the dialer and the acceptor both get restarted.
pub(crate) async fn reconnect(setup: Setup) {
    let probe = Probe::new();
    let mut c = Cluster::start(setup, never_handler(&probe)).await;
    for (survivor, restarted) in c.directions() {
        let conn = c.conn(survivor, restarted);
        let reconnects = c.stats(survivor, restarted).reconnects;
        {
            let mut call = pin!(conn.request(NEVER, Bytes::from_static(b"in flight")));
            drive_until(call.as_mut(), probe.started()).await;
            c.stop_node(restarted).await;
            assert_eq!(
                wait("the in-flight call", call).await,
                Err(CallError::Disconnected)
            );
        }
        probe.dropped().await;
        eventually("the survivor to see the loss", || !conn.is_connected()).await;
        let r = wait("a call while down", conn.request(ECHO, Bytes::new())).await;
        assert_eq!(r, Err(CallError::NotConnected));
        let r = wait(
            "a stream while down",
            conn.open_stream(HandlerId::TEST, None),
        )
        .await;
        assert_eq!(r.err(), Some(CallError::NotConnected));

        c.restart_node(restarted).await;
        c.wait_connected().await;
        for (from, to) in c.directions() {
            let r = wait(
                "echo after reconnect",
                c.conn(from, to).request(ECHO, Bytes::from_static(b"back")),
            )
            .await;
            assert_eq!(
                r,
                Ok(Bytes::from_static(b"back")),
                "node {from} -> node {to}"
            );
            let (mut tx, mut rx) =
                wait("open", c.conn(from, to).open_stream(HandlerId::TEST, None))
                    .await
                    .expect("stream opened");
            wait("send", tx.send(Bytes::from_static(b"s")))
                .await
                .expect("sent");
            assert_eq!(
                wait("echo", rx.recv()).await,
                Some(Ok(Bytes::from_static(b"s")))
            );
        }
        assert!(c.stats(survivor, restarted).reconnects > reconnects);
    }
    c.shutdown().await;
}

/// `shutdown(Some(grace))` refuses new calls at once, lets calls in flight
/// both ways finish, then closes; the peer then sees the node gone.
pub(crate) async fn graceful_shutdown(setup: Setup) {
    let gate = Gate::new();
    let probe = Probe::new();
    let (g, p) = (gate.clone(), probe.clone());
    let handlers = Handlers::default().single(GATED, move |payload| {
        let (g, p) = (g.clone(), p.clone());
        async move {
            let _guard = p.enter();
            g.pass().await;
            Ok(payload)
        }
    });
    for closing in [0, 1] {
        let c = Cluster::start(setup, handlers.clone()).await;
        let other = 1 - closing;
        let mut outgoing = pin!(
            c.conn(closing, other)
                .request(GATED, Bytes::from_static(b"out"))
        );
        let mut incoming = pin!(
            c.conn(other, closing)
                .request(GATED, Bytes::from_static(b"in"))
        );
        let both_started = async {
            probe.started().await;
            probe.started().await;
        };
        drive_until(
            outgoing.as_mut(),
            drive_until(incoming.as_mut(), both_started),
        )
        .await;

        let grace = Duration::from_secs(30);
        let shutdown = c.nodes[closing].manager.shutdown(Some(grace));
        let meanwhile = async {
            let conn = c.conn(closing, other);
            let r = conn.request(ECHO, Bytes::new()).await;
            assert_eq!(r, Err(CallError::Shutdown));
            let r = conn.open_stream(HandlerId::TEST, None).await;
            assert_eq!(r.err(), Some(CallError::Shutdown));
            gate.open(2);
            (outgoing.await, incoming.await)
        };
        // Well before the grace period ends: shutdown waits for the calls,
        // not for the clock.
        let ((), (out, inc)) = wait(
            "a graceful shutdown",
            smol::future::zip(shutdown, meanwhile),
        )
        .await;
        assert_eq!(out, Ok(Bytes::from_static(b"out")));
        assert_eq!(inc, Ok(Bytes::from_static(b"in")));
        assert_eq!(c.conn(closing, other).state(), State::Shutdown);
        eventually("the peer to see the node gone", || {
            !c.conn(other, closing).is_connected()
        })
        .await;
        let r = wait(
            "a call to the closed node",
            c.conn(other, closing).request(ECHO, Bytes::new()),
        )
        .await;
        assert_eq!(r, Err(CallError::NotConnected));
        c.shutdown().await;
    }
}
