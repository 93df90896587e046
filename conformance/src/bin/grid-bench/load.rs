//! Runtime-neutral load generators: the closed loop of requests, the window
//! of measurement and the CPU accounting, used by every subject.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};

use crate::hist::Hist;
use crate::plan::{Params, Row};
use crate::sys;

/// A boxed, sendable future.
pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The executor the load runs on (the subject's own runtime).
pub(crate) trait Exec: Clone + Send + Sync + 'static {
    /// Runs `f` as a detached task.
    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static);
    /// Completes at `at`.
    fn sleep_until(&self, at: Instant) -> BoxFut<()>;
}

/// tokio (the multi-thread runtime the caller entered).
#[derive(Clone, Copy)]
pub(crate) struct TokioExec;

impl Exec for TokioExec {
    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(f);
    }
    fn sleep_until(&self, at: Instant) -> BoxFut<()> {
        Box::pin(tokio::time::sleep_until(at.into()))
    }
}

/// grid-smol's executor (`grid_smol::spawn`): callers on another executor would pay a thread hop per call.
#[derive(Clone, Copy)]
pub(crate) struct SmolExec;

impl Exec for SmolExec {
    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        grid_smol::spawn(f).detach();
    }
    fn sleep_until(&self, at: Instant) -> BoxFut<()> {
        Box::pin(async move {
            smol::Timer::at(at).await;
        })
    }
}

/// Runs `f` for at most `limit`; `None` if it did not finish.
pub(crate) async fn timeout<E: Exec, T>(
    ex: &E,
    limit: Duration,
    f: impl Future<Output = T>,
) -> Option<T> {
    let f = std::pin::pin!(f);
    match select(f, ex.sleep_until(Instant::now() + limit)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// The measured window: operations completing in `[start, end)` count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

impl Window {
    /// Warm-up from now, then the measured duration.
    pub(crate) fn new(p: &Params) -> Window {
        let start = Instant::now() + p.warmup;
        Window {
            start,
            end: start + p.duration,
        }
    }

    pub(crate) fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    pub(crate) fn secs(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// One load task's progress, on a cache line of its own so that keeping it
/// up to date after every operation costs about what a local variable does
/// (and a task that hangs still leaves what it did).
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct Slot {
    /// Operations counted (completed in the window).
    counted: AtomicU64,
    /// Every operation, in the window or not.
    total: AtomicU64,
}

impl Slot {
    pub(crate) fn set(&self, counted: u64, total: u64) {
        self.counted.store(counted, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }
}

/// What the load tasks of one measurement add up, shared so that a hang
/// still leaves the figures gathered so far.
#[derive(Default)]
pub(crate) struct Tally {
    /// Counted operations reported other than through slots.
    pub(crate) count: AtomicU64,
    slots: Mutex<Vec<(&'static str, Arc<Slot>)>>,
    pub(crate) errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    hist: Mutex<Option<Hist>>,
    pub(crate) done: AtomicUsize,
}

impl Tally {
    /// A progress slot for one task; `role` names its operations in a
    /// hang report ("sent", "received", ...).
    pub(crate) fn slot(&self, role: &'static str) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((role, Arc::clone(&slot)));
        slot
    }

    /// Counted operations, and every operation by role.
    fn progress(&self) -> (u64, Vec<(&'static str, u64)>) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut counted = self.count.load(Ordering::Relaxed);
        let mut roles: Vec<(&'static str, u64)> = Vec::new();
        for (role, s) in slots.iter() {
            counted += s.counted.load(Ordering::Relaxed);
            let total = s.total.load(Ordering::Relaxed);
            match roles.iter_mut().find(|(r, _)| r == role) {
                Some((_, t)) => *t += total,
                None => roles.push((role, total)),
            }
        }
        (counted, roles)
    }
    pub(crate) fn error(&self, e: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(e.into());
        }
    }

    pub(crate) fn merge_hist(&self, h: &Hist) {
        let mut mine = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *mine {
            Some(m) => m.merge(h),
            None => *mine = Some(h.clone()),
        }
    }

    pub(crate) fn finished(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
    }

    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How long the load may take to wind down after the window before it is
/// reported as hung: twice the window, between 2 and 10 seconds (winding
/// down takes milliseconds).
fn drain(p: &Params) -> Duration {
    (p.duration * 2).clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// What a hang report says: what a task still running after [`drain`]
/// means, and a probe of the subject's state for it.
pub(crate) struct Hang<'a> {
    pub(crate) meaning: &'a str,
    pub(crate) probe: &'a dyn Fn() -> String,
}

/// Waits through the window (taking the CPU time at both ends), then for
/// `tasks` load tasks to finish, and makes the row.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn observe<E: Exec>(
    ex: &E,
    p: &Params,
    w: Window,
    tally: &Tally,
    tasks: usize,
    unit: &str,
    hang: Hang<'_>,
) -> Row {
    ex.sleep_until(w.start).await;
    let cpu0 = sys::cpu_seconds();
    let server0 = sys::server_cpu_seconds();
    ex.sleep_until(w.end).await;
    let cpu1 = sys::cpu_seconds();
    let server1 = sys::server_cpu_seconds();
    let drain = drain(p);
    let deadline = Instant::now() + drain;
    while tally.done.load(Ordering::Acquire) < tasks && Instant::now() < deadline {
        ex.sleep_until(Instant::now() + Duration::from_millis(5))
            .await;
    }
    let (count, totals) = tally.progress();
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let cpu = used(cpu0, cpu1);
    let server_cpu = used(server0, server1);
    let hist = tally.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let us = |q: f64| {
        hist.as_ref()
            .and_then(|h| h.quantile(q))
            .map(|ns| ns as f64 / 1000.0)
    };
    let mut notes = Vec::new();
    let done = tally.done.load(Ordering::Acquire);
    if done < tasks {
        let totals: Vec<String> = totals.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let probe = (hang.probe)();
        notes.push(format!(
            "HANG: {} of {tasks} load tasks still running {}s after the window: {}; in all: {}{}{probe}",
            tasks - done,
            drain.as_secs(),
            hang.meaning,
            totals.join(", "),
            if probe.is_empty() { "" } else { "; " },
        ));
    }
    let errors = tally.errors.load(Ordering::Relaxed);
    if let Some(e) = tally.first_error() {
        notes.push(format!("ERRORS ({errors}), first: {e}"));
    }
    if count == 0 {
        notes.push("nothing completed in the window".into());
    }
    let pct = |c: Option<f64>| c.map(|c| c / w.secs() * 100.0);
    let per_op = |c: Option<f64>| c.filter(|_| count > 0).map(|c| c / count as f64 * 1e6);
    Row {
        workload: p.workload.name().into(),
        subject: p.subject.name().into(),
        topology: p.topology.name().into(),
        concurrency: p.concurrency as u64,
        figure: count as f64 / w.secs(),
        unit: unit.into(),
        p50_us: us(0.5),
        p99_us: us(0.99),
        cpu_pct: pct(cpu),
        cpu_us_per_op: per_op(cpu),
        server_cpu_pct: pct(server_cpu),
        server_cpu_us_per_op: per_op(server_cpu),
        errors: errors + (tasks - done.min(tasks)) as u64,
        note: notes.join("; "),
    }
}

/// The closed loop of the single workload: `p.concurrency` tasks, each
/// sending a request with `p.payload` bytes and awaiting its answer before
/// the next, until the window ends. `call` sends one request.
pub(crate) async fn closed_loop<E, F, Fut>(ex: &E, p: &Params, call: F) -> Row
where
    E: Exec,
    F: Fn(Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
{
    let payload = Bytes::from(vec![0xa5u8; p.payload]);
    let tally = Arc::new(Tally::default());
    let w = Window::new(p);
    for _ in 0..p.concurrency {
        let call = call.clone();
        let payload = payload.clone();
        let tally = Arc::clone(&tally);
        let slot = tally.slot("answered");
        ex.spawn(async move {
            let mut hist = Hist::new();
            let (mut n, mut total) = (0u64, 0u64);
            loop {
                let t0 = Instant::now();
                if t0 >= w.end {
                    break;
                }
                let r = call(payload.clone()).await;
                let t1 = Instant::now();
                match r {
                    Ok(answer) if answer.len() == payload.len() => {
                        total += 1;
                        if w.contains(t1) {
                            n += 1;
                            hist.record((t1 - t0).as_nanos() as u64);
                        }
                        slot.set(n, total);
                    }
                    Ok(answer) => {
                        tally.error(format!(
                            "answer of {} bytes to a {}-byte echo",
                            answer.len(),
                            payload.len()
                        ));
                        break;
                    }
                    Err(e) => {
                        tally.error(e);
                        break;
                    }
                }
            }
            tally.merge_hist(&hist);
            tally.finished();
        });
    }
    observe(
        ex,
        p,
        w,
        &tally,
        p.concurrency,
        "req/s",
        Hang {
            meaning: "a request got no answer",
            probe: &String::new,
        },
    )
    .await
}

/// The memory row: growth of anonymous resident memory (`RssAnon`: heap
/// and stacks) per unit, rounded, over both ends of the connection (in a
/// two-process measurement, client and server process added up, each in
/// the note); `VmRSS` (which also counts the binary's code pages touched
/// for the first time) goes in the note.
pub(crate) fn memory_row(
    p: &Params,
    workload: &str,
    n: u64,
    before: sys::Sides,
    after: sys::Sides,
) -> Row {
    let (d0, d1) = (before.total(), after.total());
    let total = d1.total as f64 - d0.total as f64;
    let anon = d1.anon as f64 - d0.anon as f64;
    let per = n.max(1) as f64;
    let mut note = format!(
        "RssAnon {:+.0} KiB, VmRSS {:+.0} KiB in all ({:.0} B VmRSS per unit)",
        anon / 1024.0,
        total / 1024.0,
        total / per
    );
    if let (Some(s0), Some(s1)) = (before.server, after.server) {
        let kib = |a: u64, b: u64| (b as f64 - a as f64) / 1024.0;
        note = format!(
            "{note}; RssAnon client {:+.0} KiB, server {:+.0} KiB",
            kib(before.client.anon, after.client.anon),
            kib(s0.anon, s1.anon)
        );
    }
    Row {
        workload: workload.into(),
        subject: p.subject.name().into(),
        topology: p.topology.name().into(),
        concurrency: n,
        figure: (anon / per).round(),
        unit: if n == 1 {
            "B".into()
        } else {
            "B/stream".into()
        },
        note,
        ..Row::default()
    }
}

/// Lets a freshly started process settle before an RSS baseline.
pub(crate) async fn settle<E: Exec>(ex: &E) {
    ex.sleep_until(Instant::now() + Duration::from_millis(300))
        .await;
}
