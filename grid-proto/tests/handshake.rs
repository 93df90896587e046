//! Handshake and session lifecycle (docs/protocol.md#handshake,
//! docs/protocol.md#lifecycle): accept,
//! rejections with Go's texts, the dialer's retry spacing, handshake
//! timeout, reconnects and peer restarts, shutdown.

mod common;

use bytes::Bytes;
use common::*;
use grid_proto::sim::{CLIENT_HOST, Pair, SERVER_HOST, TOKEN};
use grid_proto::{
    CallError, Config, ConnectRequest, ConnectResponse, Connection, DialFailure, DisconnectReason,
    Event, Flags, HandlerId, InstanceId, Op, OpenStream, Request, State, should_dial,
};

#[test]
fn dialer_sends_connect_and_acceptor_accepts() {
    let mut pair = Pair::new(1);
    pair.record = true;
    let start_wall = pair.wall();
    pair.connect();

    let (cid, sid) = (
        pair.client.conn.instance_id(),
        pair.server.conn.instance_id(),
    );
    assert_ne!(cid, sid);
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::Dial,
            Event::Connected {
                remote_id: sid,
                peer_restarted: false
            }
        ]
    );
    assert_eq!(
        pair.server.take_events(),
        vec![Event::Connected {
            remote_id: cid,
            peer_restarted: false
        }]
    );
    assert_eq!(pair.client.conn.remote_id(), Some(sid));
    assert_eq!(pair.server.conn.remote_id(), Some(cid));

    // Exactly two frames, each alone and without CRC
    // (docs/protocol.md#handshake-sequence, docs/protocol.md#quirk-q9-crc-exceptions).
    let w = wire(&pair);
    assert_eq!(w.len(), 2);
    assert_eq!(pair.sent.len(), 2);
    let (connect, answer) = (&w[0], &w[1]);
    assert!(connect.from_client && !answer.from_client);
    for m in [&connect.msg, &answer.msg] {
        assert_eq!(
            (m.mux_id, m.seq, m.deadline_ms, m.handler),
            (0, 0, 0, HandlerId(0))
        );
        assert_eq!(m.flags, Flags::NONE);
    }
    assert_eq!(connect.msg.op, Op::Connect);
    let req = ConnectRequest::decode(&connect.msg.payload).unwrap();
    assert_eq!(
        req,
        ConnectRequest {
            id: cid,
            host: CLIENT_HOST.into(),
            time: start_wall,
            token: TOKEN.into(),
        }
    );
    assert_eq!(answer.msg.op, Op::ConnectResponse);
    let resp = ConnectResponse::decode(&answer.msg.payload).unwrap();
    assert_eq!(
        resp,
        ConnectResponse {
            id: sid,
            accepted: true,
            rejected_reason: String::new(),
        }
    );
    assert_eq!(pair.client.conn.state(), State::Connected);
    assert_eq!(pair.server.conn.state(), State::Connected);
}

/// Runs a pair whose handshakes are refused: the first attempt fails with
/// `reason`, the next one starts 0.8–1.2 s after the first started, the one
/// after that 1.6–2.4 s later (a refusal backs off), and the acceptor never
/// connects.
fn assert_rejected_and_retried(mut pair: Pair, reason: &str) {
    let log = Log::default();
    pair.client.set_app(log.clone());
    let t0 = pair.now;
    pair.drive();
    assert_eq!(
        log.entries(),
        vec![
            (t0, Event::Dial),
            (
                t0 + 2 * pair.latency,
                Event::Disconnected {
                    reason: DisconnectReason::Rejected(reason.into())
                }
            )
        ]
    );
    assert_eq!(pair.client.conn.state(), State::ConnectionError);

    pair.advance(secs(4));
    let dials = log.times(is_dial);
    assert_eq!(dials.len(), 3, "{:#?}", log.entries());
    let first_gap = dials[1] - dials[0];
    let second_gap = dials[2] - dials[1];
    assert!(
        first_gap >= ms(800) && first_gap < ms(1200),
        "{first_gap:?}"
    );
    assert!(
        second_gap >= ms(1600) && second_gap < ms(2400),
        "{second_gap:?}"
    );
    assert_eq!(
        pair.client.conn.last_dial_failure(),
        Some(&DialFailure::Rejected(reason.into()))
    );
    assert_eq!(log.times(is_disconnected).len(), 3);
    assert!(log.times(is_connected).is_empty());
    // The acceptor never saw a session.
    assert_eq!(pair.server.conn.state(), State::Unconnected);
    assert!(pair.server.take_events().is_empty());
}

#[test]
fn wrong_token_is_rejected_with_gos_text_and_retried() {
    let mut pair = Pair::new(2);
    pair.client_token = "not-the-token".into();
    // The validator said "invalid token"; the peer is told only that the
    // token was refused.
    assert_rejected_and_retried(
        pair,
        "auth token: Authentication failed, check your access credentials",
    );
}

#[test]
fn unknown_host_is_rejected_with_gos_text_and_retried() {
    // A host the acceptor does not know, for which the client still dials.
    let stranger = (19_003..)
        .map(|port| format!("http://127.0.0.1:{port}"))
        .find(|h| should_dial(h, SERVER_HOST))
        .unwrap();
    let pair = Pair::with_configs(
        Config::new(stranger.clone(), SERVER_HOST),
        Config::new(SERVER_HOST, CLIENT_HOST),
    );
    assert_rejected_and_retried(pair, &format!("unknown incoming host: {stranger}"));
}

#[test]
fn clock_skew_over_five_minutes_is_rejected_with_gos_duration_text() {
    let mut pair = Pair::new(3);
    pair.client_clock_offset = secs(6 * 60);
    // The acceptor reads the request one link latency (50 µs) after it was
    // stamped; Go prints the difference with time.Duration's format.
    assert_rejected_and_retried(
        pair,
        "time difference too large between servers: 5m59.99995s",
    );
}

#[test]
fn clock_skew_under_five_minutes_is_accepted() {
    let mut pair = Pair::new(4);
    pair.client_clock_offset = secs(4 * 60 + 59);
    pair.connect();
}

#[test]
fn rejected_dialer_connects_once_the_cause_is_fixed() {
    let mut pair = Pair::new(5);
    pair.client_token = "stale".into();
    pair.drive();
    assert_eq!(pair.client.conn.state(), State::ConnectionError);
    pair.client_token = TOKEN.into();
    pair.advance(secs(2));
    assert_eq!(pair.client.conn.state(), State::Connected);
    assert_eq!(pair.server.conn.state(), State::Connected);
    // A failed handshake is not a session: no reconnect is counted.
    assert_eq!(pair.client.conn.stats(pair.now).reconnects, 0);
}

#[test]
fn handshake_without_answer_times_out_and_is_retried() {
    let mut pair = Pair::new(6);
    pair.record = true;
    let log = Log::default();
    pair.client.set_app(log.clone());
    pair.blackhole_to_server = true;
    let t0 = pair.now;
    pair.drive();
    assert_eq!(pair.client.conn.state(), State::Connecting);

    let timeout = pair.client.conn.config().settings.handshake_timeout;
    pair.advance(timeout - pair.elapsed() - NS);
    assert_eq!(pair.client.conn.state(), State::Connecting);
    assert!(log.times(is_disconnected).is_empty());
    pair.advance(NS);
    assert_eq!(
        log.times(|e| *e
            == Event::Disconnected {
                reason: DisconnectReason::HandshakeTimeout
            }),
        vec![t0 + timeout]
    );
    // The attempt took longer than the retry spacing: the next one starts
    // at once (docs/protocol.md#handshake-redial).
    assert_eq!(log.times(is_dial), vec![t0, t0 + timeout]);
    // Every Connect went into the blackhole; the acceptor never heard a thing.
    let w = wire(&pair);
    assert_eq!(w.len(), 2);
    assert!(w.iter().all(|w| w.dropped && w.msg.op == Op::Connect));
    assert_eq!(pair.server.conn.state(), State::Unconnected);

    pair.blackhole_to_server = false;
    pair.advance(timeout + secs(4));
    assert_eq!(pair.client.conn.state(), State::Connected);
}

#[test]
fn lost_session_is_redialled_at_once_and_calls_work_again() {
    let mut pair = with_ref_peer(7);
    let log = Log::default();
    pair.client.set_app(log.clone());
    let sid = pair.server.conn.instance_id();
    let lost_at = pair.now;
    pair.disconnect();
    pair.drive();

    assert_eq!(
        log.entries(),
        vec![
            (
                lost_at,
                Event::Disconnected {
                    reason: DisconnectReason::TransportLost
                }
            ),
            (lost_at, Event::Dial),
            (
                lost_at + 2 * pair.latency,
                Event::Connected {
                    remote_id: sid,
                    peer_restarted: false
                }
            ),
        ]
    );
    assert_eq!(
        pair.server.take_events(),
        vec![
            Event::Disconnected {
                reason: DisconnectReason::TransportLost
            },
            Event::Connected {
                remote_id: pair.client.conn.instance_id(),
                peer_restarted: false
            }
        ]
    );
    assert_eq!(pair.client.conn.stats(pair.now).reconnects, 1);
    assert_eq!(pair.server.conn.stats(pair.now).reconnects, 1);

    // Mux ids keep counting across sessions (docs/protocol.md#requests-mux-ids).
    let now = pair.now;
    let first = pair
        .client
        .conn
        .request(now, Request::new(HandlerId::TEST, Bytes::from_static(b"a")))
        .unwrap();
    pair.disconnect();
    pair.drive();
    let now = pair.now;
    let second = pair
        .client
        .conn
        .request(now, Request::new(HandlerId::TEST, Bytes::from_static(b"b")))
        .unwrap();
    assert_eq!(second.0, first.0 + 1);
    pair.drive();
    assert!(pair.client.take_events().contains(&Event::Response {
        id: second,
        result: Ok(Some(Bytes::from_static(b"b"))),
    }));
}

#[test]
fn restarted_peer_is_reported_on_reconnect() {
    let mut pair = with_ref_peer(10);
    let old = pair.server.conn.instance_id();
    pair.disconnect();
    // The acceptor process restarts: a new connection with a new instance id.
    let config = pair.server.conn.config().clone();
    let new_id = InstanceId::from_seed(0xdead_beef);
    assert_ne!(new_id, old);
    pair.server.conn = Connection::new(config, new_id, pair.now, pair.wall());
    pair.drive();
    assert_eq!(pair.server.conn.state(), State::Connected);
    let events = pair.client.take_events();
    assert_eq!(
        events.last(),
        Some(&Event::Connected {
            remote_id: new_id,
            peer_restarted: true
        }),
        "{events:#?}"
    );
    // The next reconnect to the same process is not a restart.
    pair.disconnect();
    pair.drive();
    assert_eq!(
        pair.client.take_events().last(),
        Some(&Event::Connected {
            remote_id: new_id,
            peer_restarted: false
        })
    );
}

#[test]
fn shutdown_ends_calls_and_stops_redialling() {
    let mut pair = scripted(11);
    let now = pair.now;
    let req = pair
        .client
        .conn
        .request(now, Request::new(HandlerId::TEST, Bytes::new()))
        .unwrap();
    let stream = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO))
        .unwrap();
    pair.drive();
    pair.client.conn.shutdown(pair.now);
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::Response {
                id: req,
                result: Err(CallError::Shutdown)
            },
            Event::StreamEnd {
                id: stream,
                result: Err(CallError::Shutdown)
            },
            Event::Disconnected {
                reason: DisconnectReason::Shutdown
            },
        ]
    );
    assert_eq!(pair.client.conn.state(), State::Shutdown);
    // The acceptor sees the transport go; its calls are cancelled.
    let server = pair.server.take_events();
    assert!(server.contains(&Event::Disconnected {
        reason: DisconnectReason::TransportLost
    }));
    assert_eq!(pair.server.conn.state(), State::ConnectionError);

    // No redial, no timers, calls refused for good; shutdown is idempotent.
    pair.advance(secs(120));
    assert!(pair.client.take_events().is_empty());
    assert_eq!(pair.client.conn.poll_timeout(), None);
    assert_eq!(pair.dials, 1);
    let now = pair.now;
    assert_eq!(
        pair.client
            .conn
            .request(now, Request::new(HandlerId::TEST, Bytes::new())),
        Err(CallError::Shutdown)
    );
    pair.client.conn.shutdown(now);
    assert!(pair.client.conn.poll_event().is_none());
}

#[test]
fn shut_down_acceptor_is_a_lost_transport_for_the_dialer() {
    let mut pair = scripted(12);
    let log = Log::default();
    pair.client.set_app(log.clone());
    let t0 = pair.now;
    pair.server.conn.shutdown(t0);
    pair.drive();
    assert_eq!(pair.server.conn.state(), State::Shutdown);
    let lost = t0 + pair.latency;
    assert_eq!(
        log.entries()[..2],
        [
            (
                lost,
                Event::Disconnected {
                    reason: DisconnectReason::TransportLost
                }
            ),
            (lost, Event::Dial),
        ]
    );
    // The dialer keeps trying; a shut-down connection answers no handshake.
    let timeout = pair.client.conn.config().settings.handshake_timeout;
    pair.advance(timeout);
    assert_eq!(
        log.times(|e| *e
            == Event::Disconnected {
                reason: DisconnectReason::HandshakeTimeout
            }),
        vec![lost + timeout]
    );
    assert!(log.times(is_connected).is_empty());
}
