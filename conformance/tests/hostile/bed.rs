//! The test bed: a manager under attack (the "target", on tokio or smol),
//! a well-behaved node on the same runtime connected to it and calling both
//! ways for the whole test, host names the hostile peer may use, a watchdog, and
//! memory figures (process RSS from `/proc/self/status`, the peak reset
//! through `/proc/self/clear_refs`; tests run one at a time so the figures
//! are the test's own).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::driver::{Connection, Options};
use grid_proto::{HandlerId, State, Stats, should_dial};

use crate::harness::{Handlers, Kind, Node, host_of, listen, test_options, within};

/// Longest a whole test may take before the watchdog ends the process.
const WATCHDOG: Duration = Duration::from_secs(60);
/// Tests run one at a time: the memory figures are per test.
static SERIAL: Mutex<()> = Mutex::new(());

/// A field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

/// What the background traffic between the target and the good node did.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    slowest_us: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Echo requests both ways between the target and the good node, one pair
/// at a time, until stopped.
async fn traffic(to_good: Connection, to_target: Connection, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        for (dir, conn) in [("target->good", &to_good), ("good->target", &to_target)] {
            let payload = Bytes::from(format!("{dir} {i}").into_bytes());
            let start = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                conn.request(HandlerId::TEST, payload.clone()),
            )
            .await;
            let took = start.elapsed().as_micros() as u64;
            t.slowest_us.fetch_max(took, Ordering::Relaxed);
            match r {
                Ok(Ok(p)) if p == payload => {
                    t.ok.fetch_add(1, Ordering::Relaxed);
                }
                other => t
                    .failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{dir} #{i}: {other:?}")),
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The largest values of a connection's stats seen while sampling.
#[derive(Debug, Default, Clone)]
pub(crate) struct Peaks {
    pub(crate) queued_bytes: usize,
    pub(crate) incoming_streams: usize,
    pub(crate) incoming_requests: usize,
    /// When the connection was first seen not connected after being
    /// connected, since sampling started (late if the sampler is starved).
    pub(crate) dropped_after: Option<Duration>,
}

/// Samples a connection's published stats every few milliseconds.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Peaks>>,
}

impl Sampler {
    pub(crate) fn start(conn: Connection) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        // Read here, not in the thread, which may start late on a busy machine.
        let start = Instant::now();
        let mut was_connected = conn.state() == State::Connected;
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            // Samples once more after being stopped.
            loop {
                let last = flag.load(Ordering::Acquire);
                if let Some(s) = conn.stats() {
                    peaks.queued_bytes = peaks.queued_bytes.max(s.queued_bytes);
                    peaks.incoming_streams = peaks.incoming_streams.max(s.incoming_streams);
                    peaks.incoming_requests = peaks.incoming_requests.max(s.incoming_requests);
                }
                let connected = conn.state() == State::Connected;
                if was_connected && !connected && peaks.dropped_after.is_none() {
                    peaks.dropped_after = Some(start.elapsed());
                }
                was_connected |= connected;
                if last {
                    return peaks;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the sampler does not panic")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// One test's world. Create with [`Bed::start`], end with [`Bed::finish`].
pub(crate) struct Bed {
    name: &'static str,
    kind: Kind,
    target: Node,
    good: Node,
    pub(crate) target_host: String,
    pub(crate) good_host: String,
    /// The target's address: where the hostile peer connects.
    pub(crate) addr: SocketAddr,
    /// Host strings the target knows and accepts connections from.
    pub(crate) hostile: Vec<String>,
    stop_traffic: Arc<AtomicBool>,
    tally: Arc<Tally>,
    traffic: Option<tokio::task::JoinHandle<()>>,
    start_rss: u64,
    peak_reset: bool,
    watchdog: Option<mpsc::Sender<()>>,
    // Dropped after the nodes (whose accept loops it runs), then the lock.
    pub(crate) rt: tokio::runtime::Runtime,
    _serial: MutexGuard<'static, ()>,
}

impl Bed {
    /// Starts the target (with `tweak`ed test options) and the good node,
    /// waits until they are connected and starts the background traffic.
    pub(crate) fn start(name: &'static str, kind: Kind, tweak: impl FnOnce(&mut Options)) -> Bed {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (watchdog, fired) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = fired.recv_timeout(WATCHDOG) {
                eprintln!("hostile::{name} ({kind:?}): still running after {WATCHDOG:?}; aborting");
                std::process::exit(101);
            }
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (target_l, good_l) = (listen(), listen());
        let (target_host, good_host) = (host_of(&target_l), host_of(&good_l));
        let addr = target_l.local_addr().expect("bound");
        // Names that dial the target (so the target accepts them); nobody
        // listens on those ports and nobody needs to.
        let hostile: Vec<String> = (1..)
            .map(|i| format!("http://127.0.0.1:{}", 40_000 + i))
            .filter(|h| should_dial(h, &target_host) && *h != good_host)
            .take(4)
            .collect();
        let mut target_hosts = vec![target_host.clone(), good_host.clone()];
        target_hosts.extend(hostile.iter().cloned());
        let pair = [target_host.clone(), good_host.clone()];
        let mut options = test_options();
        tweak(&mut options);
        let handlers = Handlers::default();
        let (target, good) = {
            let _rt = rt.enter();
            (
                Node::start(kind, target_l, &target_hosts, options, &handlers),
                Node::start(kind, good_l, &pair, test_options(), &handlers),
            )
        };
        let to_good = target.manager.connection(&good_host).expect("known");
        let to_target = good.manager.connection(&target_host).expect("known");
        rt.block_on(within(
            Duration::from_secs(10),
            "the good node to connect",
            async {
                to_good.wait_for_connect(Duration::from_secs(10)).await?;
                to_target.wait_for_connect(Duration::from_secs(10)).await
            },
        ))
        .expect("the good node connects");
        let stop_traffic = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let traffic = rt.spawn(traffic(
            to_good,
            to_target,
            Arc::clone(&stop_traffic),
            Arc::clone(&tally),
        ));
        let start_rss = status_bytes("VmRSS");
        let peak_reset = reset_peak();
        Bed {
            name,
            kind,
            target,
            good,
            target_host,
            good_host,
            addr,
            hostile,
            stop_traffic,
            tally,
            traffic: Some(traffic),
            start_rss,
            peak_reset,
            watchdog: Some(watchdog),
            rt,
            _serial: serial,
        }
    }

    /// The target's connection to `host`.
    pub(crate) fn conn(&self, host: &str) -> Connection {
        self.target.manager.connection(host).expect("a known host")
    }

    /// The target's latest stats of its connection to `host`.
    pub(crate) fn stats(&self, host: &str) -> Stats {
        self.conn(host)
            .stats()
            .expect("stats of a started connection")
    }

    /// Waits (bounded) until `cond` holds of the target's connection to
    /// `host` and its stats.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        host: &str,
        cond: impl Fn(&Connection, &Stats) -> bool,
    ) {
        let conn = self.conn(host);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = conn.stats()
                && cond(&conn, &s)
            {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Good traffic completed so far.
    pub(crate) fn good_calls(&self) -> u64 {
        self.tally.ok.load(Ordering::Relaxed)
    }

    /// Stops the traffic and checks that every good call succeeded and the
    /// good connection never dropped; prints and checks the memory figures
    /// (peak RSS growth over the test at most `max_growth_mib`); shuts
    /// everything down.
    pub(crate) fn finish(mut self, max_growth_mib: u64) {
        let peak = status_bytes("VmHWM");
        let end_rss = status_bytes("VmRSS");
        self.stop_traffic.store(true, Ordering::Release);
        let traffic = self.traffic.take().expect("running");
        self.rt
            .block_on(within(
                Duration::from_secs(5),
                "the traffic to stop",
                traffic,
            ))
            .expect("the traffic task does not panic");
        let failures = self
            .tally
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        assert!(failures.is_empty(), "good calls failed: {failures:?}");
        let ok = self.tally.ok.load(Ordering::Relaxed);
        assert!(ok >= 2, "too little good traffic: {ok} calls");
        // After the attack: both ways still work, on the same connection.
        let to_good = self.conn(&self.good_host);
        let to_target = self
            .good
            .manager
            .connection(&self.target_host)
            .expect("known");
        for conn in [&to_good, &to_target] {
            let r = self.rt.block_on(within(
                Duration::from_secs(5),
                "a good call after the attack",
                conn.request(HandlerId::TEST, Bytes::from_static(b"after")),
            ));
            assert_eq!(r, Ok(Bytes::from_static(b"after")));
            let s = conn.stats().expect("stats");
            assert_eq!(s.state, State::Connected);
            assert_eq!(s.reconnects, 0, "the good connection was re-established");
        }
        let growth = peak.saturating_sub(self.start_rss);
        eprintln!(
            "hostile::{} ({:?}): RSS start {:.1} MiB, peak {:.1} MiB (+{:.1} MiB{}), end {:.1} MiB; \
             good calls {ok}, slowest {:.1} ms",
            self.name,
            self.kind,
            mib(self.start_rss),
            mib(peak),
            mib(growth),
            if self.peak_reset {
                ""
            } else {
                ", peak not reset"
            },
            mib(end_rss),
            self.tally.slowest_us.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        if self.peak_reset {
            assert!(
                growth <= max_growth_mib << 20,
                "peak RSS grew by {:.1} MiB (bound {max_growth_mib} MiB)",
                mib(growth)
            );
        }
        drop(failures);
        let (target, good) = (&mut self.target, &mut self.good);
        self.rt.block_on(async {
            target.stop().await;
            good.stop().await;
        });
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop_traffic.store(true, Ordering::Release);
        if let Some(w) = self.watchdog.take() {
            let _ = w.send(());
        }
    }
}
