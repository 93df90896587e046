//! Timers on the virtual clock (docs/protocol.md#streams-ping,
//! docs/protocol.md#streams-deadlines, docs/protocol.md#lifecycle-ping,
//! docs/protocol.md#timers):
//! connection pings and RTT, pong timeout, stream pings and pongs, the
//! caller's liveness check, the callee's idle reaping, stream deadlines on
//! both sides, and which timers each call arms.

mod common;

use bytes::Bytes;
use common::*;
use grid_proto::sim::{CLIENT_HOST, Pair, RefPeer, SERVER_HOST};
use grid_proto::{
    CallError, CallId, CancelReason, Config, DisconnectReason, Event, Flags, HandlerId, IncomingId,
    Op, OpenStream, PingPayload, PongPayload, Request, STREAM_LIVENESS_TIMEOUT,
    STREAM_PING_INTERVAL, State, Timestamp,
};

/// Client opens an echo stream (InCapacity 1, OutCapacity 1, no deadline
/// unless given) and the server accepts it.
fn open(pair: &mut Pair, deadline: Option<std::time::Duration>) -> (CallId, IncomingId) {
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(
            now,
            OpenStream {
                handler: ECHO,
                subroute: None,
                payload: None,
                deadline: deadline.map(|d| now + d),
                capacities: None,
            },
        )
        .unwrap();
    pair.drive();
    let inc = IncomingId(id.0);
    assert!(pair.server.conn.incoming(inc).accept(pair.now, caps(1, 1)));
    pair.drive();
    pair.client.take_events();
    pair.server.take_events();
    (id, inc)
}

/// A connected pair where the chosen sides tolerate missing connection
/// pongs for an hour. (A one-way blackhole starves both sides of pongs:
/// one side's pings or the other's pongs are lost.)
fn patient(seed: u64, client: bool, server: bool) -> Pair {
    let mut c = Config::new(CLIENT_HOST, SERVER_HOST);
    c.seed = seed;
    let mut s = Config::new(SERVER_HOST, CLIENT_HOST);
    s.seed = seed + 1;
    // The test handlers' stream capacities, as `Pair::new` declares them.
    RefPeer::declare_capacities(&mut c.settings.capacities);
    RefPeer::declare_capacities(&mut s.settings.capacities);
    for (config, patient) in [(&mut c, client), (&mut s, server)] {
        if patient {
            config.settings.pong_timeout = secs(3600);
        }
    }
    let mut pair = Pair::with_configs(c, s);
    settle(&mut pair);
    pair
}

#[test]
fn connection_pings_every_10s_and_measures_rtt() {
    let mut pair = Pair::new(1);
    pair.latency = ms(50);
    settle(&mut pair);
    // The acceptor connected when the Connect arrived, one latency before
    // the dialer read the answer; each side ticks from its own start.
    let client_start = pair.now;
    let server_start = pair.now - ms(50);
    assert_eq!(pair.client.conn.rtt(), None);
    pair.advance(secs(60) + ms(200));
    let w = wire(&pair);
    for (from_client, start) in [(true, client_start), (false, server_start)] {
        let pings: Vec<_> = w
            .iter()
            .filter(|w| w.from_client == from_client && w.msg.op == Op::Ping)
            .collect();
        let times: Vec<_> = pings.iter().map(|p| p.at - start).collect();
        assert_eq!(
            times,
            (1..=6).map(|i| secs(10 * i)).collect::<Vec<_>>(),
            "pings from the {}",
            if from_client { "client" } else { "server" }
        );
        for p in &pings {
            // Never a CRC on a connection ping
            // (docs/protocol.md#quirk-q9-crc-exceptions); DeadlineMS 10000.
            assert_eq!((p.msg.mux_id, p.msg.seq, p.msg.deadline_ms), (0, 0, 10_000));
            assert_eq!(p.msg.flags, Flags::NONE);
            let t = PingPayload::decode(&p.msg.payload).unwrap().t;
            assert_eq!(t, pair_wall(&pair, p.at));
        }
        // Each ping is answered one latency later, with CRC and the ping's time.
        let pongs: Vec<_> = w
            .iter()
            .filter(|w| w.from_client != from_client && w.msg.op == Op::Pong)
            .collect();
        assert_eq!(pongs.len(), 6);
        for (ping, pong) in pings.iter().zip(&pongs) {
            assert_eq!(pong.at - ping.at, ms(50));
            assert_eq!(pong.msg.flags, Flags::CRC);
            assert_eq!(pong.msg.deadline_ms, 10_000, "echoed (quirk Q8)");
            let p = PongPayload::decode(&pong.msg.payload).unwrap();
            assert!(!p.not_found && p.error.is_none());
            assert_eq!(p.t, PingPayload::decode(&ping.msg.payload).unwrap().t);
        }
    }
    assert_eq!(pair.client.conn.rtt(), Some(ms(100)));
    assert_eq!(pair.server.conn.rtt(), Some(ms(100)));
    let stats = pair.client.conn.stats(pair.now);
    assert_eq!(stats.rtt, Some(ms(100)));
    assert_eq!(stats.last_pong_age, Some(ms(200) - ms(100)));
}

/// The pair's simulated wall clock at `at`.
fn pair_wall(pair: &Pair, at: std::time::Instant) -> Timestamp {
    pair.wall() - (pair.now - at)
}

/// The peer goes deaf: `noticing` side's pongs stop arriving; the other
/// side is configured to tolerate it, so exactly one side notices.
fn assert_pong_timeout(client_notices: bool) {
    let mut pair = patient(2, !client_notices, client_notices);
    let client_log = Log::default();
    pair.client.set_app(client_log.clone());
    let server_log = Log::default();
    pair.server.set_app(server_log.clone());
    let start = if client_notices {
        pair.now
    } else {
        pair.now - pair.latency
    };
    let (noticing, other) = if client_notices {
        (&client_log, &server_log)
    } else {
        (&server_log, &client_log)
    };
    pair.blackhole_to_client = true;
    // Ticks at 10 s and 20 s find the last pong 10 s and exactly 20 s old:
    // still fine. The tick at 30 s drops the connection.
    pair.advance(start + secs(30) - pair.now - NS);
    assert_eq!(pair.client.conn.state(), State::Connected);
    assert_eq!(pair.server.conn.state(), State::Connected);
    pair.advance(NS);
    assert_eq!(
        noticing.entries()[0],
        (
            start + secs(30),
            Event::Disconnected {
                reason: DisconnectReason::PongTimeout
            }
        )
    );
    assert!(other.entries().is_empty());
    pair.blackhole_to_client = false;
    pair.drive();
    // The other side sees its session end, then both reconnect. The
    // acceptor reads the dialer's immediate redial before the old
    // transport's end, so its session is replaced; the dialer just sees
    // its transport close.
    let reason = if client_notices {
        DisconnectReason::Replaced
    } else {
        DisconnectReason::TransportLost
    };
    assert_eq!(
        other.entries()[0],
        (
            start + secs(30) + pair.latency,
            Event::Disconnected { reason }
        )
    );
    assert_eq!(pair.client.conn.state(), State::Connected);
    assert_eq!(pair.server.conn.state(), State::Connected);
}

#[test]
fn dialer_without_pongs_for_over_20s_drops_the_connection() {
    assert_pong_timeout(true);
}

#[test]
fn acceptor_without_pongs_for_over_20s_drops_the_connection() {
    assert_pong_timeout(false);
}

#[test]
fn caller_pings_its_stream_every_15s_and_the_callee_answers() {
    let mut pair = scripted(3);
    let t0 = pair.now;
    let (id, inc) = open(&mut pair, None);
    let opened = t0;
    pair.advance(secs(120));
    assert!(pair.client.conn.is_live(id));
    assert!(pair.server.conn.is_live(inc));
    assert!(pair.client.take_events().is_empty());
    assert!(pair.server.take_events().is_empty());

    let w = wire(&pair);
    let pings: Vec<_> = w
        .iter()
        .filter(|w| w.msg.op == Op::Ping && w.msg.mux_id == id.0)
        .collect();
    assert_eq!(pings.len(), 8);
    for (i, p) in pings.iter().enumerate() {
        assert!(p.from_client);
        assert_eq!(p.at - opened, STREAM_PING_INTERVAL * (i as u32 + 1));
        // Sequenced like any caller message: ConnectMux took 0.
        assert_eq!(p.msg.seq, i as u32 + 1);
        assert_eq!(p.msg.flags, Flags::CRC);
        assert_eq!(p.msg.payload(), None, "Go's mux pings carry no payload");
    }
    let pongs: Vec<_> = w
        .iter()
        .filter(|w| w.msg.op == Op::Pong && w.msg.mux_id == id.0)
        .collect();
    assert_eq!(pongs.len(), 8);
    for (ping, pong) in pings.iter().zip(&pongs) {
        assert!(!pong.from_client);
        assert_eq!(pong.msg.seq, ping.msg.seq, "echoed");
        assert_eq!(pong.msg.flags, Flags::CRC);
        assert_eq!(
            PongPayload::decode(&pong.msg.payload).unwrap(),
            PongPayload {
                not_found: false,
                error: None,
                t: Timestamp::GO_ZERO
            }
        );
    }
}

#[test]
fn ping_for_a_stream_the_callee_lost_ends_it_as_remote_terminated() {
    let mut pair = scripted(4);
    let opened = pair.now;
    let (id, inc) = open(&mut pair, None);
    // The callee finishes, but its final messages are lost.
    pair.blackhole_to_client = true;
    pair.server.conn.incoming(inc).finish(Ok(()));
    pair.drive();
    pair.blackhole_to_client = false;
    let log = Log::default();
    pair.client.set_app(log.clone());
    // The first ping finds no stream: "not found" comes back.
    pair.advance(opened + STREAM_PING_INTERVAL + 2 * pair.latency - pair.now);
    assert_eq!(
        log.entries(),
        vec![(
            opened + STREAM_PING_INTERVAL + 2 * pair.latency,
            Event::StreamEnd {
                id,
                result: Err(CallError::RemoteTerminated)
            }
        )]
    );
    let pong = from_server(&pair).pop().unwrap();
    assert_eq!((pong.op, pong.mux_id, pong.seq), (Op::Pong, id.0, 1));
    assert!(PongPayload::decode(&pong.payload).unwrap().not_found);
}

#[test]
fn silent_callee_makes_the_caller_give_up_after_30s() {
    // Only stream liveness may act here, not the connection's pong check.
    let mut pair = patient(5, true, true);
    let log = Log::default();
    pair.client.set_app(log.clone());
    let opened = pair.now;
    let (id, inc) = open(&mut pair, None);
    // From now on nothing the server sends arrives: no pongs, no messages.
    pair.blackhole_to_client = true;
    // Liveness is checked at every ping tick; the last sign of life is the
    // opening (acks do not count). At 30 s it is exactly 30 s old: fine.
    pair.advance(opened + 3 * STREAM_PING_INTERVAL - pair.now - NS);
    assert!(pair.client.conn.is_live(id));
    pair.advance(NS);
    assert_eq!(
        log.entries(),
        vec![(
            opened + 3 * STREAM_PING_INTERVAL,
            Event::StreamEnd {
                id,
                result: Err(CallError::Unresponsive)
            }
        )]
    );
    assert!(3 * STREAM_PING_INTERVAL > STREAM_LIVENESS_TIMEOUT);
    pair.drive();
    // Pings at 15 s and 30 s took seqs 1 and 2; the cancel takes 3, then Go's
    // Seq 0 duplicate.
    assert_eq!(
        script(&from_client(&pair), id.0),
        vec![
            (Op::ConnectMux, 0),
            (Op::Ping, 1),
            (Op::Ping, 2),
            (Op::DisconnectServerMux, 3),
            (Op::DisconnectServerMux, 0),
        ]
    );
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::CallerCancelled
        }]
    );
    assert_eq!(pair.client.conn.state(), State::Connected);
}

#[test]
fn callee_reaps_a_stream_whose_caller_stopped_pinging() {
    let mut pair = scripted(6);
    let (id, inc) = open(&mut pair, None);
    let accepted = pair.now - pair.latency;
    let server_log = Log::default();
    pair.server.set_app(server_log.clone());
    // The caller abandons the stream and its cancellation is lost.
    pair.blackhole_to_server = true;
    assert!(pair.client.conn.call(id).cancel());
    pair.drive();
    pair.blackhole_to_server = false;
    assert!(wire(&pair).iter().any(|w| w.dropped));

    // Idle checks every 15 s from acceptance; at 60 s the last ping is
    // exactly 60 s old (fine), at 75 s it is too old
    // (docs/protocol.md#quirk-q17-idle-resolution).
    let reaped = accepted + secs(75);
    pair.advance(reaped - pair.now - NS);
    assert!(pair.server.conn.is_live(inc));
    pair.advance(NS);
    assert_eq!(
        server_log.entries(),
        vec![(
            reaped,
            Event::IncomingCancelled {
                id: inc,
                reason: CancelReason::Idle
            }
        )]
    );
    pair.drive();
    let tail = script(&from_server(&pair), id.0);
    assert_eq!(tail.last(), Some(&(Op::DisconnectClientMux, 0)));
    // Everything else survived.
    assert_eq!(pair.client.conn.state(), State::Connected);
    assert_eq!(pair.server.conn.stats(pair.now).timers, 0);
}

#[test]
fn stream_ping_before_the_callee_accepts_keeps_the_stream() {
    let mut pair = scripted(7);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO))
        .unwrap();
    // The handler takes 20 s to be ready: the first mux ping (15 s)
    // arrives before the ack (Go acks before starting the handler, but a
    // Rust application may accept late).
    pair.advance(secs(20));
    let inc = IncomingId(id.0);
    assert!(pair.server.conn.is_live(inc));
    assert!(pair.server.conn.incoming(inc).accept(pair.now, caps(1, 1)));
    pair.advance(secs(60));
    assert!(pair.client.conn.is_live(id), "{:#?}", pair.client.events);
    let pongs: Vec<_> = from_server(&pair)
        .into_iter()
        .filter(|m| m.op == Op::Pong && m.mux_id == id.0)
        .collect();
    assert!(!pongs.is_empty());
    for p in pongs {
        let p = PongPayload::decode(&p.payload).unwrap();
        assert!(!p.not_found && p.error.is_none(), "{p:?}");
    }
    pair.client
        .conn
        .call(id)
        .send(b"x".as_slice().into())
        .unwrap();
    pair.drive();
    assert!(
        pair.server
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::IncomingMessage { .. }))
    );
}

#[test]
fn mux_ping_out_of_sequence_is_answered_with_the_error() {
    let mut pair = scripted(8);
    let (id, inc) = open(&mut pair, None);
    pair.inject_to_server(forge(Op::Ping, id.0, 9).to_bytes());
    pair.drive();
    let text = "receive sequence number mismatch. want 1, got 9";
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::ProtocolError(text.into())
        }]
    );
    // Error message, teardown, then the pong carrying the same text.
    let s = script(&from_server(&pair), id.0);
    assert_eq!(
        s[1..],
        [
            (Op::MuxServerMsg, 1),
            (Op::DisconnectClientMux, 0),
            (Op::Pong, 9)
        ]
    );
    let pong = from_server(&pair).pop().unwrap();
    assert_eq!(
        PongPayload::decode(&pong.payload).unwrap().error.as_deref(),
        Some(text)
    );
}

#[test]
fn caller_stream_deadline_cancels_at_the_exact_instant() {
    let mut pair = with_ref_peer(9);
    let log = Log::default();
    pair.client.set_app(log.clone());
    let t0 = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(t0, OpenStream::new(ECHO).deadline(t0 + secs(5)))
        .unwrap();
    pair.advance(secs(5) - NS);
    assert!(pair.client.conn.is_live(id));
    pair.advance(NS);
    assert_eq!(
        log.entries(),
        vec![(
            t0 + secs(5),
            Event::StreamEnd {
                id,
                result: Err(CallError::DeadlineExceeded)
            }
        )]
    );
    pair.drive();
    let c = from_client(&pair);
    assert_eq!(c[0].deadline_ms, 5000);
    // No pings for a stream with a deadline of 15 s or less.
    assert_eq!(
        script(&c, id.0),
        vec![
            (Op::ConnectMux, 0),
            (Op::DisconnectServerMux, 1),
            (Op::DisconnectServerMux, 0)
        ]
    );
    // The callee's own copy of the deadline fired as the cancel arrived;
    // either way it ended exactly once.
    let ended: Vec<_> = pair
        .server
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::IncomingCancelled { .. }))
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(pair.server.conn.stats(pair.now).incoming_streams, 0);
    assert_eq!(pair.server.conn.stats(pair.now).timers, 0);
}

#[test]
fn callee_stream_deadline_ends_the_handler_by_itself() {
    let mut pair = scripted(10);
    let t0 = pair.now;
    let (id, inc) = open(&mut pair, Some(secs(5)));
    let arrived = t0 + pair.latency;
    let server_log = Log::default();
    pair.server.set_app(server_log.clone());
    // The caller's own cancellation is lost: only the callee's timer acts.
    pair.blackhole_to_server = true;
    pair.advance(secs(6));
    assert_eq!(
        server_log.entries(),
        vec![(
            arrived + secs(5),
            Event::IncomingCancelled {
                id: inc,
                reason: CancelReason::DeadlineExceeded
            }
        )]
    );
    // Abnormal end: a teardown without any EOF message
    // (docs/protocol.md#streams-cancellation).
    assert_eq!(
        script(&from_server(&pair), id.0),
        vec![(Op::AckMux, 0), (Op::DisconnectClientMux, 0)]
    );
    assert_eq!(pair.server.conn.stats(pair.now).timers, 0);
}

#[test]
fn each_call_arms_only_the_timers_it_needs() {
    let mut pair = scripted(12);
    let now = pair.now;
    let timers = |p: &Pair| {
        (
            p.client.conn.stats(p.now).timers,
            p.server.conn.stats(p.now).timers,
        )
    };
    assert_eq!(timers(&pair), (0, 0));
    // Request: the caller's deadline and the callee's copy.
    let req = pair
        .client
        .conn
        .request(now, Request::new(HandlerId::TEST, Bytes::new()))
        .unwrap();
    pair.drive();
    assert_eq!(timers(&pair), (1, 1));
    pair.server
        .conn
        .incoming(IncomingId(req.0))
        .respond(Ok(None));
    pair.drive();
    assert_eq!(timers(&pair), (0, 0));

    // Streams: pings iff no deadline or DeadlineMS > 15000 (caller); idle
    // checks iff DeadlineMS is 0 or > 60000 (callee).
    let cases = [
        (None, (1, 1)),
        (Some(secs(15)), (1, 1)),
        (Some(secs(15) + ms(1)), (2, 1)),
        (Some(secs(60)), (2, 1)),
        (Some(secs(60) + ms(1)), (2, 2)),
    ];
    for (deadline, want) in cases {
        let (id, _inc) = open(&mut pair, deadline);
        assert_eq!(timers(&pair), want, "deadline {deadline:?}");
        pair.client.conn.call(id).cancel();
        pair.drive();
        assert_eq!(timers(&pair), (0, 0));
    }
}
