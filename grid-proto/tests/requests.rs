//! Single requests (docs/protocol.md#requests): echo, payload presence, remote errors,
//! unknown and invalid handlers, deadlines on the wire and locally, late
//! responses, cancellation. Where the Go transcripts recorded the same
//! exchange, the frames must match them byte for byte.

mod common;

use bytes::Bytes;
use common::*;
use grid_proto::sim::{Pair, REF_SUB};
use grid_proto::{
    CallError, CancelReason, Event, Flags, HandlerId, IncomingId, Message, MuxConnectError, Op,
    State, SubrouteId,
};

/// Decodes one frame of a transcript.
fn go(hex_frame: &str) -> Bytes {
    Bytes::from(hex::decode(hex_frame).unwrap())
}

/// Makes one request on a fresh pair with the reference handlers and checks
/// that the request and its answer are exactly the frames Go sent.
fn assert_like_go(
    handler: HandlerId,
    subroute: Option<SubrouteId>,
    payload: &'static [u8],
    go_request: &str,
    go_answer: &str,
) -> Result<Option<Bytes>, CallError> {
    let mut pair = with_ref_peer(1);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .request(now, handler, subroute, Bytes::from_static(payload), None)
        .unwrap();
    assert_eq!(id.0, 1, "Go numbers the first call 1");
    pair.drive();
    let frames: Vec<_> = pair.sent.iter().map(|s| s.frame.clone()).collect();
    assert_eq!(frames, vec![go(go_request), go(go_answer)]);
    let events = pair.client.take_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    match &events[0] {
        Event::Response { id: got, result } if *got == id => result.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn echo_request_matches_go() {
    let result = assert_like_go(
        HandlerId::TEST,
        None,
        b"Hello Grid World!",
        "970100cdea604e0e03c41148656c6c6f204772696420576f726c6421d8a27da3",
        "97010000000f03c41148656c6c6f204772696420576f726c642120556bac",
    );
    assert_eq!(result, Ok(Some(Bytes::from_static(b"Hello Grid World!"))));
}

#[test]
fn empty_request_travels_absent_and_echo_answers_present_empty() {
    // docs/protocol.md#quirk-q7-request-never-zero: no PAYLOAD_IS_ZERO on a
    // request (flags CRC|EOF only), so the
    // handler sees no payload; Go's echo answers with a present, empty one.
    let result = assert_like_go(
        HandlerId::TEST,
        None,
        b"",
        "970100cdea604e0e03c4009c077847",
        "97010000000f13c40067c777f0",
    );
    assert_eq!(result, Ok(Some(Bytes::new())));

    let mut pair = scripted(2);
    let now = pair.now;
    pair.client
        .conn
        .request(now, HandlerId::TEST, None, Bytes::new(), None)
        .unwrap();
    pair.drive();
    let ev = pair.server.take_events();
    assert!(
        matches!(&ev[..], [Event::IncomingRequest { payload: None, .. }]),
        "{ev:#?}"
    );
}

#[test]
fn absent_and_empty_responses_stay_distinct() {
    let mut pair = scripted(3);
    let now = pair.now;
    let absent = pair
        .client
        .conn
        .request(now, HandlerId::TEST, None, Bytes::from_static(b"a"), None)
        .unwrap();
    let empty = pair
        .client
        .conn
        .request(now, HandlerId::TEST, None, Bytes::from_static(b"b"), None)
        .unwrap();
    pair.drive();
    assert_eq!(pair.server.take_events().len(), 2);
    let now = pair.now;
    assert!(
        pair.server
            .conn
            .respond(now, IncomingId(absent.0), Ok(None))
    );
    assert!(
        pair.server
            .conn
            .respond(now, IncomingId(empty.0), Ok(Some(Bytes::new())))
    );
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::Response {
                id: absent,
                result: Ok(None)
            },
            Event::Response {
                id: empty,
                result: Ok(Some(Bytes::new()))
            },
        ]
    );
    let answers = from_server(&pair);
    assert_eq!(answers[0].flags, Flags::CRC | Flags::EOF);
    assert_eq!(
        answers[1].flags,
        Flags::CRC | Flags::EOF | Flags::PAYLOAD_IS_ZERO
    );
}

#[test]
fn remote_error_matches_go() {
    let result = assert_like_go(
        HandlerId::TEST2,
        None,
        b"refpeer: this is a remote error",
        "970100cdea604f0e03c41f726566706565723a207468697320697320612072656d6f7465206572726f72aec772e6",
        "97010000000f0bc41f726566706565723a207468697320697320612072656d6f7465206572726f72493291a4",
    );
    assert_eq!(
        result,
        Err(CallError::Remote("refpeer: this is a remote error".into()))
    );
}

#[test]
fn unknown_handler_is_refused_with_gos_text() {
    // The MuxConnectError echoes the request's deadline, handler and flags
    // (docs/protocol.md#quirk-q8-replies-echo-trigger).
    let result = assert_like_go(
        HandlerId(77),
        None,
        b"x",
        "970100cdea604d0e03c4017836a1a206",
        "970100cdea604d0603c42e81a54572726f72d925496e76616c69642048616e646c657220666f7220747970653a20436865636b5061727473334ede950f",
    );
    assert_eq!(
        result,
        Err(CallError::Refused(
            "Invalid Handler for type: CheckParts3".into()
        ))
    );
}

#[test]
fn subroute_request_matches_go() {
    let result = assert_like_go(
        HandlerId::TEST,
        Some(SubrouteId::new(HandlerId::TEST, REF_SUB)),
        b"hello",
        "970100cdea604e0e23c40568656c6c6f4e004a2d2154f90b9d2e1b7d300c54be92b3c4897fa9efaf1cf894bde8382fa1d35068e9",
        "97010000000f03c4097375623a68656c6c6f1ea4771a",
    );
    assert_eq!(result, Ok(Some(Bytes::from_static(b"sub:hello"))));
}

#[test]
fn invalid_handler_ids_are_refused_locally() {
    let mut pair = scripted(4);
    let now = pair.now;
    for h in [0, 80, 255] {
        assert_eq!(
            pair.client
                .conn
                .request(now, HandlerId(h), None, Bytes::new(), None),
            Err(CallError::UnknownHandler { handler: h })
        );
        assert_eq!(
            pair.client
                .conn
                .open_stream(now, HandlerId(h), None, None, None, Some(caps(1, 1))),
            Err(CallError::UnknownHandler { handler: h })
        );
    }
    // A valid id whose stream capacities nobody configured.
    assert_eq!(
        pair.client
            .conn
            .open_stream(now, HandlerId(9), None, None, None, None),
        Err(CallError::UnknownHandler { handler: 9 })
    );
    pair.drive();
    assert!(pair.sent.is_empty(), "refused calls send nothing");
    assert_eq!(pair.client.conn.stats(pair.now).outgoing_requests, 0);
}

#[test]
fn callee_refuses_invalid_handler_ids_from_the_wire() {
    let mut pair = scripted(5);
    for (mux, h) in [(40, 0), (41, 80)] {
        let mut req = forge(Op::Request, mux, 0);
        req.handler = HandlerId(h);
        req.deadline_ms = 1234;
        req.flags |= Flags::EOF;
        pair.inject_to_server(req.to_bytes());
    }
    pair.drive();
    assert!(pair.server.take_events().is_empty());
    let replies = from_server(&pair);
    assert_eq!(replies.len(), 2);
    for (reply, (mux, h)) in replies.iter().zip([(40, 0), (41, 80)]) {
        assert_eq!(reply.op, Op::MuxConnectError);
        assert_eq!(
            (reply.mux_id, reply.seq, reply.deadline_ms, reply.handler),
            (mux, 0, 1234, HandlerId(h))
        );
        assert_eq!(reply.flags, Flags::CRC | Flags::EOF);
        assert_eq!(
            MuxConnectError::decode(&reply.payload).unwrap().error,
            "Invalid Handler"
        );
    }
}

#[test]
fn calls_are_refused_while_not_connected() {
    let mut pair = Pair::new(6);
    pair.auto_dial = false;
    pair.drive();
    let now = pair.now;
    for conn in [&mut pair.client.conn, &mut pair.server.conn] {
        assert_eq!(
            conn.request(now, HandlerId::TEST, None, Bytes::new(), None),
            Err(CallError::NotConnected)
        );
        assert_eq!(
            conn.open_stream(now, HandlerId::TEST, None, None, None, None),
            Err(CallError::NotConnected)
        );
    }
    // And again after the session is lost, before the redial completes.
    // (The dial nobody made counts as failed: the next one follows.)
    pair.auto_dial = true;
    pair.client
        .conn
        .handle_dial_failed(now, grid_proto::DialFailure::Unreachable("refused".into()));
    pair.advance(secs(3));
    assert_eq!(pair.client.conn.state(), State::Connected);
    pair.auto_dial = false;
    pair.disconnect();
    let now = pair.now;
    assert_eq!(pair.client.conn.state(), State::ConnectionError);
    assert_eq!(
        pair.client
            .conn
            .request(now, HandlerId::TEST, None, Bytes::new(), None),
        Err(CallError::NotConnected)
    );
    assert_eq!(pair.client.conn.stats(now).outgoing_requests, 0);
}

#[test]
fn deadline_ms_carries_the_remaining_time() {
    let mut pair = scripted(7);
    let now = pair.now;
    let conn = &mut pair.client.conn;
    conn.request(now, HandlerId::TEST, None, Bytes::new(), None)
        .unwrap();
    conn.request(
        now,
        HandlerId::TEST,
        None,
        Bytes::new(),
        Some(now + ms(1234)),
    )
    .unwrap();
    // Whole milliseconds, truncated.
    conn.request(
        now,
        HandlerId::TEST,
        None,
        Bytes::new(),
        Some(now + ms(2) + NS * 999_999),
    )
    .unwrap();
    // Capped at u32::MAX ms (about 49.7 days).
    conn.request(
        now,
        HandlerId::TEST,
        None,
        Bytes::new(),
        Some(now + secs(60 * 86_400)),
    )
    .unwrap();
    // Less than a millisecond left fails at once, locally.
    for late in [now + NS * 999_999, now] {
        assert_eq!(
            conn.request(now, HandlerId::TEST, None, Bytes::new(), Some(late)),
            Err(CallError::DeadlineExceeded)
        );
    }
    pair.drive();
    let sent: Vec<u32> = from_client(&pair).iter().map(|m| m.deadline_ms).collect();
    assert_eq!(sent, vec![60_000, 1234, 2, u32::MAX]);

    // The callee's deadline is the arrival time plus DeadlineMS.
    let arrival = pair.now;
    let deadlines: Vec<_> = pair
        .server
        .take_events()
        .into_iter()
        .map(|e| match e {
            Event::IncomingRequest { deadline, .. } => deadline.unwrap() - arrival,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        deadlines,
        vec![ms(60_000), ms(1234), ms(2), ms(u64::from(u32::MAX))]
    );
}

#[test]
fn unanswered_request_fails_exactly_at_its_deadline() {
    let mut pair = scripted(8);
    let log = Log::default();
    pair.client.set_app(log.clone());
    let t0 = pair.now;
    let id = pair
        .client
        .conn
        .request(
            t0,
            HandlerId::TEST,
            None,
            Bytes::from_static(b"?"),
            Some(t0 + secs(2)),
        )
        .unwrap();
    pair.advance(secs(2) - NS);
    assert!(log.entries().is_empty());
    pair.advance(NS);
    assert_eq!(
        log.entries(),
        vec![(
            t0 + secs(2),
            Event::Response {
                id,
                result: Err(CallError::DeadlineExceeded)
            }
        )]
    );
    // The callee's copy of the deadline ends its side one latency later; a
    // Go callee sends nothing for it, and neither does the caller.
    pair.advance(pair.latency);
    let server = pair.server.take_events();
    assert_eq!(
        server.last(),
        Some(&Event::IncomingCancelled {
            id: IncomingId(id.0),
            reason: CancelReason::DeadlineExceeded
        })
    );
    assert!(
        !pair
            .server
            .conn
            .respond(pair.now, IncomingId(id.0), Ok(None))
    );
    pair.drive();
    let mux_traffic: Vec<_> = wire(&pair)
        .into_iter()
        .filter(|w| w.msg.mux_id == id.0)
        .map(|w| w.msg.op)
        .collect();
    assert_eq!(mux_traffic, vec![Op::Request]);
    assert_eq!(pair.client.conn.stats(pair.now).timers, 0);
    assert_eq!(pair.server.conn.stats(pair.now).timers, 0);
}

#[test]
fn request_without_deadline_times_out_after_60s() {
    let mut pair = scripted(9);
    let log = Log::default();
    pair.client.set_app(log.clone());
    let t0 = pair.now;
    let id = pair
        .client
        .conn
        .request(t0, HandlerId::TEST, None, Bytes::new(), None)
        .unwrap();
    pair.advance(secs(61));
    let failed = log.times(|e| {
        *e == Event::Response {
            id,
            result: Err(CallError::DeadlineExceeded),
        }
    });
    assert_eq!(failed, vec![t0 + secs(60)]);
    assert_eq!(pair.client.conn.state(), State::Connected);
}

#[test]
fn late_response_is_dropped_without_harm() {
    let mut pair = Pair::new(10);
    pair.latency = ms(100);
    settle(&mut pair);
    let t0 = pair.now;
    let id = pair
        .client
        .conn
        .request(
            t0,
            HandlerId::TEST,
            None,
            Bytes::from_static(b"slow"),
            Some(t0 + secs(1)),
        )
        .unwrap();
    pair.advance(secs(1));
    assert_eq!(
        pair.client.take_events(),
        vec![Event::Response {
            id,
            result: Err(CallError::DeadlineExceeded)
        }]
    );
    // The callee is still inside its own deadline (it started 100 ms later)
    // and answers; the answer reaches a caller that has given up.
    assert!(pair.server.conn.is_incoming_live(IncomingId(id.0)));
    let now = pair.now;
    assert!(pair.server.conn.respond(
        now,
        IncomingId(id.0),
        Ok(Some(Bytes::from_static(b"too late")))
    ));
    pair.drive();
    assert!(from_server(&pair).iter().any(|m| m.op == Op::Response));
    assert!(pair.client.take_events().is_empty());
    assert_eq!(pair.client.conn.state(), State::Connected);
    // Nothing was sent back for it, and the connection still works.
    assert_eq!(script(&from_client(&pair), id.0), vec![(Op::Request, 0)]);
    let now = pair.now;
    let next = pair
        .client
        .conn
        .request(now, HandlerId::TEST, None, Bytes::new(), None)
        .unwrap();
    pair.drive();
    assert_eq!(pair.server.take_events().len(), 2);
    assert!(pair.client.conn.is_live(next));
}

#[test]
fn cancelled_request_tells_the_callee() {
    let mut pair = scripted(11);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .request(now, HandlerId::TEST, None, Bytes::from_static(b"x"), None)
        .unwrap();
    pair.drive();
    assert_eq!(pair.server.take_events().len(), 1);
    assert!(pair.client.conn.cancel(pair.now, id));
    assert!(!pair.client.conn.is_live(id));
    pair.drive();
    // No event for a call the application cancelled itself.
    assert!(pair.client.take_events().is_empty());
    // Beyond Go: a DisconnectServerMux (Seq 0) reaches a Rust callee.
    let cancel: Vec<Message> = from_client(&pair)
        .into_iter()
        .filter(|m| m.op == Op::DisconnectServerMux)
        .collect();
    assert_eq!(cancel.len(), 1);
    assert_eq!(
        (cancel[0].mux_id, cancel[0].seq, cancel[0].flags),
        (id.0, 0, Flags::CRC)
    );
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCancelled {
            id: IncomingId(id.0),
            reason: CancelReason::CallerCancelled
        }]
    );
    let now = pair.now;
    assert!(!pair.server.conn.respond(now, IncomingId(id.0), Ok(None)));
    assert!(!pair.client.conn.cancel(now, id), "already gone");
    pair.drive();
    assert!(pair.client.take_events().is_empty());
    assert_eq!(pair.client.conn.stats(now).timers, 0);
    assert_eq!(pair.server.conn.stats(now).incoming_requests, 0);
}

#[test]
fn concurrent_requests_share_frames_and_each_gets_its_own_answer() {
    let mut pair = scripted(12);
    let now = pair.now;
    let ids: Vec<_> = (0..3u8)
        .map(|i| {
            pair.client
                .conn
                .request(now, HandlerId::TEST, None, Bytes::from(vec![i; 3]), None)
                .unwrap()
        })
        .collect();
    pair.drive();
    // One merged frame carried all three requests.
    assert_eq!(pair.sent.len(), 1);
    assert!(wire(&pair).iter().all(|w| w.merged));
    // The callee answers in reverse order.
    let now = pair.now;
    for id in ids.iter().rev() {
        let body = Bytes::from(format!("answer {}", id.0));
        assert!(
            pair.server
                .conn
                .respond(now, IncomingId(id.0), Ok(Some(body)))
        );
    }
    pair.drive();
    let want: Vec<Event> = ids
        .iter()
        .rev()
        .map(|id| Event::Response {
            id: *id,
            result: Ok(Some(Bytes::from(format!("answer {}", id.0)))),
        })
        .collect();
    assert_eq!(pair.client.take_events(), want);
}
