//! Typed handlers through their descriptors, what every handler kind sees
//! of its call (context, cancellation), and the stream halves as sinks and
//! streams with send errors that say what happened: between two real nodes,
//! each calling the other.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, join, select};
use futures_util::{SinkExt, StreamExt, TryStreamExt, stream};
use grid_proto::driver::{
    HandlerContext, Manager, Mss, NoInput, NoPayload, RegisterError, RemoteError, Runtime,
    SingleHandler, StreamHandler, StreamSendError, TypedError,
};
use grid_proto::{CallError, Capacities, HandlerId, Subroute, SubrouteId};
use smol::channel::{Receiver, Sender, unbounded};

use crate::harness::{Cluster, Handlers, Registration, Setup, wait};

/// Answers what its context says.
const WHO: SingleHandler<NoPayload, Mss> = SingleHandler::new(HandlerId::DISK_INFO);
/// The same from a stream without input or payload, registered by wire id.
const WHO_STREAM: StreamHandler<NoPayload, NoInput, Mss> = StreamHandler::new(HandlerId::WALK_DIR);
/// Waits for its cancellation and reports it.
const WAIT: SingleHandler<NoPayload, NoPayload> = SingleHandler::new(HandlerId(43));
/// Echoes each message until cancelled, then reports what it saw.
const LOOP: StreamHandler<NoPayload, Mss, Mss> = StreamHandler::new(HandlerId(44));
/// Fails at once, or ends at once, as its payload says.
const QUIT: StreamHandler<String, Mss, Mss> = StreamHandler::new(HandlerId(45));
/// Doubles numbers, four in flight each way.
const DOUBLE: StreamHandler<NoPayload, u32, u32> = StreamHandler::new(HandlerId(46))
    .with_in_capacity(4)
    .with_out_capacity(4);
/// Parses a number with `?`.
const PARSE: SingleHandler<String, u64> = SingleHandler::new(HandlerId(47));
/// MinIO's `Listen`: no payload, no input, the catalogue's capacities.
const LISTEN: StreamHandler<NoPayload, NoInput, Mss> = StreamHandler::new(HandlerId::LISTEN);

/// The subroute `WHO` is registered on, and the wire id of `WHO_STREAM`'s.
const DRIVE: &str = "/data1";
fn stream_sub() -> SubrouteId {
    SubrouteId::new(HandlerId::WALK_DIR, "by-id")
}

fn mss(pairs: &[(&str, &str)]) -> Mss {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn describe(ctx: &HandlerContext) -> Mss {
    let mut m = mss(&[
        ("caller", ctx.caller()),
        ("handler", &ctx.handler().to_string()),
    ]);
    if let Some(sub) = ctx.subroute() {
        m.insert("subroute".into(), format!("{sub:?}"));
    }
    if let Some(d) = ctx.deadline() {
        let left = d.saturating_duration_since(std::time::Instant::now());
        m.insert("deadline_ms".into(), left.as_millis().to_string());
    }
    m
}

/// Everything this module's handlers report, in the order they do.
#[derive(Clone)]
struct Reports(Sender<String>, Receiver<String>);

impl Reports {
    fn new() -> Reports {
        let (tx, rx) = unbounded();
        Reports(tx, rx)
    }

    fn say(&self, what: String) {
        let _ = self.0.try_send(what);
    }

    async fn next(&self, what: &str) -> String {
        wait(what, self.1.recv()).await.expect("reports open")
    }
}

struct TypedHandlers(Reports);

impl Registration for TypedHandlers {
    fn register<R: Runtime>(&self, m: &Manager<R>) -> Result<(), RegisterError> {
        WHO.register_subroute(m, DRIVE, |ctx, NoPayload| async move { Ok(describe(&ctx)) })?;
        WHO_STREAM.register_subroute(m, stream_sub(), |ctx, NoPayload, mut out| async move {
            out.send(&describe(&ctx)).await?;
            Ok(())
        })?;
        // A raw single handler sees its context too.
        m.register_single_with_context(HandlerId::STAT_VOL, None, |ctx, _| async move {
            Ok(Bytes::from(ctx.caller().to_owned()))
        })?;
        let reports = self.0.clone();
        WAIT.register(m, move |ctx, NoPayload| {
            let reports = reports.clone();
            async move {
                reports.say("started".into());
                let reason = ctx.cancelled().await;
                reports.say(format!("cancelled: {reason:?}"));
                Ok(NoPayload)
            }
        })?;
        let reports = self.0.clone();
        LOOP.register(m, move |ctx, NoPayload, mut input, mut out| {
            let reports = reports.clone();
            async move {
                loop {
                    let next = match select(pin!(ctx.cancelled()), pin!(input.recv())).await {
                        Either::Left((reason, _)) => {
                            // Noticed: try once more to answer, and say what happened.
                            let sent = out.send(&Mss::new()).await;
                            reports.say(format!("cancelled: {reason:?}, then send: {sent:?}"));
                            return Ok(());
                        }
                        Either::Right((next, _)) => next,
                    };
                    match next {
                        Some(m) => out.send(&m?).await?,
                        None => return Ok(()),
                    }
                }
            }
        })?;
        QUIT.register(m, |_ctx, how, _input, _out| async move {
            match how.as_str() {
                "fail" => Err(RemoteError::new("refpeer: no")),
                _ => Ok(()),
            }
        })?;
        DOUBLE.register(m, |_ctx, NoPayload, input, output| async move {
            input.map_ok(|n| n * 2).forward(output).await?;
            Ok(())
        })?;
        PARSE.register(m, |_ctx, text| async move { Ok(text.parse::<u64>()?) })?;
        LISTEN.register(m, |_ctx, NoPayload, mut out| async move {
            for i in 0..150 {
                out.send(&mss(&[("n", &i.to_string())])).await?;
            }
            Ok(())
        })
    }
}

async fn cluster(setup: Setup) -> (Cluster, Reports) {
    let reports = Reports::new();
    let handlers = Handlers::default().with(TypedHandlers(reports.clone()));
    (Cluster::start(setup, handlers).await, reports)
}

/// Caller host, subroute and deadline, for typed single and stream handlers
/// and a raw single one.
pub(crate) async fn handler_context(setup: Setup) {
    let (c, _) = cluster(setup).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let caller = c.hosts[from].as_str();
        let got = wait(
            "WHO",
            WHO.call_with_timeout(&conn.subroute(DRIVE), &NoPayload, Duration::from_secs(5)),
        )
        .await
        .expect("WHO answers");
        assert_eq!(got["caller"], caller);
        assert_eq!(got["handler"], "DiskInfo");
        assert_eq!(got["subroute"], format!("{:?}", Subroute::from(DRIVE)));
        let left: u64 = got["deadline_ms"].parse().unwrap();
        assert!((1..=5000).contains(&left), "{left} ms left of 5000");

        let mut rx = wait(
            "WHO_STREAM",
            WHO_STREAM.call(&conn.subroute(stream_sub()), &NoPayload),
        )
        .await
        .expect("WHO_STREAM opens");
        let got = wait("WHO_STREAM's answer", rx.recv())
            .await
            .expect("an answer")
            .expect("a good answer");
        assert_eq!(got["caller"], caller);
        assert_eq!(
            got["subroute"],
            format!("{:?}", Subroute::from(stream_sub()))
        );
        // Without a deadline a stream has none.
        assert!(!got.contains_key("deadline_ms"), "{got:?}");
        assert!(wait("the end", rx.recv()).await.is_none());

        let raw = wait(
            "the raw handler",
            conn.request(HandlerId::STAT_VOL, Bytes::new()),
        )
        .await;
        assert_eq!(raw, Ok(Bytes::from(caller.to_owned())));
    }
    c.shutdown().await;
}

/// A deadline and a caller's cancellation reach a waiting handler through
/// its context; a stream handler notices in its loop, and its output then
/// says why it cannot send.
pub(crate) async fn cancellation(setup: Setup) {
    let (c, reports) = cluster(setup).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let r = wait(
            "a call past its deadline",
            WAIT.call_with_timeout(&conn, &NoPayload, Duration::from_millis(200)),
        )
        .await;
        assert_eq!(r, Err(TypedError::Call(CallError::DeadlineExceeded)));
        assert_eq!(reports.next("the handler's start").await, "started");
        assert_eq!(
            reports.next("the handler's notice").await,
            "cancelled: DeadlineExceeded"
        );

        {
            let call = pin!(WAIT.call(&conn, &NoPayload));
            let started = pin!(reports.next("the handler's start"));
            match wait("the start", select(call, started)).await {
                Either::Right((said, _call)) => assert_eq!(said, "started"),
                Either::Left((r, _)) => panic!("the call ended first: {r:?}"),
            }
            // Dropping the call cancels it.
        }
        assert_eq!(
            reports.next("the handler's notice").await,
            "cancelled: CallerCancelled"
        );

        let (mut tx, mut rx) = wait("LOOP opens", LOOP.call(&conn, &NoPayload))
            .await
            .expect("LOOP opens");
        let m = mss(&[("x", "1")]);
        wait("a send", tx.send(&m)).await.expect("sent");
        let echoed = wait("the echo", rx.recv()).await.expect("an echo");
        assert_eq!(echoed, Ok(m));
        drop(rx);
        drop(tx);
        assert_eq!(
            reports.next("the stream handler's notice").await,
            "cancelled: CallerCancelled, then send: \
             Err(Send(Cancelled(CallerCancelled)))"
        );
    }
    c.shutdown().await;
}

/// A sender says whether the stream failed (and how), ended, or was closed
/// by this side.
pub(crate) async fn send_errors(setup: Setup) {
    let (c, _) = cluster(setup).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let (mut tx, mut rx) = wait("QUIT opens", QUIT.call(&conn, &"fail".to_owned()))
            .await
            .expect("QUIT opens");
        let remote = CallError::Remote("refpeer: no".into());
        assert_eq!(
            wait("the failure", rx.recv()).await,
            Some(Err(TypedError::Call(remote.clone())))
        );
        assert_eq!(
            wait("a send", tx.send(&Mss::new())).await,
            Err(TypedError::Send(StreamSendError::Failed(remote)))
        );

        let (mut tx, mut rx) = wait("QUIT opens", QUIT.call(&conn, &"end".to_owned()))
            .await
            .expect("QUIT opens");
        assert_eq!(wait("the end", rx.recv()).await, None);
        assert_eq!(
            wait("a send", tx.send(&Mss::new())).await,
            Err(TypedError::Send(StreamSendError::Ended))
        );

        let (mut tx, mut rx) = wait("LOOP opens", LOOP.call(&conn, &NoPayload))
            .await
            .expect("LOOP opens");
        wait("closing", SinkExt::close(&mut tx))
            .await
            .expect("closed");
        assert_eq!(
            wait("a send", tx.send(&Mss::new())).await,
            Err(TypedError::Send(StreamSendError::Closed))
        );
        assert_eq!(wait("the end", rx.recv()).await, None);

        // The raw halves say the same: a stream without input.
        let (mut raw, _rx) = wait("a raw stream", conn.open_stream(HandlerId::LISTEN, None))
            .await
            .expect("opens");
        assert_eq!(
            raw.send(Bytes::from_static(b"x")).await,
            Err(StreamSendError::NoInput)
        );
    }
    c.shutdown().await;
}

/// Raw and typed halves as `Sink`s and `Stream`s, with real backpressure
/// (more messages than the windows hold).
pub(crate) async fn sinks_and_streams(setup: Setup) {
    let (c, _) = cluster(setup).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let (mut tx, rx) = wait("DOUBLE opens", DOUBLE.call(&conn, &NoPayload))
            .await
            .expect("DOUBLE opens");
        let send = async move {
            let mut numbers = stream::iter(0..40u32).map(Ok);
            tx.send_all(&mut numbers).await?;
            SinkExt::close(&mut tx).await
        };
        let (sent, got) = wait("40 doubled numbers", join(send, rx.collect::<Vec<_>>())).await;
        assert_eq!(sent, Ok(()));
        let got: Vec<u32> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, (0..40).map(|n| n * 2).collect::<Vec<_>>());

        // The transcripts' echo stream (78, one in flight each way), raw.
        let (mut tx, rx) = wait(
            "the echo stream",
            conn.open_stream(HandlerId::TEST, Some(Bytes::from_static(b">"))),
        )
        .await
        .expect("opens");
        let send = async move {
            let mut messages = stream::iter(0..10).map(|i| Ok(Bytes::from(format!("{i}"))));
            tx.send_all(&mut messages).await?;
            SinkExt::close(&mut tx).await
        };
        let (sent, got) = wait("10 echoes", join(send, rx.try_collect::<Vec<_>>())).await;
        assert_eq!(sent, Ok(()));
        let want: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!(">{i}"))).collect();
        assert_eq!(got, Ok(want));
    }
    c.shutdown().await;
}

/// A handler's `?` on any error answers its text as a remote error.
pub(crate) async fn question_mark(setup: Setup) {
    let (c, _) = cluster(setup).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let r = wait("PARSE 12", PARSE.call(&conn, &"12".to_owned())).await;
        assert_eq!(r, Ok(12));
        let r = wait("PARSE x", PARSE.call(&conn, &"x".to_owned())).await;
        let text = "x".parse::<u64>().unwrap_err().to_string();
        assert_eq!(r, Err(TypedError::Call(CallError::Remote(text))));
    }
    c.shutdown().await;
}

/// A MinIO streaming handler by its catalogue name: no payload, no input,
/// its capacities from the catalogue (out 100), 150 messages through them.
pub(crate) async fn catalogue_stream(setup: Setup) {
    assert_eq!(
        LISTEN.capacities(),
        Capacities {
            in_capacity: 0,
            out_capacity: 100
        }
    );
    let (c, _) = cluster(setup).await;
    for (from, to) in c.directions() {
        let conn = c.conn(from, to);
        let rx = wait("LISTEN opens", LISTEN.call(&conn, &NoPayload))
            .await
            .expect("LISTEN opens");
        let got: Vec<Mss> = wait("150 messages", rx.try_collect())
            .await
            .expect("a clean end");
        let want: Vec<Mss> = (0..150).map(|i| mss(&[("n", &i.to_string())])).collect();
        assert_eq!(got, want);
    }
    c.shutdown().await;
}

/// The transcripts' typed scenarios (handlers 70–72), as `grid-conformance
/// call --scenario typed` runs them against Go.
pub(crate) async fn typed_scenarios(setup: Setup) {
    let c = Cluster::start(setup, Handlers::default()).await;
    for (from, to) in c.directions() {
        for name in conformance::scenarios::TYPED {
            if let Err(why) = conformance::scenarios::run(name, &c.conn(from, to)).await {
                panic!("{name}, node {from} -> node {to}: {why}");
            }
        }
    }
    c.shutdown().await;
}
