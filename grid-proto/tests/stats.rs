//! The stats a connection reports, shaped like MinIO's RPC metrics: how
//! often it connected and when (by the wall clock passed in), its last
//! pong and round trip, traffic each way, and the sum over connections.

mod common;

use bytes::Bytes;
use common::*;
use grid_proto::sim::Pair;
use grid_proto::{Request, State, StatsTotal};

#[test]
fn a_first_session_counts_one_connect_at_the_wall_time_it_was_established() {
    let mut pair = Pair::new(1);
    let before = pair.client.conn.stats(pair.now);
    assert_eq!(before.connects, 0);
    assert_eq!(before.last_connected, None);
    assert_eq!(before.last_pong, None);
    pair.connect();
    for node in [&pair.client, &pair.server] {
        let s = node.conn.stats(pair.now);
        assert_eq!((s.connects, s.reconnects), (1, 0));
        let at = s.last_connected.expect("connected");
        // Within the handshake's round trip of the simulated wall clock.
        assert!(at <= pair.wall() && pair.wall().abs_diff(at) < ms(10));
        assert_eq!(s.last_pong, s.last_connected);
    }
}

#[test]
fn a_pong_moves_the_last_pong_time_and_measures_the_round_trip() {
    let mut pair = Pair::new(2);
    pair.latency = ms(5);
    pair.connect();
    let connected = pair.client.conn.stats(pair.now).last_connected;
    // The connection ping goes out every 10 s; its pong comes back 10 ms
    // (two link latencies) later.
    pair.advance(secs(11));
    let s = pair.client.conn.stats(pair.now);
    let pong = s.last_pong.expect("a pong");
    assert!(pong > connected.expect("connected"));
    assert!(pair.wall().duration_since(pong).is_some());
    assert_eq!(s.rtt, Some(ms(10)));
}

#[test]
fn a_reconnect_counts_again_and_keeps_the_first_sessions_totals() {
    let mut pair = with_ref_peer(3);
    let echoed = pair
        .client
        .conn
        .request(pair.now, Request::new(ECHO, Bytes::from_static(b"hello")))
        .expect("sent");
    pair.drive();
    assert!(!pair.client.conn.is_live(echoed));
    let first = pair.client.conn.stats(pair.now);
    assert!(first.messages_sent >= 2 && first.bytes_sent > 0);
    pair.disconnect();
    let down = pair.client.conn.stats(pair.now);
    assert_ne!(down.state, State::Connected);
    assert_eq!(down.last_connected, first.last_connected);
    pair.advance(secs(2));
    let again = pair.client.conn.stats(pair.now);
    assert_eq!(again.state, State::Connected);
    assert_eq!((again.connects, again.reconnects), (2, 1));
    assert!(again.last_connected > first.last_connected);
    assert!(again.messages_sent > first.messages_sent);
}

#[test]
fn the_total_adds_counters_and_keeps_the_latest_times() {
    let mut pair = with_ref_peer(4);
    pair.latency = ms(2);
    pair.client
        .conn
        .request(pair.now, Request::new(ECHO, Bytes::from_static(b"x")))
        .expect("sent");
    pair.advance(secs(11));
    let (c, s) = (
        pair.client.conn.stats(pair.now),
        pair.server.conn.stats(pair.now),
    );
    let total: StatsTotal = [&c, &s].into_iter().collect();
    assert_eq!((total.connections, total.connected), (2, 2));
    assert_eq!(total.connects, 2);
    assert_eq!(total.messages_sent, c.messages_sent + s.messages_sent);
    assert_eq!(total.bytes_received, c.bytes_received + s.bytes_received);
    assert_eq!(total.frames_sent, c.frames_sent + s.frames_sent);
    assert_eq!(total.last_connected, c.last_connected.max(s.last_connected));
    assert_eq!(total.last_pong, c.last_pong.max(s.last_pong));
    assert_eq!(total.max_rtt, c.rtt.max(s.rtt));
    assert_eq!(total.in_flight(), 0);
    // A connection that is down counts, but not as connected.
    pair.disconnect();
    let down = pair.client.conn.stats(pair.now);
    let mut total = StatsTotal::default();
    total.add(&down);
    assert_eq!((total.connections, total.connected), (1, 0));
}
