//! Streams (docs/protocol.md#streams): opening and ack, sequence numbers per
//! direction, credit flow control, EOF each way, errors, cancellation each
//! way, sequence and window violations, stall detection.
//!
//! Unless a test says otherwise, the server runs no application: the test
//! plays the handler with the server connection's commands.

mod common;

use bytes::Bytes;
use common::*;
use grid_proto::sim::{Pair, REF_SUB};
use grid_proto::{
    CallError, CallId, CancelReason, Event, Flags, HandlerId, IncomingId, Message, MuxConnectError,
    Op, OpenStream, Request, SendError, SubrouteId,
};

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Client opens an echo stream with the given windows and the server
/// accepts it with the same ones. Events are taken; frames stay recorded.
fn open(pair: &mut Pair, in_cap: u32, out_cap: u32) -> (CallId, IncomingId) {
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(
            now,
            OpenStream::new(ECHO)
                .payload(b("init"))
                .capacities(caps(in_cap, out_cap)),
        )
        .unwrap();
    pair.drive();
    let inc = IncomingId(id.0);
    let now = pair.now;
    assert!(
        pair.server
            .conn
            .incoming(inc)
            .accept(now, caps(in_cap, out_cap))
    );
    pair.drive();
    pair.client.take_events();
    pair.server.take_events();
    (id, inc)
}

#[test]
fn stream_opens_with_connect_mux_and_ack() {
    let mut pair = scripted(1);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(
            now,
            OpenStream::new(ECHO)
                .payload(b("init"))
                .capacities(caps(2, 1)),
        )
        .unwrap();
    // No window before the ack.
    assert_eq!(pair.client.conn.credit(id), Some(0));
    assert_eq!(
        pair.client.conn.call(id).send(b("early")),
        Err(SendError::NoCredit)
    );
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingStream {
            id: IncomingId(id.0),
            handler: ECHO,
            subroute: None,
            payload: Some(b("init")),
            deadline: None,
        }]
    );
    assert!(pair.client.take_events().is_empty());
    let now = pair.now;
    assert!(
        pair.server
            .conn
            .incoming(IncomingId(id.0))
            .accept(now, caps(2, 1))
    );
    assert!(
        !pair
            .server
            .conn
            .incoming(IncomingId(id.0))
            .accept(now, caps(2, 1)),
        "accepted once only"
    );
    pair.drive();
    // The ack opens the window to the callee's InCapacity; the application
    // that was refused is told it may send.
    assert_eq!(pair.client.take_events(), vec![Event::StreamCredit { id }]);
    assert_eq!(pair.client.conn.credit(id), Some(2));
    assert_eq!(pair.server.conn.credit(IncomingId(id.0)), Some(1));

    let w = wire(&pair);
    assert_eq!(w.len(), 2);
    let (connect, ack) = (&w[0].msg, &w[1].msg);
    assert_eq!(
        (connect.op, connect.mux_id, connect.seq, connect.deadline_ms),
        (Op::ConnectMux, id.0, 0, 0)
    );
    assert_eq!(connect.handler, ECHO);
    assert_eq!(connect.flags, Flags::CRC, "the stream has input: no EOF");
    assert_eq!(connect.payload(), Some(&b("init")));
    assert_eq!((ack.op, ack.mux_id, ack.seq), (Op::AckMux, id.0, 0));
    assert_eq!(ack.flags, Flags::CRC);
    assert_eq!(ack.payload(), None);
}

#[test]
fn open_stream_payload_may_be_absent_empty_or_present() {
    let mut pair = scripted(2);
    let now = pair.now;
    for payload in [None, Some(Bytes::new()), Some(b("p"))] {
        pair.client
            .conn
            .open_stream(
                now,
                OpenStream {
                    handler: ECHO,
                    subroute: None,
                    payload,
                    deadline: None,
                    capacities: None,
                },
            )
            .unwrap();
    }
    pair.drive();
    let got: Vec<Option<Bytes>> = pair
        .server
        .take_events()
        .into_iter()
        .map(|e| match e {
            Event::IncomingStream { payload, .. } => payload,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, vec![None, Some(Bytes::new()), Some(b("p"))]);
    let flags: Vec<Flags> = from_client(&pair).iter().map(|m| m.flags).collect();
    assert_eq!(
        flags,
        vec![Flags::CRC, Flags::CRC | Flags::PAYLOAD_IS_ZERO, Flags::CRC]
    );
}

/// A two-way stream with InCapacity 2, OutCapacity 1, step by step
/// (docs/protocol.md#streams-flow-control).
#[test]
fn sequence_numbers_count_per_direction() {
    let mut pair = scripted(3);
    let (id, inc) = open(&mut pair, 2, 1);
    let client = &mut pair.client.conn;
    client.call(id).send(b("req1")).unwrap();
    client.call(id).send(b("req2")).unwrap();
    pair.drive();
    let server = &mut pair.server.conn;
    server.incoming(inc).consumed();
    server.incoming(inc).send(b("resp1")).unwrap();
    pair.drive();
    pair.client.conn.call(id).consumed();
    pair.server.conn.incoming(inc).consumed();
    pair.drive();
    pair.client.conn.call(id).close().unwrap();
    pair.server.conn.incoming(inc).send(b("resp2")).unwrap();
    pair.drive();
    pair.client.conn.call(id).consumed();
    assert!(pair.server.conn.incoming(inc).finish(Ok(())));
    pair.drive();

    let c = from_client(&pair);
    let s = from_server(&pair);
    assert_eq!(
        script(&c, id.0),
        vec![
            (Op::ConnectMux, 0),
            (Op::MuxClientMsg, 1),
            (Op::MuxClientMsg, 2),
            (Op::UnblockSrvMux, 3),
            (Op::MuxClientMsg, 4),
            (Op::UnblockSrvMux, 5),
        ]
    );
    assert_eq!(
        script(&s, id.0),
        vec![
            (Op::AckMux, 0),
            (Op::UnblockClMux, 1),
            (Op::MuxServerMsg, 2),
            (Op::UnblockClMux, 3),
            (Op::MuxServerMsg, 4),
            (Op::MuxServerMsg, 5),
            (Op::DisconnectClientMux, 0),
        ]
    );
    // The caller's EOF and the callee's final message are flagged, absent.
    let eof_in = c.iter().find(|m| m.op == Op::MuxClientMsg && m.seq == 4);
    assert_eq!(eof_in.unwrap().flags, Flags::CRC | Flags::EOF);
    assert_eq!(eof_in.unwrap().payload(), None);
    let eof_out = s.iter().find(|m| m.op == Op::MuxServerMsg && m.seq == 5);
    assert_eq!(eof_out.unwrap().flags, Flags::CRC | Flags::EOF);
    assert_eq!(eof_out.unwrap().payload(), None);
    assert!(c.iter().chain(&s).all(|m| m.flags.contains(Flags::CRC)));

    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::StreamMessage {
                id,
                payload: b("resp1")
            },
            Event::StreamMessage {
                id,
                payload: b("resp2")
            },
            Event::StreamEnd { id, result: Ok(()) },
        ]
    );
    assert_eq!(
        pair.server.take_events(),
        vec![
            Event::IncomingMessage {
                id: inc,
                payload: Some(b("req1"))
            },
            Event::IncomingMessage {
                id: inc,
                payload: Some(b("req2"))
            },
            Event::IncomingInputEnd { id: inc },
        ]
    );
    assert!(!pair.client.conn.is_live(id));
    assert!(!pair.server.conn.is_live(inc));
}

#[test]
fn caller_with_window_2_sends_3_messages_and_the_third_waits_for_credit() {
    let mut pair = scripted(4);
    let (id, inc) = open(&mut pair, 2, 1);
    let client = &mut pair.client.conn;
    assert_eq!(client.credit(id), Some(2));
    client.call(id).send(b("m1")).unwrap();
    client.call(id).send(b("m2")).unwrap();
    assert_eq!(client.credit(id), Some(0));
    assert_eq!(client.call(id).send(b("m3")), Err(SendError::NoCredit));
    pair.drive();
    assert!(pair.client.take_events().is_empty(), "no credit yet");
    assert_eq!(pair.server.take_events().len(), 2);

    // The handler takes m1: one credit comes back and the caller is told.
    pair.server.conn.incoming(inc).consumed();
    pair.drive();
    assert_eq!(pair.client.take_events(), vec![Event::StreamCredit { id }]);
    assert_eq!(pair.client.conn.credit(id), Some(1));
    pair.client.conn.call(id).send(b("m3")).unwrap();
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingMessage {
            id: inc,
            payload: Some(b("m3"))
        }]
    );
    // A credit the caller was not waiting for raises no event.
    pair.server.conn.incoming(inc).consumed();
    pair.drive();
    assert!(pair.client.take_events().is_empty());
    assert_eq!(pair.client.conn.credit(id), Some(1));
    // Consuming more than was delivered returns nothing.
    pair.server.conn.incoming(inc).consumed();
    pair.server.conn.incoming(inc).consumed();
    pair.drive();
    assert_eq!(pair.client.conn.credit(id), Some(2));
    let unblocks = from_server(&pair)
        .iter()
        .filter(|m| m.op == Op::UnblockClMux)
        .count();
    assert_eq!(unblocks, 3, "one per message taken, never more");
}

#[test]
fn caller_credit_never_exceeds_the_window() {
    let mut pair = scripted(5);
    let (id, _inc) = open(&mut pair, 2, 1);
    // A misbehaving callee hands back credits it never took (Go logs
    // "output unblocked overflow" and drops them). Its next seq is 1.
    for seq in 1..4 {
        pair.inject_to_client(forge(Op::UnblockClMux, id.0, seq).to_bytes());
    }
    pair.drive();
    assert_eq!(pair.client.conn.credit(id), Some(2));
    assert!(pair.client.conn.is_live(id));
}

#[test]
fn callee_credit_never_exceeds_the_out_capacity() {
    let mut pair = scripted(27);
    let (id, inc) = open(&mut pair, 1, 2);
    // A misbehaving caller hands back credits for messages it never got.
    // Its next seq is 1 (ConnectMux took 0).
    for seq in 1..4 {
        pair.inject_to_server(forge(Op::UnblockSrvMux, id.0, seq).to_bytes());
    }
    pair.drive();
    assert_eq!(pair.server.conn.credit(inc), Some(2));
    pair.server.conn.incoming(inc).send(b("1")).unwrap();
    pair.server.conn.incoming(inc).send(b("2")).unwrap();
    assert_eq!(
        pair.server.conn.incoming(inc).send(b("3")),
        Err(SendError::NoCredit)
    );
}

#[test]
fn callee_with_out_capacity_2_sends_3_messages_and_the_final_eof_needs_a_credit() {
    let mut pair = scripted(6);
    let (id, inc) = open(&mut pair, 1, 2);
    let server = &mut pair.server.conn;
    assert_eq!(server.credit(inc), Some(2));
    server.incoming(inc).send(b("r1")).unwrap();
    server.incoming(inc).send(b("r2")).unwrap();
    assert_eq!(server.incoming(inc).send(b("r3")), Err(SendError::NoCredit));
    pair.drive();
    assert_eq!(pair.client.take_events().len(), 2);
    assert!(pair.server.take_events().is_empty());

    pair.client.conn.call(id).consumed();
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCredit { id: inc }]
    );
    pair.server.conn.incoming(inc).send(b("r3")).unwrap();
    // Out of credit again: the handler's result waits.
    assert!(pair.server.conn.incoming(inc).finish(Ok(())));
    assert_eq!(pair.server.conn.credit(inc), Some(0));
    assert_eq!(
        pair.server.conn.incoming(inc).send(b("more")),
        Err(SendError::Closed)
    );
    assert!(
        !pair.server.conn.incoming(inc).finish(Ok(())),
        "finished once"
    );
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamMessage {
            id,
            payload: b("r3")
        }]
    );
    assert!(
        !from_server(&pair)
            .iter()
            .any(|m| m.op == Op::MuxServerMsg && m.flags.contains(Flags::EOF)),
        "EOF must wait for a credit"
    );
    assert!(pair.client.conn.is_live(id));
    // One message consumed: the EOF goes out and the stream ends.
    pair.client.conn.call(id).consumed();
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd { id, result: Ok(()) }]
    );
    assert!(!pair.server.conn.is_live(inc));
    let s = script(&from_server(&pair), id.0);
    assert_eq!(
        &s[s.len() - 2..],
        &[(Op::MuxServerMsg, 4), (Op::DisconnectClientMux, 0)]
    );
}

#[test]
fn caller_eof_needs_no_credit_and_closes_the_input() {
    let mut pair = scripted(7);
    let (id, inc) = open(&mut pair, 1, 1);
    pair.client.conn.call(id).send(b("x")).unwrap();
    assert_eq!(pair.client.conn.credit(id), Some(0));
    pair.client.conn.call(id).close().unwrap();
    assert_eq!(
        pair.client.conn.call(id).send(b("y")),
        Err(SendError::Closed)
    );
    assert_eq!(pair.client.conn.call(id).close(), Err(SendError::Closed));
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![
            Event::IncomingMessage {
                id: inc,
                payload: Some(b("x"))
            },
            Event::IncomingInputEnd { id: inc },
        ]
    );
    // The stream lives on until the callee finishes.
    assert!(pair.client.conn.is_live(id));
    pair.server.conn.incoming(inc).send(b("late")).unwrap();
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamMessage {
            id,
            payload: b("late")
        }]
    );
}

#[test]
fn stream_without_input_sends_eof_on_connect() {
    let mut pair = scripted(8);
    let now = pair.now;
    // Handler 79's InCapacity is 0 in the default capacity table.
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(COUNT).payload(b("p")))
        .unwrap();
    assert_eq!(
        pair.client.conn.call(id).send(b("x")),
        Err(SendError::Closed)
    );
    assert_eq!(pair.client.conn.call(id).close(), Err(SendError::Closed));
    pair.drive();
    let connect = &from_client(&pair)[0];
    assert_eq!(connect.flags, Flags::CRC | Flags::EOF);
    pair.server
        .conn
        .incoming(IncomingId(id.0))
        .accept(pair.now, caps(0, 1));
    pair.drive();
    assert_eq!(pair.client.conn.credit(id), Some(0));
    // Beyond Go (docs/protocol.md#quirk-q13-eof-on-connect): a callee that has
    // input honours EOF-on-connect.
    let now = pair.now;
    let other = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO).capacities(caps(0, 1)))
        .unwrap();
    pair.drive();
    pair.server.take_events();
    pair.server
        .conn
        .incoming(IncomingId(other.0))
        .accept(pair.now, caps(1, 1));
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingInputEnd {
            id: IncomingId(other.0)
        }]
    );
}

#[test]
fn count_stream_matches_go() {
    let mut pair = with_ref_peer(9);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(
            now,
            OpenStream::new(COUNT).payload(Bytes::from_static(b"\0\0\0\x05data")),
        )
        .unwrap();
    let mut got = Vec::new();
    let mut ended = None;
    for _ in 0..20 {
        pair.drive();
        for e in pair.client.take_events() {
            match e {
                Event::StreamMessage { payload, .. } => {
                    got.push(payload);
                    pair.client.conn.call(id).consumed();
                }
                Event::StreamEnd { result, .. } => ended = Some(result),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(ended, Some(Ok(())));
    let want: Vec<Bytes> = (0..5u32)
        .map(|i| Bytes::from([&i.to_be_bytes()[..], b"data"].concat()))
        .collect();
    assert_eq!(got, want);
    // Message for message what Go sent (transcript stream-count); only the
    // grouping into merged frames may differ.
    let go_client = [
        "970100004f0503c40800000005646174614b48c6e7",
        "97010100000b01c400ec8d1073",
        "97010200000b01c400afd022da",
        "97010300000b01c400609c2981",
        "97010400000b01c400335f3cc9",
        "97010500000b01c400fdb9a570",
    ];
    let go_server = [
        "97010000000d01c400f7d06375",
        "97010100000a01c4080000000064617461d2f8b5d7",
        "97010200000a01c4080000000164617461f5fa33f3",
        "97010300000a01c4080000000264617461783e81a4",
        "97010400000a01c4080000000364617461e5b70f20",
        "97010500000a01c40800000004646174615a3e0a3b",
        "97010600000a03c4003e62ffcb",
        "97010000000701c400ab29eb67",
    ];
    assert_eq!(from_client(&pair), decode_all(&go_client));
    assert_eq!(from_server(&pair), decode_all(&go_server));
}

fn decode_all(hex_msgs: &[&str]) -> Vec<Message> {
    hex_msgs
        .iter()
        .map(|h| Message::decode(&Bytes::from(hex::decode(h).unwrap())).unwrap())
        .collect()
}

#[test]
fn callee_error_ends_the_stream_like_go() {
    let mut pair = with_ref_peer(10);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(
            now,
            OpenStream::new(COUNT).payload(Bytes::from_static(b"\x01\x02")),
        )
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd {
            id,
            result: Err(CallError::Remote("refpeer: payload too short".into()))
        }]
    );
    // Transcript stream-err.
    assert_eq!(
        from_client(&pair),
        decode_all(&["970100004f0503c40201023748dacd"])
    );
    assert_eq!(
        from_server(&pair),
        decode_all(&[
            "97010000000d01c400f7d06375",
            "97010100000a0bc41a726566706565723a207061796c6f616420746f6f2073686f72740bf87371",
            "97010000000701c400ab29eb67",
        ])
    );
}

#[test]
fn echo_stream_on_a_subroute_prefixes_every_answer() {
    let mut pair = with_ref_peer(11);
    let now = pair.now;
    let sub = SubrouteId::new(ECHO, REF_SUB);
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO).subroute(sub).payload(b("p:")))
        .unwrap();
    pair.drive();
    pair.client.conn.call(id).send(b("1")).unwrap();
    pair.client.conn.call(id).close().unwrap();
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamMessage {
            id,
            payload: b("sub:p:1")
        }]
    );
    // The handler's EOF needs the credit back.
    pair.client.conn.call(id).consumed();
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd { id, result: Ok(()) }]
    );
    // Only the opening message carries the subroute.
    let c = from_client(&pair);
    assert_eq!(c[0].subroute, Some(sub));
    assert!(c[1..].iter().all(|m| m.subroute.is_none()));
}

#[test]
fn unknown_stream_handler_is_refused_and_cleaned_up() {
    let mut pair = with_ref_peer(12);
    let now = pair.now;
    // 77 (CheckParts3) has capacities (0/1) but no handler on the peer.
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(HandlerId(77)))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd {
            id,
            result: Err(CallError::Refused(
                "Invalid Handler for type: CheckParts3".into()
            ))
        }]
    );
    let s = from_server(&pair);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].op, Op::MuxConnectError);
    assert_eq!(
        s[0].flags,
        Flags::CRC | Flags::EOF,
        "echoes the ConnectMux flags"
    );
    assert_eq!(s[0].handler, HandlerId(77));
    // Go's caller cleans up a refused stream with a Seq 0 disconnect.
    assert_eq!(
        script(&from_client(&pair), id.0),
        vec![(Op::ConnectMux, 0), (Op::DisconnectServerMux, 0)]
    );
    assert_eq!(pair.client.conn.stats(pair.now).timers, 0);
}

#[test]
fn callee_refuses_stateless_invalid_and_duplicate_openings() {
    let mut pair = scripted(13);
    let mut stateless = forge(Op::ConnectMux, 50, 0);
    stateless.handler = ECHO;
    stateless.flags |= Flags::STATELESS;
    let mut invalid = forge(Op::ConnectMux, 51, 0);
    invalid.handler = HandlerId(0);
    let mut good = forge(Op::ConnectMux, 52, 0);
    good.handler = ECHO;
    for m in [&stateless, &invalid, &good, &good] {
        pair.inject_to_server(m.to_bytes());
    }
    pair.drive();
    let errors: Vec<(u64, String)> = from_server(&pair)
        .iter()
        .map(|m| {
            assert_eq!(m.op, Op::MuxConnectError);
            (m.mux_id, MuxConnectError::decode(&m.payload).unwrap().error)
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (50, "Stateless streams not supported".into()),
            (51, "Invalid Handler".into()),
        ]
    );
    // The duplicate opening is ignored: one stream, one event.
    let events = pair.server.take_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(pair.server.conn.stats(pair.now).incoming_streams, 1);
    assert_eq!(pair.server.conn.stats(pair.now).ignored_messages, 1);
}

#[test]
fn caller_cancel_sends_a_sequenced_then_a_seq_0_disconnect() {
    let mut pair = with_ref_peer(14);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO).payload(b("c:")))
        .unwrap();
    pair.drive();
    pair.client.conn.call(id).send(b("1")).unwrap();
    pair.drive();
    assert_eq!(pair.client.take_events().len(), 1, "the answer");
    pair.client.conn.call(id).consumed();
    pair.drive();
    pair.sent.clear();

    assert!(pair.client.conn.call(id).cancel());
    assert!(!pair.client.conn.is_live(id));
    assert_eq!(
        pair.client.conn.call(id).send(b("x")),
        Err(SendError::UnknownStream)
    );
    assert!(!pair.client.conn.call(id).cancel());
    pair.drive();
    // Sent so far: ConnectMux 0, MuxClientMsg 1, UnblockSrvMux 2.
    assert_eq!(
        script(&from_client(&pair), id.0),
        vec![(Op::DisconnectServerMux, 3), (Op::DisconnectServerMux, 0)]
    );
    // The callee tears down once and says so; the caller ignores it
    // (docs/protocol.md#quirk-q4-disconnect-after-eof).
    assert_eq!(
        script(&from_server(&pair), id.0),
        vec![(Op::DisconnectClientMux, 0)]
    );
    assert!(pair.client.take_events().is_empty());
    assert_eq!(pair.server.conn.stats(pair.now).incoming_streams, 0);
    assert_eq!(pair.server.conn.stats(pair.now).timers, 0);
    assert_eq!(pair.client.conn.stats(pair.now).timers, 0);
}

#[test]
fn rust_callee_sees_the_caller_cancel() {
    let mut pair = scripted(15);
    let (id, inc) = open(&mut pair, 1, 1);
    pair.client.conn.call(id).cancel();
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::CallerCancelled
        }]
    );
    assert_eq!(
        pair.server.conn.incoming(inc).send(b("x")),
        Err(SendError::UnknownStream)
    );
    assert!(!pair.server.conn.incoming(inc).finish(Ok(())));
    pair.drive();
    assert!(from_server(&pair).iter().all(|m| m.op != Op::MuxServerMsg));
}

#[test]
fn callee_teardown_fails_the_caller() {
    let mut pair = scripted(16);
    let (plain, _) = open(&mut pair, 1, 1);
    let (with_text, _) = open(&mut pair, 1, 1);
    pair.inject_to_client(forge(Op::DisconnectClientMux, plain.0, 0).to_bytes());
    let mut err = forge_with(Op::DisconnectClientMux, with_text.0, 0, b"handler gone");
    err.flags |= Flags::PAYLOAD_IS_ERR;
    pair.inject_to_client(err.to_bytes());
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::StreamEnd {
                id: plain,
                result: Err(CallError::Disconnected)
            },
            Event::StreamEnd {
                id: with_text,
                result: Err(CallError::Remote("handler gone".into()))
            },
        ]
    );
    // The callee already dropped them: nothing is sent back.
    assert!(
        from_client(&pair)
            .iter()
            .all(|m| m.op != Op::DisconnectServerMux)
    );
}

#[test]
fn eof_with_data_in_one_message_delivers_then_ends() {
    let mut pair = scripted(17);
    let (id, _) = open(&mut pair, 1, 1);
    let mut last = forge_with(Op::MuxServerMsg, id.0, 1, b"last words");
    last.flags |= Flags::EOF;
    pair.inject_to_client(last.to_bytes());
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::StreamMessage {
                id,
                payload: b("last words")
            },
            Event::StreamEnd { id, result: Ok(()) },
        ]
    );
}

#[test]
fn callee_rejects_a_gap_in_the_callers_sequence() {
    let mut pair = scripted(18);
    let (id, inc) = open(&mut pair, 1, 1);
    pair.inject_to_server(forge_with(Op::MuxClientMsg, id.0, 5, b"skipped ahead").to_bytes());
    pair.drive();
    let text = "receive sequence number mismatch. want 1, got 5";
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::ProtocolError(text.into())
        }]
    );
    let s = from_server(&pair);
    let tail: Vec<&Message> = s.iter().filter(|m| m.mux_id == id.0).skip(1).collect();
    assert_eq!(tail.len(), 2);
    // A sequenced final error (no credit needed), then the teardown.
    assert_eq!((tail[0].op, tail[0].seq), (Op::MuxServerMsg, 1));
    assert_eq!(
        tail[0].flags,
        Flags::CRC | Flags::EOF | Flags::PAYLOAD_IS_ERR
    );
    assert_eq!(tail[0].payload, text);
    assert_eq!((tail[1].op, tail[1].seq), (Op::DisconnectClientMux, 0));
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd {
            id,
            result: Err(CallError::Remote(text.into()))
        }]
    );
}

#[test]
fn callee_rejects_a_repeated_sequence_number() {
    let mut pair = scripted(19);
    let (id, inc) = open(&mut pair, 2, 1);
    pair.client.conn.call(id).send(b("once")).unwrap();
    pair.drive();
    // The same message again, as a duplicating network would deliver it.
    let dup = from_client(&pair)
        .into_iter()
        .find(|m| m.op == Op::MuxClientMsg)
        .unwrap();
    pair.inject_to_server(dup.to_bytes());
    pair.drive();
    let events = pair.server.take_events();
    assert_eq!(
        events.last(),
        Some(&Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::ProtocolError(
                "receive sequence number mismatch. want 2, got 1".into()
            )
        })
    );
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd {
            id,
            result: Err(CallError::Remote(
                "receive sequence number mismatch. want 2, got 1".into()
            ))
        }]
    );
}

#[test]
fn caller_fails_on_an_out_of_sequence_answer() {
    let mut pair = scripted(20);
    let (id, inc) = open(&mut pair, 1, 1);
    pair.inject_to_client(forge_with(Op::MuxServerMsg, id.0, 7, b"?").to_bytes());
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd {
            id,
            result: Err(CallError::OutOfSequence { want: 1, got: 7 })
        }]
    );
    // Cleanup: one Seq 0 disconnect, and the callee lets go.
    assert_eq!(
        script(&from_client(&pair), id.0),
        vec![(Op::ConnectMux, 0), (Op::DisconnectServerMux, 0)]
    );
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::CallerCancelled
        }]
    );

    // A single request answered with Seq ≠ 0 fails the same way, silently.
    let now = pair.now;
    let req = pair
        .client
        .conn
        .request(now, Request::new(HandlerId::TEST, Bytes::new()))
        .unwrap();
    pair.drive();
    pair.sent.clear();
    pair.inject_to_client(forge(Op::Response, req.0, 3).to_bytes());
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![Event::Response {
            id: req,
            result: Err(CallError::OutOfSequence { want: 0, got: 3 })
        }]
    );
    assert!(pair.sent.is_empty());
}

#[test]
fn overrunning_the_callee_window_is_handler_blocked() {
    let mut pair = scripted(21);
    let (id, inc) = open(&mut pair, 1, 1);
    pair.client.conn.call(id).send(b("fits")).unwrap();
    pair.drive();
    // The handler has not taken it; a second message overruns InCapacity 1.
    pair.inject_to_server(forge_with(Op::MuxClientMsg, id.0, 2, b"overrun").to_bytes());
    pair.drive();
    assert_eq!(
        pair.server.take_events().last(),
        Some(&Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::ProtocolError("handler blocked".into())
        })
    );
    assert_eq!(
        pair.client.take_events(),
        vec![Event::StreamEnd {
            id,
            result: Err(CallError::Remote("handler blocked".into()))
        }]
    );
}

#[test]
fn input_to_a_stream_without_input_is_unexpected() {
    let mut pair = scripted(22);
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(COUNT))
        .unwrap();
    pair.drive();
    pair.server
        .conn
        .incoming(IncomingId(id.0))
        .accept(pair.now, caps(0, 1));
    pair.drive();
    pair.inject_to_server(forge_with(Op::MuxClientMsg, id.0, 1, b"x").to_bytes());
    pair.drive();
    assert_eq!(
        pair.client.take_events().last(),
        Some(&Event::StreamEnd {
            id,
            result: Err(CallError::Remote("did not expect inbound message".into()))
        })
    );
}

#[test]
fn callee_overrunning_the_caller_buffer_is_response_blocked() {
    let mut pair = scripted(23);
    let now = pair.now;
    // The caller believes OutCapacity is 1; the callee uses 3.
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO).capacities(caps(1, 1)))
        .unwrap();
    pair.drive();
    let inc = IncomingId(id.0);
    pair.server.conn.incoming(inc).accept(pair.now, caps(1, 3));
    pair.server.conn.incoming(inc).send(b("one")).unwrap();
    pair.server.conn.incoming(inc).send(b("two")).unwrap();
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::StreamMessage {
                id,
                payload: b("one")
            },
            Event::StreamEnd {
                id,
                result: Err(CallError::ResponseBlocked)
            },
        ]
    );
    assert_eq!(
        script(&from_client(&pair), id.0),
        vec![(Op::ConnectMux, 0), (Op::DisconnectServerMux, 0)]
    );
    assert_eq!(
        pair.server.take_events().last(),
        Some(&Event::IncomingCancelled {
            id: inc,
            reason: CancelReason::CallerCancelled
        })
    );
}

#[test]
fn both_sides_only_sending_is_reported_as_a_stall() {
    let mut pair = scripted(24);
    let (id, inc) = open(&mut pair, 1, 1);
    pair.client.conn.call(id).send(b("c1")).unwrap();
    pair.server.conn.incoming(inc).send(b("s1")).unwrap();
    pair.drive();
    // Neither application consumes; both want to send again.
    assert_eq!(
        pair.client.conn.call(id).send(b("c2")),
        Err(SendError::NoCredit)
    );
    assert_eq!(
        pair.server.conn.incoming(inc).send(b("s2")),
        Err(SendError::NoCredit)
    );
    pair.drive();
    let client = pair.client.take_events();
    let server = pair.server.take_events();
    assert_eq!(
        client,
        vec![
            Event::StreamMessage {
                id,
                payload: b("s1")
            },
            Event::StreamStalled { id },
        ]
    );
    assert_eq!(
        server,
        vec![
            Event::IncomingMessage {
                id: inc,
                payload: Some(b("c1"))
            },
            Event::IncomingStalled { id: inc },
        ]
    );
    // Reported once per episode.
    assert_eq!(
        pair.client.conn.call(id).send(b("c2")),
        Err(SendError::NoCredit)
    );
    pair.drive();
    assert!(pair.client.take_events().is_empty());
    // One side consumes: the deadlock dissolves.
    pair.client.conn.call(id).consumed();
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingCredit { id: inc }]
    );
    pair.server.conn.incoming(inc).send(b("s2")).unwrap();
}

#[test]
fn one_way_traffic_is_no_stall() {
    let mut pair = scripted(25);
    let (id, inc) = open(&mut pair, 1, 1);
    // The callee is out of credit but the caller consumes nothing and
    // sends nothing: only the callee waits, which is flow control.
    pair.server.conn.incoming(inc).send(b("s1")).unwrap();
    pair.drive();
    assert_eq!(
        pair.server.conn.incoming(inc).send(b("s2")),
        Err(SendError::NoCredit)
    );
    pair.drive();
    assert!(
        !pair
            .server
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::IncomingStalled { .. }))
    );
    assert!(
        !pair
            .client
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::StreamStalled { .. }))
    );
    assert_eq!(pair.client.conn.credit(id), Some(1));
}

#[test]
fn caller_eof_before_the_ack_reaches_the_handler_after_accept() {
    let mut pair = scripted(26);
    let now = pair.now;
    // Like Go's caller, close the input without waiting for the ack: the
    // EOF needs no credit and travels with the ConnectMux.
    let id = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO).payload(b("all at once")))
        .unwrap();
    pair.client.conn.call(id).close().unwrap();
    pair.drive();
    assert_eq!(pair.sent.len(), 1, "one merged frame");
    assert_eq!(
        script(&from_client(&pair), id.0),
        vec![(Op::ConnectMux, 0), (Op::MuxClientMsg, 1)]
    );
    let inc = IncomingId(id.0);
    assert!(pair.server.conn.is_live(inc));
    assert_eq!(pair.server.take_events().len(), 1, "only the opening");
    // The handler starts later and learns at once that no input follows.
    assert!(pair.server.conn.incoming(inc).accept(pair.now, caps(1, 1)));
    pair.drive();
    assert_eq!(
        pair.server.take_events(),
        vec![Event::IncomingInputEnd { id: inc }]
    );
    pair.server.conn.incoming(inc).send(b("r")).unwrap();
    pair.drive();
    pair.client.conn.call(id).consumed();
    pair.server.conn.incoming(inc).finish(Ok(()));
    pair.drive();
    assert_eq!(
        pair.client.take_events(),
        vec![
            Event::StreamMessage {
                id,
                payload: b("r")
            },
            Event::StreamEnd { id, result: Ok(()) },
        ]
    );
    // Data before the ack is still a violation: the caller had no window.
    let now = pair.now;
    let other = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(ECHO))
        .unwrap();
    pair.drive();
    pair.inject_to_server(forge_with(Op::MuxClientMsg, other.0, 1, b"too soon").to_bytes());
    pair.drive();
    assert_eq!(
        pair.server.take_events().last(),
        Some(&Event::IncomingCancelled {
            id: IncomingId(other.0),
            reason: CancelReason::ProtocolError("did not expect inbound message".into())
        })
    );
}
