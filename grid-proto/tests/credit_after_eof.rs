//! Regression: a callee whose output waits for credit must be told when the
//! credit comes back, even if the caller's EOF arrived in between (the echo
//! stream of the benchmark hung 66 messages short).

use bytes::Bytes;
use grid_proto::sim::Pair;
use grid_proto::{Capacities, Event, HandlerId, OpenStream, SendError};

#[test]
fn output_credit_is_reported_after_the_callers_eof() {
    let mut pair = Pair::new(3);
    pair.connect();
    let caps = Capacities {
        in_capacity: 2,
        out_capacity: 1,
    };
    let now = pair.now;
    let call = pair
        .client
        .conn
        .open_stream(now, OpenStream::new(HandlerId::TEST).capacities(caps))
        .unwrap();
    pair.drive();
    let incoming = pair
        .server
        .take_events()
        .into_iter()
        .find_map(|e| match e {
            Event::IncomingStream { id, .. } => Some(id),
            _ => None,
        })
        .expect("the server sees the stream");
    let now = pair.now;
    assert!(pair.server.conn.incoming(incoming).accept(now, caps));
    pair.drive();

    // The handler sends two messages with one credit: the second waits.
    pair.server
        .conn
        .incoming(incoming)
        .send(Bytes::from_static(b"one"))
        .unwrap();
    assert_eq!(
        pair.server
            .conn
            .incoming(incoming)
            .send(Bytes::from_static(b"two")),
        Err(SendError::NoCredit)
    );
    // The caller ends its input while the handler waits for credit.
    pair.client.conn.call(call).close().unwrap();
    pair.drive();
    assert!(
        pair.server
            .take_events()
            .contains(&Event::IncomingInputEnd { id: incoming })
    );

    // The caller takes the first message: its credit goes back.
    assert!(
        pair.client
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::StreamMessage { .. }))
    );
    pair.client.conn.call(call).consumed();
    pair.drive();
    assert!(
        pair.server
            .take_events()
            .contains(&Event::IncomingCredit { id: incoming }),
        "the waiting handler was never told its credit came back"
    );
    pair.server
        .conn
        .incoming(incoming)
        .send(Bytes::from_static(b"two"))
        .unwrap();
}
