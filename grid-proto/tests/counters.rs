//! Counters a peer can move never overflow: credit floods against the
//! largest windows, and the counters of the stats. (Sequence numbers wrap
//! like Go's `uint32`; that is checked next to the code, where a stream's
//! counter can be put near the wrap.)

mod common;

use bytes::Bytes;
use common::*;
use grid_proto::sim::Pair;
use grid_proto::{CallId, IncomingId, Op, SendError};

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// A stream with the largest windows both ways, accepted.
fn open_huge(pair: &mut Pair) -> (CallId, IncomingId) {
    let now = pair.now;
    let id = pair
        .client
        .conn
        .open_stream(now, ECHO, None, None, None, Some(caps(u32::MAX, u32::MAX)))
        .unwrap();
    pair.drive();
    let inc = IncomingId(id.0);
    let now = pair.now;
    assert!(
        pair.server
            .conn
            .accept_stream(now, inc, caps(u32::MAX, u32::MAX))
    );
    pair.drive();
    pair.client.take_events();
    pair.server.take_events();
    (id, inc)
}

#[test]
fn an_unblock_flood_on_a_full_u32_window_saturates() {
    let mut pair = scripted(40);
    let (id, _inc) = open_huge(&mut pair);
    assert_eq!(pair.client.conn.stream_credit(id), Some(u32::MAX));
    // The callee's next seq is 1 (its Ack took 0).
    for seq in 1..200 {
        pair.inject_to_client(forge(Op::UnblockClMux, id.0, seq).to_bytes());
    }
    pair.drive();
    assert_eq!(pair.client.conn.stream_credit(id), Some(u32::MAX));
    assert!(pair.client.conn.is_live(id));
}

#[test]
fn an_unblock_flood_on_a_full_u32_out_capacity_saturates() {
    let mut pair = scripted(41);
    let (id, inc) = open_huge(&mut pair);
    assert_eq!(pair.server.conn.incoming_credit(inc), Some(u32::MAX));
    // The caller's next seq is 1 (ConnectMux took 0).
    for seq in 1..200 {
        pair.inject_to_server(forge(Op::UnblockSrvMux, id.0, seq).to_bytes());
    }
    pair.drive();
    assert_eq!(pair.server.conn.incoming_credit(inc), Some(u32::MAX));
    let now = pair.now;
    assert_eq!(pair.server.conn.incoming_send(now, inc, b("x")), Ok(()));
    assert_ne!(
        pair.server.conn.incoming_send(now, inc, b("y")),
        Err(SendError::NoCredit)
    );
}
