//! A simulated node: a grid-tokio manager over the turmoil runtime, its
//! handlers, the callers that load it until the heal and the probes that
//! time the reconnects after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_tokio::turmoil::{Manager, Turmoil, serve};
use grid_tokio::{
    CallError, Capacities, Connection, HandlerId, Options, RemoteError, StreamCall, StreamOptions,
};

use crate::ledger::{Call, Shared, expected_error, kind};
use crate::scenario::{PORT, Rng, Scenario, derive, url};

/// Longest a node's slow handler sleeps.
pub(crate) const SLOW_MAX_MS: u64 = 2_000;
/// Callers per node.
const CALLERS: u64 = 2;
/// Single: answers with the payload.
const ECHO: HandlerId = HandlerId(41);
/// Single: fails with the payload as the remote error.
const FAIL: HandlerId = HandlerId(42);
/// Single: sleeps the payload's first 8 bytes (ms, big-endian), then echoes.
const SLOW: HandlerId = HandlerId(43);
/// Stream: sends every message back.
const STREAM_ECHO: HandlerId = HandlerId(44);

/// The host's clock, as the manager reads it (deadlines are on it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The software of node `node`, started for the `run`-th time.
pub(crate) async fn node_software(
    sc: Arc<Scenario>,
    shared: Shared,
    node: usize,
    run: u64,
) -> turmoil::Result {
    let hosts: Vec<String> = (0..sc.nodes).map(url).collect();
    let options = Options {
        seed: Some(derive(sc.seed, &[2, node as u64, run])),
        ..Options::default()
    };
    let rt = Turmoil::with_clock_skew(sc.skews[node]);
    let manager = Manager::new(rt, &url(node), &hosts, options)?;
    manager.register_single(ECHO, |p: Bytes| async move { Ok::<_, RemoteError>(p) })?;
    manager.register_single(FAIL, |p: Bytes| async move {
        Err::<Bytes, _>(RemoteError(String::from_utf8_lossy(&p).into_owned()))
    })?;
    manager.register_single(SLOW, |p: Bytes| async move {
        let ms = p
            .get(..8)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
        tokio::time::sleep(Duration::from_millis(ms.min(SLOW_MAX_MS))).await;
        Ok::<_, RemoteError>(p)
    })?;
    manager.register_stream(STREAM_ECHO, Capacities::DEFAULT, echo_stream)?;
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    tokio::spawn(serve(manager.clone(), listener));
    manager.start();
    {
        let mut l = shared.ledger();
        l.event(format_args!("start n{node} run {run}"));
        l.managers[node] = Some(manager.clone());
    }
    for caller in 0..CALLERS {
        let rng = Rng::new(derive(sc.seed, &[3, node as u64, run, caller]));
        tokio::spawn(caller_loop(
            sc.clone(),
            shared.clone(),
            manager.clone(),
            node,
            rng,
        ));
    }
    tokio::spawn(probe_peers(
        sc.clone(),
        shared.clone(),
        manager.clone(),
        node,
    ));
    std::future::pending().await
}

async fn echo_stream(call: StreamCall) -> Result<(), RemoteError> {
    let mut output = call.output;
    let Some(mut input) = call.input else {
        return Err(RemoteError("no input".into()));
    };
    while let Some(m) = input.recv().await {
        let m = m.map_err(|e| RemoteError(e.to_string()))?;
        output
            .send(m)
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// Random calls to random peers until the heal.
async fn caller_loop(
    sc: Arc<Scenario>,
    shared: Shared,
    manager: Manager,
    node: usize,
    mut rng: Rng,
) {
    while !shared.healed() {
        let peer = (node + 1 + rng.pick(sc.nodes - 1)) % sc.nodes;
        let conn = manager.connection(&url(peer)).expect("a known host");
        match rng.range(0, 99) {
            0..30 => {
                let deadline = rng.ms(50, 3_000);
                let call = shared.issue(node, peer, "echo+deadline");
                let body = Bytes::from(format!("echo {}", call.id));
                let result = conn
                    .request_with_deadline(ECHO, body.clone(), now() + deadline)
                    .await;
                settle_single(call, result, Ok(body));
            }
            30..45 => {
                let call = shared.issue(node, peer, "echo");
                let body = Bytes::from(format!("echo {}", call.id));
                let result = conn.request(ECHO, body.clone()).await;
                settle_single(call, result, Ok(body));
            }
            45..55 => {
                let call = shared.issue(node, peer, "fail");
                let text = format!("no such bucket {}", call.id);
                let result = conn.request(FAIL, text.clone()).await;
                settle_single(call, result, Err(text));
            }
            55..67 => {
                let delay = rng.range(0, SLOW_MAX_MS);
                let deadline = rng.ms(100, 3_000);
                let call = shared.issue(node, peer, "slow");
                let mut body = delay.to_be_bytes().to_vec();
                body.extend_from_slice(format!("slow {}", call.id).as_bytes());
                let body = Bytes::from(body);
                let result = conn
                    .request_with_deadline(SLOW, body.clone(), now() + deadline)
                    .await;
                settle_single(call, result, Ok(body));
            }
            67..77 => {
                // Cancelled by drop, often while the handler still runs.
                let delay = rng.range(0, SLOW_MAX_MS);
                let patience = rng.ms(1, 1_500);
                let call = shared.issue(node, peer, "slow+drop");
                let mut body = delay.to_be_bytes().to_vec();
                body.extend_from_slice(format!("drop {}", call.id).as_bytes());
                let body = Bytes::from(body);
                match tokio::time::timeout(patience, conn.request(SLOW, body.clone())).await {
                    Ok(result) => settle_single(call, result, Ok(body)),
                    Err(_) => call.resolve("cancelled"),
                }
            }
            77..92 => {
                let messages = rng.range(1, 6);
                let deadline = rng.chance(50).then(|| rng.ms(200, 5_000));
                let call = shared.issue(node, peer, "stream");
                stream_call(call, &conn, messages, deadline, None).await;
            }
            _ => {
                let messages = rng.range(2, 6);
                let drop_after = rng.range(0, messages - 1);
                let call = shared.issue(node, peer, "stream+drop");
                stream_call(call, &conn, messages, None, Some(drop_after)).await;
            }
        }
        tokio::time::sleep(rng.ms(0, 400)).await;
    }
}

/// Checks a single call's result against what the handler answers.
fn settle_single(call: Call, result: Result<Bytes, CallError>, want: Result<Bytes, String>) {
    match (result, want) {
        (Ok(got), Ok(want)) if got == want => call.resolve("ok"),
        (Err(CallError::Remote(got)), Err(want)) if got == want => call.resolve("remote"),
        (Err(e), _) if expected_error(&e) => call.resolve(&kind(&e)),
        (got, want) => {
            call.violation(format!("call {}: got {got:?}, want {want:?}", call.id));
            call.resolve("wrong");
        }
    }
}

/// A stream to the echo handler: `messages` round trips, then EOF; or,
/// with `drop_after`, both halves dropped after that many round trips.
async fn stream_call(
    call: Call,
    conn: &Connection,
    messages: u64,
    deadline: Option<Duration>,
    drop_after: Option<u64>,
) {
    let options = StreamOptions {
        deadline: deadline.map(|d| now() + d),
        ..StreamOptions::default()
    };
    let (mut tx, mut rx) = match conn.open_stream_with(STREAM_ECHO, None, options).await {
        Ok(halves) => halves,
        Err(e) => return settle_stream(call, Err(e)),
    };
    let mut end = None;
    for i in 0..messages {
        if drop_after == Some(i) {
            drop((tx, rx));
            return call.resolve("cancelled");
        }
        let body = Bytes::from(format!("{} #{i}", call.id));
        if tx.send(body.clone()).await.is_err() {
            // The stream ended under us: its receiver says why.
            end = Some(match rx.recv().await {
                Some(Err(e)) => Err(e),
                other => Ok(Some(format!(
                    "send failed, then the receiver gave {other:?}"
                ))),
            });
            break;
        }
        match rx.recv().await {
            Some(Ok(got)) if got == body => {}
            Some(Err(e)) => end = Some(Err(e)),
            other => end = Some(Ok(Some(format!("sent {body:?}, received {other:?}")))),
        }
        if end.is_some() {
            break;
        }
    }
    let end = match end {
        Some(end) => end,
        None => {
            tx.close();
            match rx.recv().await {
                None => Ok(None),
                Some(Err(e)) => Err(e),
                Some(Ok(extra)) => Ok(Some(format!("extra message {extra:?}"))),
            }
        }
    };
    // An ended stream stays ended.
    if let Some(item) = rx.recv().await {
        call.violation(format!("stream {}: {item:?} after its end", call.id));
    }
    settle_stream(call, end);
}

/// Settles a stream: `Ok(None)` ended cleanly, `Ok(Some(what))` went wrong
/// in a way no error explains, `Err` ended with that error.
fn settle_stream(call: Call, end: Result<Option<String>, CallError>) {
    match end {
        Ok(None) => call.resolve("ok"),
        Err(e) if expected_error(&e) => call.resolve(&kind(&e)),
        Err(e) => {
            call.violation(format!("stream {}: unexpected error {e:?}", call.id));
            call.resolve("wrong");
        }
        Ok(Some(what)) => {
            call.violation(format!("stream {}: {what}", call.id));
            call.resolve("wrong");
        }
    }
}

/// After the heal: calls every peer this node can talk to until a call
/// succeeds, and notes when.
async fn probe_peers(sc: Arc<Scenario>, shared: Shared, manager: Manager, node: usize) {
    // One poll per simulation step: the heal is the harness's to announce.
    while !shared.healed() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for peer in (0..sc.nodes).filter(|&p| p != node && sc.can_connect(node, p)) {
        tokio::spawn(probe(shared.clone(), manager.clone(), node, peer));
    }
}

async fn probe(shared: Shared, manager: Manager, node: usize, peer: usize) {
    let conn = manager.connection(&url(peer)).expect("a known host");
    loop {
        if conn.wait_for_connect(Duration::from_secs(1)).await.is_ok() {
            let deadline = now() + Duration::from_secs(1);
            if let Ok(answer) = conn.request_with_deadline(ECHO, "probe", deadline).await
                && answer == "probe"
            {
                let at = turmoil::sim_elapsed().unwrap_or_default();
                let mut l = shared.ledger();
                l.reconnected.entry((node, peer)).or_insert(at);
                l.event(format_args!("probe n{node} n{peer}"));
                return;
            }
            // Connected, but the call failed (a session that died silently
            // and is not found out yet): try again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
