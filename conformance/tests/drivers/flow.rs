//! Calls under stress: cancellation and deadlines reaching the remote
//! handler, large payloads, many concurrent streams, backpressure.

use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::driver::{RemoteError, StreamOptions};
use grid_proto::{CallError, Capacities, HandlerId, SubrouteId};

use crate::harness::{
    Cluster, Counter, Handlers, Probe, Setup, drive_until, eventually, join_all, round_trips, wait,
};

/// A single handler that never answers.
const NEVER: HandlerId = HandlerId(40);
/// A stream handler that never ends (reads nothing, sends nothing).
const HOLD: HandlerId = HandlerId(41);
/// A stream handler sending `u32be N` numbered messages to a slow reader.
const TRICKLE: HandlerId = HandlerId(43);
/// `TRICKLE`'s output window.
const TRICKLE_OUT: u32 = 4;

/// Handlers that report their start and their drop to `probe`.
fn never_handlers(probe: &Probe) -> Handlers {
    let single = probe.clone();
    let stream = probe.clone();
    Handlers::default()
        .single(NEVER, move |_| {
            let p = single.clone();
            async move {
                let _guard = p.enter();
                std::future::pending::<Result<Bytes, RemoteError>>().await
            }
        })
        .stream(HOLD, Capacities::DEFAULT, move |call| {
            let p = stream.clone();
            async move {
                let _guard = p.enter();
                let _halves = (call.input, call.output);
                std::future::pending::<Result<(), RemoteError>>().await
            }
        })
}

/// Dropping a request future cancels the call on the callee: its handler
/// future is dropped.
pub(crate) async fn request_cancel(setup: Setup) {
    let probe = Probe::new();
    let c = Cluster::start(setup, never_handlers(&probe)).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        {
            let mut call = pin!(conn.request(NEVER, Bytes::from_static(b"wait")));
            drive_until(call.as_mut(), probe.started()).await;
            eventually("the stats to show the call", || {
                c.stats(from, to).outgoing_requests == 1 && c.stats(to, from).incoming_requests == 1
            })
            .await;
        } // dropped here
        probe.dropped().await;
        eventually("the callee to forget the request", || {
            c.stats(to, from).incoming_requests == 0 && c.stats(from, to).outgoing_requests == 0
        })
        .await;
    }
    c.shutdown().await;
}

/// A request past its deadline fails with `DeadlineExceeded`, and the
/// callee (which got the deadline) drops its handler.
pub(crate) async fn request_deadline(setup: Setup) {
    let probe = Probe::new();
    let c = Cluster::start(setup, never_handlers(&probe)).await;
    for (from, to) in c.directions() {
        let deadline = Instant::now() + Duration::from_millis(300);
        let call = c
            .conn(from, to)
            .request_with_deadline(NEVER, Bytes::new(), deadline);
        assert_eq!(
            wait("the deadline", call).await,
            Err(CallError::DeadlineExceeded)
        );
        assert!(Instant::now() >= deadline);
        probe.started().await;
        probe.dropped().await;
        // A deadline in time is no obstacle.
        let ok = c.conn(from, to).request_with_deadline(
            HandlerId::TEST,
            Bytes::from_static(b"in time"),
            Instant::now() + Duration::from_secs(30),
        );
        assert_eq!(wait("echo", ok).await, Ok(Bytes::from_static(b"in time")));
    }
    c.shutdown().await;
}

/// A stream past its deadline ends with `DeadlineExceeded` for the caller
/// and its handler is dropped on the callee.
pub(crate) async fn stream_deadline(setup: Setup) {
    let probe = Probe::new();
    let c = Cluster::start(setup, never_handlers(&probe)).await;
    for (from, to) in c.directions() {
        let options = StreamOptions {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            ..StreamOptions::default()
        };
        let (_tx, mut rx) = wait(
            "open",
            c.conn(from, to).open_stream_with(HOLD, None, options),
        )
        .await
        .expect("stream opened");
        probe.started().await;
        assert_eq!(
            wait("the deadline", rx.recv()).await,
            Some(Err(CallError::DeadlineExceeded))
        );
        probe.dropped().await;
    }
    c.shutdown().await;
}

/// 4 MiB each way, as a request and as a stream message.
pub(crate) async fn large_payloads(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    let big: Bytes = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let r = wait("a 4 MiB echo", conn.request(HandlerId::TEST, big.clone())).await;
        assert!(r.as_ref() == Ok(&big), "the 4 MiB echo differs");
        let (mut tx, mut rx) = wait("open", conn.open_stream(HandlerId::TEST, None))
            .await
            .expect("stream opened");
        wait("send 4 MiB", tx.send(big.clone()))
            .await
            .expect("sent");
        let got = wait("4 MiB back", rx.recv()).await;
        assert!(got.as_ref().is_some_and(|m| m.as_ref() == Ok(&big)));
        tx.close();
        assert_eq!(wait("EOF", rx.recv()).await, None);
    }
    c.shutdown().await;
}

/// Many streams at once in both directions, interleaved on one connection.
pub(crate) async fn many_streams(setup: Setup) {
    const STREAMS: usize = 100;
    const MESSAGES: usize = 10;
    let c = Cluster::start(setup, Handlers::default()).await;
    let one = |from: usize, to: usize, n: usize| {
        let conn = c.conn(from, to);
        async move {
            let prefix = Bytes::from(format!("{from}->{to} #{n}:"));
            let (mut tx, mut rx) = conn
                .open_stream(HandlerId::TEST, Some(prefix.clone()))
                .await
                .expect("stream opened");
            for i in 0..MESSAGES {
                let m = format!("{i}");
                tx.send(Bytes::from(m.clone())).await.expect("sent");
                let got = rx.recv().await.expect("a message").expect("no error");
                assert_eq!(got, format!("{}{m}", String::from_utf8_lossy(&prefix)));
            }
            tx.close();
            assert_eq!(rx.recv().await, None);
        }
    };
    let all = c
        .directions()
        .into_iter()
        .flat_map(|(from, to)| (0..STREAMS).map(move |n| (from, to, n)))
        .map(|(from, to, n)| one(from, to, n));
    wait("many concurrent streams", join_all(all)).await;
    for (from, to) in c.directions() {
        eventually("every stream to be gone", || {
            let s = c.stats(from, to);
            s.outgoing_streams == 0 && s.incoming_streams == 0
        })
        .await;
    }
    c.shutdown().await;
}

fn trickle_handlers(sent: &Counter) -> Handlers {
    let sent = sent.clone();
    Handlers::default().stream(
        TRICKLE,
        Capacities {
            in_capacity: 0,
            out_capacity: TRICKLE_OUT,
        },
        move |call| {
            let sent = sent.clone();
            async move {
                let p = call.payload.unwrap_or_default();
                let n = u32::from_be_bytes(p[..4].try_into().expect("u32be N"));
                let mut out = call.output;
                for i in 0..n {
                    out.send(Bytes::copy_from_slice(&i.to_be_bytes()))
                        .await
                        .map_err(|e| RemoteError(e.to_string()))?;
                    sent.add();
                }
                Ok(())
            }
        },
    )
}

/// A reader that does not read holds the handler back: its sends block
/// once the window (on the wire) and its queue (one window more) are full,
/// and every message arrives, in order, when the reader resumes.
pub(crate) async fn backpressure(setup: Setup) {
    const N: u32 = 64;
    let sent = Counter::default();
    let c = Cluster::start(setup, trickle_handlers(&sent)).await;
    for (from, to) in c.directions() {
        let before = sent.get();
        let conn = c.conn(from, to);
        let (_tx, mut rx) = wait(
            "open",
            conn.open_stream(TRICKLE, Some(Bytes::copy_from_slice(&N.to_be_bytes()))),
        )
        .await
        .expect("stream opened");
        let window = TRICKLE_OUT as usize;
        eventually("the handler to fill the window", || {
            sent.get() - before >= window
        })
        .await;
        // Round trips on the same connection: whatever the handler could
        // put on the wire has arrived by now, and credit did not come back.
        round_trips(&conn, 3).await;
        let blocked_at = sent.get() - before;
        assert!(
            blocked_at <= 2 * window,
            "the handler sent {blocked_at} messages to a reader that read none"
        );
        let mut got = Vec::new();
        while let Some(m) = wait("a message", rx.recv()).await {
            got.push(u32::from_be_bytes(
                m.expect("no error")[..].try_into().unwrap(),
            ));
        }
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "node {from} -> node {to}");
        assert_eq!(sent.get() - before, N as usize);
    }
    c.shutdown().await;
}

/// Stream input is flow-controlled too: with a handler that does not read,
/// the caller's sends block after the handler's `InCapacity` (plus one
/// window queued locally), and nothing is lost when it reads again.
pub(crate) async fn input_backpressure(setup: Setup) {
    const SLOW_READER: HandlerId = HandlerId(44);
    const IN: u32 = 2;
    let gate = crate::harness::Gate::new();
    let g = gate.clone();
    let handlers = Handlers::default().stream(
        SLOW_READER,
        Capacities {
            in_capacity: IN,
            out_capacity: 1,
        },
        move |call| {
            let g = g.clone();
            async move {
                g.pass().await;
                let mut input = call.input.expect("an input");
                let mut out = call.output;
                let mut n = 0u32;
                while let Some(m) = input.recv().await {
                    let m = m.map_err(|e| RemoteError(e.to_string()))?;
                    assert_eq!(m, n.to_string());
                    n += 1;
                }
                out.send(Bytes::from(n.to_string()))
                    .await
                    .map_err(|e| RemoteError(e.to_string()))
            }
        },
    );
    let c = Cluster::start(setup, handlers).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let (mut tx, mut rx) = wait("open", conn.open_stream(SLOW_READER, None))
            .await
            .expect("stream opened");
        let mut next = 0u32;
        for _ in 0..2 * IN {
            wait(
                "a send within the window",
                tx.send(Bytes::from(next.to_string())),
            )
            .await
            .expect("sent");
            next += 1;
        }
        {
            let mut blocked = pin!(tx.send(Bytes::from(next.to_string())));
            drive_until(blocked.as_mut(), round_trips(&conn, 3)).await;
            gate.open(1);
            wait("the blocked send", blocked).await.expect("sent");
            next += 1;
        }
        for _ in 0..10 {
            wait("send", tx.send(Bytes::from(next.to_string())))
                .await
                .expect("sent");
            next += 1;
        }
        tx.close();
        assert_eq!(
            wait("the count", rx.recv()).await,
            Some(Ok(Bytes::from(next.to_string())))
        );
        assert_eq!(wait("EOF", rx.recv()).await, None);
    }
    c.shutdown().await;
}

/// Raw registrations (what a replay of a capture needs): a single handler
/// on a subroute known only by its wire id sees an empty request as absent
/// and may answer absent; a stream handler sees its input arrive without
/// taking it, then takes it in order.
pub(crate) async fn raw_handlers(setup: Setup) {
    const RAW: HandlerId = HandlerId(42);
    let sub = SubrouteId::new(RAW, "/raw/route");
    let seen = Counter::default();
    let absent = Counter::default();
    let handlers = {
        let (seen, absent) = (seen.clone(), absent.clone());
        Handlers::default()
            .single_raw(RAW, Some(sub), move |p: Option<Bytes>| {
                seen.add();
                if p.is_none() {
                    absent.add();
                }
                async move { Ok(p) }
            })
            .stream_raw(
                RAW,
                None,
                Capacities {
                    in_capacity: 2,
                    out_capacity: 1,
                },
                |call| async move {
                    let mut input = call.input.expect("the stream has input");
                    let mut output = call.output;
                    let waiting = input.wait_pending(2).await;
                    output
                        .send(Bytes::from(waiting.to_string()))
                        .await
                        .map_err(|e| RemoteError(e.to_string()))?;
                    while let Some(Ok(m)) = input.recv().await {
                        output
                            .send(m)
                            .await
                            .map_err(|e| RemoteError(e.to_string()))?;
                    }
                    Ok(())
                },
            )
    };
    let c = Cluster::start(setup, handlers).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let raw = conn.subroute_raw(sub);
        let r = wait(
            "a raw subroute call",
            raw.request(RAW, Bytes::from_static(b"x")),
        )
        .await;
        assert_eq!(r, Ok(Bytes::from_static(b"x")));
        // The same 32 bytes as the named route.
        let named = conn.subroute("/raw/route");
        let r = wait("a named subroute call", named.request(RAW, Bytes::new())).await;
        assert_eq!(r, Ok(Bytes::new()));
        // Without the subroute nothing is registered for single calls.
        let r = wait("a call without subroute", conn.request(RAW, Bytes::new())).await;
        assert!(matches!(r, Err(CallError::Refused(_))), "{r:?}");

        let (mut tx, mut rx) = wait("open", conn.open_stream(RAW, None)).await.unwrap();
        for m in ["a", "b"] {
            wait("send", tx.send(Bytes::from_static(m.as_bytes())))
                .await
                .unwrap();
        }
        tx.close();
        let mut got = Vec::new();
        while let Some(m) = wait("a stream message", rx.recv()).await {
            got.push(m.unwrap());
        }
        assert_eq!(got, [&b"2"[..], b"a", b"b"]);
    }
    assert_eq!(seen.get(), 4);
    assert_eq!(absent.get(), 2, "empty requests arrive as absent");
    c.shutdown().await;
}
