//! `grid-bench --remote HOST --local HOST`: a client-only load against a
//! node that is already running and serves the reference handler table
//! (`grid-conformance serve` of either runtime, Go's reference peer, or
//! any other implementation of that table).
//!
//! Unlike the measurements of the other modes, this one is built to run
//! through faults: every call carries a deadline, an error is counted and
//! the load goes on, and the run never stops early. Each second it prints
//! what completed in that second; at the end, the totals. A call that has
//! not resolved (success or typed error) by its deadline plus one second is
//! abandoned and counted as *unresolved*: that is a bug, and the exit
//! status is 1 if there was any.
//!
//! Besides its stdout report it writes to stderr, one line each, when the
//! run started, when errors begin after a success and when the first
//! success ends such a streak, with wall-clock (Unix) times so that a fault
//! suite can line them up with what it did.

use std::collections::BTreeMap;
use std::net::{TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use conformance::node::{Node, RuntimeKind};
use grid_proto::HandlerId;
use grid_proto::driver::{Connection, Options, StreamOptions};

use crate::hist::Hist;
use crate::load::{self, Exec, SmolExec, TokioExec};

/// How long the run waits for the first connection before it starts the
/// clock anyway (calls then fail with `not connected` and are counted).
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Past its deadline, how long a call may take to resolve before it is
/// abandoned as unresolved.
const GRACE: Duration = Duration::from_secs(1);

/// After an error while the connection is down, how long a caller waits for
/// it to come back before trying again (it tries again at once when it
/// does): keeps a dead peer from turning into a busy loop of errors.
const RECONNECT_POLL: Duration = Duration::from_millis(100);

/// After any other error, the pause before the next call.
const ERROR_PAUSE: Duration = Duration::from_millis(1);

/// Most event lines (errors began / recovered) a run writes: a link that
/// flaps call by call would otherwise write one per call.
const MAX_EVENTS: u64 = 200;

/// What `--remote` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteWorkload {
    /// Closed-loop echo requests on handler 78.
    Single,
    /// Echo streams on handler 78 (InCapacity 1, OutCapacity 1): each
    /// caller sends one message and awaits its echo; a stream is used for
    /// half its deadline, closed and replaced.
    Stream,
}

/// The options of a `--remote` run.
#[derive(Debug, Clone)]
pub(crate) struct RemoteArgs {
    /// The serving node's host name.
    pub(crate) remote: String,
    /// This node's host name (the dial rule may make the remote dial it).
    pub(crate) local: String,
    /// Where to listen, if not on the local host's own address (behind a
    /// proxy that listens there).
    pub(crate) listen: Option<String>,
    pub(crate) runtime: RuntimeKind,
    pub(crate) workload: RemoteWorkload,
    pub(crate) concurrency: usize,
    pub(crate) payload: usize,
    pub(crate) duration: Duration,
    /// Deadline of each request; lifetime of each stream.
    pub(crate) deadline: Duration,
    pub(crate) token: String,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Option<Duration>,
    pub(crate) machine: bool,
}

/// What completed in one second of the run.
struct Second {
    ok: u64,
    errors: u64,
    hist: Hist,
}

/// Errors since the last success, for the stderr event lines.
#[derive(Default)]
struct Streak {
    errors: u64,
    since: Option<Instant>,
    last_ok: Option<Instant>,
    /// Event lines written so far.
    events: u64,
}

impl Streak {
    /// Whether another event line may be written (and says so once when
    /// not).
    fn may_tell(&mut self) -> bool {
        self.events += 1;
        if self.events == MAX_EVENTS + 1 {
            eprintln!("grid-bench: more than {MAX_EVENTS} events; no more event lines");
        }
        self.events <= MAX_EVENTS
    }
}

/// What the callers add up.
struct Tally {
    start: Instant,
    start_unix: f64,
    end: Instant,
    seconds: Mutex<Vec<Second>>,
    ok: AtomicU64,
    errors: AtomicU64,
    unresolved: AtomicU64,
    kinds: Mutex<BTreeMap<String, u64>>,
    streak: Mutex<Streak>,
    done: AtomicUsize,
}

impl Tally {
    fn new(duration: Duration) -> Tally {
        let start = Instant::now();
        Tally {
            start,
            start_unix: unix_now(),
            end: start + duration,
            seconds: Mutex::new(Vec::new()),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unresolved: AtomicU64::new(0),
            kinds: Mutex::new(BTreeMap::new()),
            streak: Mutex::new(Streak::default()),
            done: AtomicUsize::new(0),
        }
    }

    fn unix(&self, t: Instant) -> f64 {
        self.start_unix + t.saturating_duration_since(self.start).as_secs_f64()
    }

    fn in_second(&self, at: Instant, f: impl FnOnce(&mut Second)) {
        let i = at.saturating_duration_since(self.start).as_secs() as usize;
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        while seconds.len() <= i {
            seconds.push(Second {
                ok: 0,
                errors: 0,
                hist: Hist::new(),
            });
        }
        f(&mut seconds[i]);
    }

    fn success(&self, at: Instant, latency: Duration) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.in_second(at, |s| {
            s.ok += 1;
            s.hist.record(latency.as_nanos() as u64);
        });
        let mut streak = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = streak.since.take()
            && streak.may_tell()
        {
            eprintln!(
                "grid-bench: at unix {:.6}: recovered after {:.3} s without success ({} errors since the last success)",
                self.unix(at),
                at.saturating_duration_since(streak.last_ok.unwrap_or(since))
                    .as_secs_f64(),
                streak.errors
            );
        }
        streak.errors = 0;
        streak.last_ok = Some(at);
    }

    fn error(&self, at: Instant, why: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.in_second(at, |s| s.errors += 1);
        let mut streak = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        streak.errors += 1;
        if streak.since.is_none() {
            streak.since = Some(at);
        }
        if streak.errors == 1 && streak.may_tell() {
            eprintln!(
                "grid-bench: at unix {:.6}: errors began: {why}",
                self.unix(at)
            );
        }
        drop(streak);
        *self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }

    fn unresolved(&self, what: &str) {
        self.unresolved.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "grid-bench: at unix {:.6}: UNRESOLVED: {what} had neither succeeded nor failed {} s after its deadline",
            unix_now(),
            GRACE.as_secs()
        );
    }

    /// Second `i`'s figures: ok, errors, p50 µs, p99 µs.
    fn second(&self, i: usize) -> (u64, u64, Option<f64>, Option<f64>) {
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = seconds.get(i) else {
            return (0, 0, None, None);
        };
        let us = |q| s.hist.quantile(q).map(|ns| ns as f64 / 1000.0);
        (s.ok, s.errors, us(0.5), us(0.99))
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The address a host name such as `http://127.0.0.1:9001` stands for.
pub(crate) fn host_addr(host: &str) -> Result<std::net::SocketAddr, String> {
    let rest = host
        .split_once("://")
        .map_or(host, |(_, rest)| rest)
        .trim_end_matches('/');
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()
        .map_err(|e| format!("{host}: not a host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))
}

/// Options presenting and accepting `token`, with the given connection
/// timers.
fn options(a: &RemoteArgs) -> Options {
    let mut options = Options::default();
    let token = a.token.clone();
    options.auth_token = Arc::new(move |_| token.clone());
    let token = a.token.clone();
    options.validate_token = Arc::new(move |t| {
        if t == token {
            Ok(())
        } else {
            Err("invalid token".into())
        }
    });
    if let Some(d) = a.ping_interval {
        options.connection.ping_interval = d;
    }
    if let Some(d) = a.pong_timeout {
        options.connection.pong_timeout = d;
    }
    options
}

/// Runs the load; the exit status (1 if any call was unresolved).
pub(crate) fn run(a: &RemoteArgs) -> Result<u8, String> {
    let listen = match &a.listen {
        Some(addr) => addr
            .to_socket_addrs()
            .map_err(|e| format!("--listen {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("--listen {addr}: no address"))?,
        None => host_addr(&a.local)?,
    };
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let hosts = vec![a.local.clone(), a.remote.clone()];
    let node = Node::start(a.runtime, &a.local, &hosts, options(a), Some(listener))?;
    let conn = node
        .connection(&a.remote)
        .ok_or_else(|| format!("{} is not a peer of {}", a.remote, a.local))?;
    let t0 = Instant::now();
    match node.block_on(conn.wait_for_connect(FIRST_CONNECT_WAIT)) {
        Ok(()) => eprintln!(
            "grid-bench: connected to {} after {:.3} s",
            a.remote,
            t0.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!(
            "grid-bench: no connection to {} within {FIRST_CONNECT_WAIT:?} ({e}); starting anyway",
            a.remote
        ),
    }
    let unresolved = match a.runtime {
        RuntimeKind::Tokio => node.block_on(drive(TokioExec, a, conn)),
        RuntimeKind::Smol => node.block_on(drive(SmolExec, a, conn)),
    };
    // Leftover tasks and the connection need no orderly end.
    Ok(u8::from(unresolved > 0))
}

/// Starts the callers and the reporter; returns the unresolved count once
/// everything has resolved or been abandoned.
async fn drive<E: Exec>(ex: E, a: &RemoteArgs, conn: Connection) -> u64 {
    let tally = Arc::new(Tally::new(a.duration));
    eprintln!("grid-bench: started at unix {:.6}", tally.start_unix);
    if !a.machine {
        println!(
            "grid-bench --remote: node {} ({}) calling {}: {} x{}, {} B, deadline {:.2} s, {:.0} s",
            a.local,
            a.runtime,
            a.remote,
            match a.workload {
                RemoteWorkload::Single => "single",
                RemoteWorkload::Stream => "stream",
            },
            a.concurrency,
            a.payload,
            a.deadline.as_secs_f64(),
            a.duration.as_secs_f64()
        );
    }
    let payload = Bytes::from(vec![0xa5u8; a.payload]);
    for _ in 0..a.concurrency {
        let caller = Caller {
            ex: ex.clone(),
            conn: conn.clone(),
            tally: Arc::clone(&tally),
            payload: payload.clone(),
            deadline: a.deadline,
        };
        let workload = a.workload;
        ex.spawn(async move {
            match workload {
                RemoteWorkload::Single => caller.requests().await,
                RemoteWorkload::Stream => caller.streams().await,
            }
            caller.tally.done.fetch_add(1, Ordering::AcqRel);
        });
    }
    // One line per whole second, printed just after the second ends.
    let whole = a.duration.as_secs() as usize;
    for k in 1..=whole {
        ex.sleep_until(tally.start + Duration::from_secs(k as u64) + Duration::from_millis(20))
            .await;
        let (ok, errors, p50, p99) = tally.second(k - 1);
        let us = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
        if a.machine {
            println!("progress\t{k}\t{ok}\t{errors}\t{}\t{}", us(p50), us(p99));
        } else {
            println!(
                "{k:>5} s {ok:>10} ok {errors:>8} errors   p50 {:>7} µs   p99 {:>7} µs",
                us(p50),
                us(p99)
            );
        }
    }
    // Every caller stops issuing at the end and its last call resolves
    // within deadline + GRACE; the margin covers a reconnect poll.
    let limit = tally.end + a.deadline + GRACE + Duration::from_secs(2);
    while tally.done.load(Ordering::Acquire) < a.concurrency && Instant::now() < limit {
        ex.sleep_until(Instant::now() + Duration::from_millis(10))
            .await;
    }
    let stuck = a.concurrency - tally.done.load(Ordering::Acquire).min(a.concurrency);
    for _ in 0..stuck {
        tally.unresolved("a caller");
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let unresolved = tally.unresolved.load(Ordering::Relaxed);
    let kinds = tally
        .kinds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if a.machine {
        if !kinds.is_empty() {
            eprintln!("grid-bench: errors by kind: {}", kinds.join("; "));
        }
        println!("total\t{ok}\t{errors}\t{unresolved}");
    } else {
        println!(
            "total: {ok} ok, {errors} errors, {unresolved} unresolved ({:.0} ok/s)",
            ok as f64 / a.duration.as_secs_f64()
        );
        if !kinds.is_empty() {
            println!("errors by kind: {}", kinds.join("; "));
        }
    }
    unresolved
}

/// One caller of the load.
struct Caller<E> {
    ex: E,
    conn: Connection,
    tally: Arc<Tally>,
    payload: Bytes,
    deadline: Duration,
}

impl<E: Exec> Caller<E> {
    /// Closed-loop requests until the end of the run.
    async fn requests(&self) {
        while Instant::now() < self.tally.end {
            let t0 = Instant::now();
            let call = self.conn.request_with_deadline(
                HandlerId::TEST,
                self.payload.clone(),
                t0 + self.deadline,
            );
            let result = load::timeout(&self.ex, self.deadline + GRACE, call).await;
            let t1 = Instant::now();
            match result {
                None => {
                    self.tally.unresolved("a request");
                }
                Some(Ok(answer)) if answer.len() == self.payload.len() => {
                    self.tally.success(t1, t1 - t0);
                }
                Some(Ok(answer)) => {
                    let why = format!("wrong echo: {} bytes back", answer.len());
                    self.tally.error(t1, why);
                    self.pause().await;
                }
                Some(Err(e)) => {
                    self.tally.error(t1, e.to_string());
                    self.pause().await;
                }
            }
        }
    }

    /// Streams until the end of the run: each opened with the deadline,
    /// used for round trips for half of it, then closed (and drained).
    async fn streams(&self) {
        while Instant::now() < self.tally.end {
            let deadline = Instant::now() + self.deadline;
            let session = load::timeout(&self.ex, self.deadline + GRACE, self.stream(deadline));
            match session.await {
                None => self.tally.unresolved("a stream"),
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    self.tally.error(Instant::now(), e);
                    self.pause().await;
                }
            }
        }
    }

    /// One stream: its round trips count as successes; the first failure
    /// ends it.
    async fn stream(&self, deadline: Instant) -> Result<(), String> {
        let opts = StreamOptions {
            deadline: Some(deadline),
            ..StreamOptions::default()
        };
        let (mut tx, mut rx) = self
            .conn
            .open_stream_with(HandlerId::TEST, None, opts)
            .await
            .map_err(|e| e.to_string())?;
        let retire = deadline - self.deadline / 2;
        loop {
            let now = Instant::now();
            if now >= retire || now >= self.tally.end {
                break;
            }
            tx.send(self.payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            match rx.recv().await {
                Some(Ok(m)) if m.len() == self.payload.len() => {
                    let t1 = Instant::now();
                    self.tally.success(t1, t1 - now);
                }
                Some(Ok(m)) => return Err(format!("wrong echo: {} bytes back", m.len())),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the stream ended before its echo".into()),
            }
        }
        tx.close();
        match rx.recv().await {
            None => Ok(()),
            Some(Ok(_)) => Err("a message after the input ended".into()),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    /// Waits a little after an error: until the connection is back (at most
    /// [`RECONNECT_POLL`]) when it is down, else [`ERROR_PAUSE`].
    async fn pause(&self) {
        if !self.conn.is_connected() {
            let _ = self.conn.wait_for_connect(RECONNECT_POLL).await;
        } else {
            self.ex.sleep_until(Instant::now() + ERROR_PAUSE).await;
        }
    }
}
