//! `grid-bench`: throughput, latency, CPU and memory of grid-tokio and
//! grid-smol, next to a bare WebSocket (`raw-ws`, the practical limit) and
//! tarpc (a mainstream Rust RPC; with the `bench-tarpc` feature), measured
//! in the same run; and a client-only load against a running node.
//!
//! ```text
//! cargo run --release -p conformance --features bench-tarpc --bin grid-bench -- [options]
//!   --workload single|stream|stream-pipe|stream-out|memory|all   (comma list; default all)
//!   --subject tokio|smol|raw-ws|tarpc|all            (comma list; default all)
//!   --topology two-process|one-process|all           (comma list; default two-process)
//!   --concurrency N[,N...]  callers (single; default 1,32,64,256) or
//!                           streams (stream: default 1,64; stream-pipe,
//!                           stream-out: default 1)
//!   --payload BYTES         request / message size (default 512 single and
//!                           stream, 1024 stream-pipe and stream-out)
//!   --duration SECONDS      measured window (default 3; --quick: 1)
//!   --warmup SECONDS        unmeasured lead-in (default 0.5; --quick: 0.25)
//!   --streams N             idle streams of the memory workload (default 10000)
//!   --window N              capacities of the stream-pipe and stream-out
//!                           handlers: messages in flight per stream each way
//!                           (default 64)
//!   --repeat N              run each measurement N times and report the run
//!                           with the median figure, and the spread (default 1)
//!   --quick                 the whole run in about a minute
//!   --machine-readable      one tab-separated row per measurement: workload,
//!                           subject, concurrency, figure per second (bytes for
//!                           memory), p50 µs, p99 µs, topology; no table
//!   --in-process            run every measurement's client in this process
//!                           instead of one fresh child process each (for
//!                           profilers)
//!
//! grid-bench --remote HOST --local HOST [--listen ADDR] [--runtime tokio|smol]
//!   [--workload single|stream] [--concurrency N] [--payload BYTES]
//!   [--duration SECONDS] [--deadline SECONDS] [--token T]
//!   [--ping-interval SECONDS] [--pong-timeout SECONDS] [--machine-readable]
//! ```
//!
//! Topologies: `two-process` (the default) runs the serving end of every
//! measurement in a process of its own (this binary with `--server-of`),
//! as a real deployment and the Go figures do; `one-process` keeps both
//! ends in one process. Either way they talk over real TCP on 127.0.0.1.
//! By default each measurement's client runs in a fresh child process
//! (this binary with `--child`), so runtimes, allocator state and RSS
//! baselines never carry over, and a subject that hangs is killed and
//! reported instead of stopping the run. Benchmarks never pass or fail:
//! the exit status is 0 unless the command line is wrong.
//!
//! `--remote` (see [`remote`]) is a client-only load against a node that is
//! already running and serves the reference handler table (`grid-conformance
//! serve`, Go's reference peer, ...): it never stops on errors, prints one
//! progress line per second and a summary; with `--machine-readable`,
//! `progress<TAB>elapsed_s<TAB>ok<TAB>errors<TAB>p50_us<TAB>p99_us` lines
//! (counts for that second) and a last line
//! `total<TAB>ok<TAB>errors<TAB>unresolved`. Its exit status is 1 when a
//! call was unresolved (neither success nor typed error by its deadline
//! plus 1 s), else 0.

mod grid;
mod hist;
mod load;
mod plan;
mod rawws;
mod remote;
mod server;
mod sys;
#[cfg(feature = "bench-tarpc")]
mod tarpc_ref;

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use conformance::node::RuntimeKind;
use load::{SmolExec, TokioExec};
use plan::{Params, Row, Subject, Topology, Workload};
use remote::{RemoteArgs, RemoteWorkload};

const USAGE: &str =
    "usage: grid-bench [--workload single|stream|stream-pipe|stream-out|memory|all] \
[--subject tokio|smol|raw-ws|tarpc|all] [--topology two-process|one-process|all] \
[--concurrency N[,N...]] [--payload BYTES] [--duration SECONDS] [--warmup SECONDS] [--streams N] \
[--window N] [--repeat N] [--quick] [--machine-readable] [--in-process]
       grid-bench --remote HOST --local HOST [--listen ADDR] [--runtime tokio|smol] \
[--workload single|stream] [--concurrency N] [--payload BYTES] [--duration SECONDS] \
[--deadline SECONDS] [--token T] [--ping-interval SECONDS] [--pong-timeout SECONDS] \
[--machine-readable]";

/// The executor threads of every subject: tokio's workers, smol's
/// `SMOL_THREADS`; on both ends.
const THREADS: usize = 2;

/// What the command line asks for.
#[derive(Debug, Default)]
struct Args {
    workloads: Vec<Workload>,
    subjects: Vec<Subject>,
    topologies: Vec<Topology>,
    concurrency: Option<Vec<usize>>,
    payload: Option<usize>,
    duration: Option<f64>,
    warmup: Option<f64>,
    streams: Option<usize>,
    window: Option<u32>,
    repeat: usize,
    quick: bool,
    machine: bool,
    in_process: bool,
    /// Internal: run the (single) measurement here and print `ROW` lines.
    child: bool,
    /// Internal: be the server process of a two-process measurement.
    server_of: Option<Subject>,
    /// Internal, with `server_of`: the client's grid host name.
    peer: Option<String>,
    /// `--remote` and its own options.
    remote: Option<String>,
    local: Option<String>,
    listen: Option<String>,
    runtime: Option<RuntimeKind>,
    deadline: Option<f64>,
    token: Option<String>,
    ping_interval: Option<f64>,
    pong_timeout: Option<f64>,
}

fn list<T>(s: &str, all: &[T], parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String>
where
    T: Copy + PartialEq,
{
    let mut out = Vec::new();
    for part in s.split(',') {
        if part == "all" {
            out.extend_from_slice(all);
        } else {
            out.push(parse(part).ok_or_else(|| format!("unknown value {part:?}"))?);
        }
    }
    let mut dedup = Vec::new();
    for v in out {
        if !dedup.contains(&v) {
            dedup.push(v);
        }
    }
    Ok(dedup)
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 3600.0 => Ok(v),
        _ => Err(format!("bad number of seconds {s:?}")),
    }
}

fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("bad count {s:?}")),
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--workload" => a.workloads = list(&value()?, &Workload::ALL, Workload::parse)?,
            "--subject" => a.subjects = list(&value()?, &Subject::ALL, Subject::parse)?,
            "--topology" => a.topologies = list(&value()?, &Topology::ALL, Topology::parse)?,
            "--concurrency" => {
                a.concurrency = Some(
                    value()?
                        .split(',')
                        .map(count)
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            "--payload" => a.payload = Some(count(&value()?)?),
            "--duration" => a.duration = Some(seconds(&value()?)?),
            "--warmup" => a.warmup = Some(seconds(&value()?)?),
            "--streams" => a.streams = Some(count(&value()?)?),
            "--window" => {
                let v = value()?;
                a.window = match v.parse::<u32>() {
                    Ok(w) if w > 0 => Some(w),
                    _ => return Err(format!("bad window {v:?}")),
                };
            }
            "--repeat" => a.repeat = count(&value()?)?,
            "--quick" => a.quick = true,
            "--machine-readable" => a.machine = true,
            "--in-process" => a.in_process = true,
            "--child" => a.child = true,
            "--server-of" => {
                let v = value()?;
                a.server_of =
                    Some(Subject::parse(&v).ok_or_else(|| format!("unknown subject {v:?}"))?);
            }
            "--peer" => a.peer = Some(value()?),
            "--remote" => a.remote = Some(value()?),
            "--local" => a.local = Some(value()?),
            "--listen" => a.listen = Some(value()?),
            "--runtime" => a.runtime = Some(value()?.parse()?),
            "--deadline" => a.deadline = Some(seconds(&value()?)?),
            "--token" => a.token = Some(value()?),
            "--ping-interval" => a.ping_interval = Some(seconds(&value()?)?),
            "--pong-timeout" => a.pong_timeout = Some(seconds(&value()?)?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    a.repeat = a.repeat.max(1);
    if a.workloads.is_empty() {
        a.workloads = Workload::ALL.to_vec();
    }
    if a.subjects.is_empty() {
        a.subjects = Subject::ALL.to_vec();
    }
    if a.topologies.is_empty() {
        a.topologies = vec![Topology::TwoProcess];
    }
    Ok(a)
}

/// The options of a `--remote` run, checked.
fn remote_args(a: &Args) -> Result<RemoteArgs, String> {
    let remote = a.remote.clone().ok_or("--remote is required")?;
    let local = a.local.clone().ok_or("--remote needs --local HOST")?;
    if remote == local {
        return Err("--remote and --local must differ".into());
    }
    let workload = match a.workloads.as_slice() {
        [Workload::Single] => RemoteWorkload::Single,
        [Workload::Stream] => RemoteWorkload::Stream,
        _ if a.workloads == Workload::ALL => RemoteWorkload::Single,
        _ => return Err("--remote runs one --workload: single or stream".into()),
    };
    let concurrency = match a.concurrency.as_deref() {
        None => 1,
        Some([c]) => *c,
        Some(_) => return Err("--remote runs one --concurrency".into()),
    };
    let secs = Duration::from_secs_f64;
    Ok(RemoteArgs {
        remote,
        local,
        listen: a.listen.clone(),
        runtime: a.runtime.unwrap_or(RuntimeKind::Tokio),
        workload,
        concurrency,
        payload: a.payload.unwrap_or(512),
        duration: secs(a.duration.unwrap_or(10.0)),
        deadline: secs(a.deadline.unwrap_or(2.0)),
        token: a.token.clone().unwrap_or_else(|| "debug".into()),
        ping_interval: a.ping_interval.map(secs),
        pong_timeout: a.pong_timeout.map(secs),
        machine: a.machine,
    })
}

/// Every measurement the arguments ask for, in run order; and the
/// combinations skipped, with the reason.
fn plan(a: &Args) -> (Vec<Params>, Vec<String>) {
    let duration = a.duration.unwrap_or(if a.quick { 1.0 } else { 3.0 });
    let warmup = a.warmup.unwrap_or(if a.quick { 0.25 } else { 0.5 });
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for &w in &a.workloads {
        let concurrency = match w {
            Workload::Single => a.concurrency.clone().unwrap_or_else(|| {
                if a.quick {
                    vec![1, 64]
                } else {
                    vec![1, 32, 64, 256]
                }
            }),
            Workload::Stream => a
                .concurrency
                .clone()
                .unwrap_or_else(|| if a.quick { vec![64] } else { vec![1, 64] }),
            Workload::StreamPipe | Workload::StreamOut => {
                a.concurrency.clone().unwrap_or_else(|| vec![1])
            }
            Workload::Memory => vec![1],
        };
        for &s in &a.subjects {
            if let Some(why) = s.skip_reason(w) {
                skipped.push(format!("{} {} ({why})", w.name(), s.name()));
            }
        }
        let payload = match w {
            Workload::Single | Workload::Stream => 512,
            _ => 1024,
        };
        for &t in &a.topologies {
            for &c in &concurrency {
                for &s in a.subjects.iter().filter(|s| s.supports(w)) {
                    out.push(Params {
                        workload: w,
                        topology: t,
                        subject: s,
                        concurrency: c,
                        payload: a.payload.unwrap_or(payload),
                        warmup: Duration::from_secs_f64(warmup),
                        duration: Duration::from_secs_f64(duration),
                        streams: a.streams.unwrap_or(10_000),
                    });
                }
            }
        }
    }
    (out, skipped)
}

/// The options that make a child (or a reader) run exactly `p`.
fn item_args(p: &Params) -> Vec<String> {
    vec![
        "--workload".into(),
        p.workload.name().into(),
        "--subject".into(),
        p.subject.name().into(),
        "--topology".into(),
        p.topology.name().into(),
        "--concurrency".into(),
        p.concurrency.to_string(),
        "--payload".into(),
        p.payload.to_string(),
        "--duration".into(),
        p.duration.as_secs_f64().to_string(),
        "--warmup".into(),
        p.warmup.as_secs_f64().to_string(),
        "--streams".into(),
        p.streams.to_string(),
    ]
    .into_iter()
    .chain(plan::window_args())
    .collect()
}

fn reproduce(p: &Params) -> String {
    format!(
        "cargo run --release -p conformance --bin grid-bench -- --in-process {}",
        item_args(p).join(" ")
    )
}

/// Runs `p` in this process; a window other than the default is the
/// first thing each row's note says.
fn run_here(p: &Params) -> Vec<Row> {
    let window = plan::window_note(p);
    let mut rows = measure_here(p);
    if !window.is_empty() {
        for r in &mut rows {
            r.note = if r.note.is_empty() {
                window.clone()
            } else {
                format!("{window}; {}", r.note)
            };
        }
    }
    rows
}

fn measure_here(p: &Params) -> Vec<Row> {
    let t = p.topology;
    if p.subject == Subject::Smol {
        return smol::block_on(grid::run(SmolExec, p, || Box::pin(grid::pair_smol(t))));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![Row::failed(p, format!("no tokio runtime: {e}"))],
    };
    let rows = rt.block_on(async {
        match p.subject {
            Subject::Tokio => grid::run(TokioExec, p, || Box::pin(grid::pair_tokio(t))).await,
            Subject::RawWs => rawws::run(p).await,
            #[cfg(feature = "bench-tarpc")]
            Subject::Tarpc => tarpc_ref::run(p).await,
            #[cfg(not(feature = "bench-tarpc"))]
            Subject::Tarpc => vec![Row::failed(p, "built without the bench-tarpc feature")],
            Subject::Smol => unreachable!("handled above"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    rows
}

/// Runs `p` in a fresh child process, killing it if it outlives its time.
fn run_child(p: &Params) -> Vec<Row> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return vec![Row::failed(p, format!("no executable path: {e}"))],
    };
    let mut child = match Command::new(exe)
        .arg("--child")
        .args(item_args(p))
        .env("SMOL_THREADS", THREADS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return vec![Row::failed(p, format!("could not start a child: {e}"))],
    };
    let mut out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let slack = if p.workload == Workload::Memory {
        120
    } else {
        40
    };
    let limit = p.warmup + p.duration + Duration::from_secs(slack);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().unwrap_or_default();
    let mut rows: Vec<Row> = text.lines().filter_map(Row::decode).collect();
    match status {
        None => rows.push(Row::failed(
            p,
            format!(
                "KILLED: no result {}s after start; reproduce: {}",
                limit.as_secs(),
                reproduce(p)
            ),
        )),
        Some(s) if !s.success() || rows.is_empty() => rows.push(Row::failed(
            p,
            format!("child exited with {s}; reproduce: {}", reproduce(p)),
        )),
        Some(_) => {}
    }
    rows
}

/// Of the same measurement run several times, the run with the median
/// figure, noting the spread and any run's failure.
fn median_of(runs: Vec<Vec<Row>>) -> Vec<Row> {
    let n = runs.len();
    if n == 1 {
        return runs.into_iter().next().unwrap_or_default();
    }
    let mut groups: Vec<Vec<Row>> = Vec::new();
    for r in runs.into_iter().flatten() {
        let same = |g: &Vec<Row>| {
            g[0].workload == r.workload
                && g[0].subject == r.subject
                && g[0].topology == r.topology
                && g[0].concurrency == r.concurrency
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let failures: Vec<String> = g
                .iter()
                .filter(|r| r.errors > 0)
                .map(|r| r.note.clone())
                .collect();
            let mut ok: Vec<Row> = g.iter().filter(|r| r.figure.is_finite()).cloned().collect();
            ok.sort_by(|a, b| a.figure.total_cmp(&b.figure));
            let Some(mid) = ok.get((ok.len().max(1) - 1) / 2).cloned() else {
                return g.into_iter().next().expect("groups are never empty");
            };
            let (lo, hi) = (ok[0].figure, ok[ok.len() - 1].figure);
            let mut row = mid;
            let spread = if row.figure != 0.0 {
                format!(" (spread {:.0}%)", (hi - lo) / row.figure.abs() * 100.0)
            } else {
                String::new()
            };
            let mut notes = vec![format!(
                "median of {}: {}..{}{spread}",
                ok.len(),
                fmt_int(lo),
                fmt_int(hi)
            )];
            if !row.note.is_empty() {
                notes.push(row.note.clone());
            }
            if !failures.is_empty() && row.errors == 0 {
                row.errors = failures.len() as u64;
                notes.push(format!(
                    "{} of {n} runs FAILED, first: {}",
                    failures.len(),
                    failures[0]
                ));
            }
            row.note = notes.join("; ");
            row
        })
        .collect()
}

fn figure(r: &Row) -> String {
    if r.figure.is_nan() {
        return "-".into();
    }
    fmt_int(r.figure)
}

/// An integer with thousands separators.
fn fmt_int(v: f64) -> String {
    let v = v.round() as i64;
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0 { format!("-{out}") } else { out }
}

fn reference(rows: &[(Row, String)], r: &Row, subject: &str) -> String {
    let found = rows.iter().map(|(x, _)| x).find(|x| {
        x.subject == subject
            && x.workload == r.workload
            && x.topology == r.topology
            && x.concurrency == r.concurrency
            && x.unit == r.unit
            && x.figure.is_finite()
            && x.figure != 0.0
    });
    match found {
        Some(x) if r.figure.is_finite() => format!("{:.2}", r.figure / x.figure),
        _ => "-".into(),
    }
}

fn print_table(rows: &[(Row, String)]) {
    let us = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
    let cpu_op = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    println!(
        "{:<13} {:<7} {:<11} {:>6} {:>12} {:<9} {:>9} {:>9} {:>7} {:>8} {:>9} {:>13} {:>5}  note",
        "workload",
        "subject",
        "topology",
        "conc",
        "figure",
        "unit",
        "p50 µs",
        "p99 µs",
        "/raw-ws",
        "/tarpc",
        "cpu% c/s",
        "cpuµs/op c/s",
        "load1"
    );
    for (r, load1) in rows {
        let sides = |c: String, s: Option<f64>, f: &dyn Fn(Option<f64>) -> String| match s {
            Some(_) => format!("{c}/{}", f(s)),
            None => c,
        };
        println!(
            "{:<13} {:<7} {:<11} {:>6} {:>12} {:<9} {:>9} {:>9} {:>7} {:>8} {:>9} {:>13} {:>5}  {}",
            r.workload,
            r.subject,
            r.topology,
            r.concurrency,
            figure(r),
            r.unit,
            us(r.p50_us),
            us(r.p99_us),
            reference(rows, r, "raw-ws"),
            reference(rows, r, "tarpc"),
            sides(pct(r.cpu_pct), r.server_cpu_pct, &pct),
            sides(cpu_op(r.cpu_us_per_op), r.server_cpu_us_per_op, &cpu_op),
            load1,
            r.note
        );
    }
}

fn header(a: &Args, plan: &[Params], skipped: &[String]) {
    let first = plan.first();
    let secs = |f: fn(&Params) -> Duration| first.map_or(0.0, |p| f(p).as_secs_f64());
    let topologies: Vec<&str> = a.topologies.iter().map(|t| t.name()).collect();
    println!(
        "grid-bench: topology {}; the two ends talk over real TCP on 127.0.0.1 (loopback)",
        topologies.join(" and ")
    );
    if a.topologies.contains(&Topology::TwoProcess) {
        println!(
            "  two-process: the server end in a process of its own (grid-bench --server-of SUBJECT), the client in {}",
            if a.in_process {
                "this process"
            } else {
                "a fresh child process per measurement"
            }
        );
    }
    if a.topologies.contains(&Topology::OneProcess) {
        println!(
            "  one-process: both ends in {}",
            if a.in_process {
                "this process"
            } else {
                "a fresh child process per measurement"
            }
        );
    }
    println!(
        "  {} cpus; load average (1/5/15 min) at start: {}; {} measurements",
        sys::cpus(),
        sys::loadavg(),
        plan.len(),
    );
    println!(
        "  runtimes: grid-tokio, raw-ws and tarpc on a tokio multi-thread runtime with {THREADS} workers; \
grid-smol (callers and connections alike) on grid-smol's executor with SMOL_THREADS={THREADS}; in each process"
    );
    println!(
        "  window: {:.2} s warm-up, then {:.2} s measured; figures count operations completed in the window",
        secs(|p| p.warmup),
        secs(|p| p.duration)
    );
    println!(
        "  single: closed loop, conc = tasks each awaiting its echo before sending the next (grid: handler 78 of the reference table); req/s, latency p50/p99"
    );
    println!(
        "  stream: conc = echo streams of the reference table (handler 78, capacities in 1/out 1), each task sending one message and awaiting its echo; msg/s round trips (raw-ws: as single)"
    );
    let w = plan::window();
    println!(
        "  stream-pipe: conc = streams (capacities in {w}/out {w}), messages echoed; sender and receiver are separate tasks; msg/s one way"
    );
    println!(
        "  stream-out: conc = streams with InCapacity 0, OutCapacity {w}; the server sends as fast as credit allows; msg/s received"
    );
    println!(
        "  memory: growth of resident anonymous memory (RssAnon: heap + stacks; VmRSS, which also counts code pages\n    touched for the first time, is in the note), both ends of the connection added up (two-process: client and server process, each in the note)"
    );
    println!(
        "    memory/conn: a client node and a server node connecting, idle (raw-ws: one socket; tarpc: client + server); memory/stream: per idle stream, both ends"
    );
    println!(
        "  raw-ws: tokio-tungstenite, one WebSocket, 8-byte id + payload pipelined, echo server flushing once per burst: the practical limit"
    );
    println!(
        "  tarpc 0.38: unary echo of serde_bytes::ByteBuf, bincode over one TCP connection (nodelay)"
    );
    println!(
        "  cpu% c/s = CPU time / wall time in the window of the client process / the server process (100% per busy core; one-process: both ends in the first figure);\n    cpuµs/op c/s = CPU time per counted operation, client / server"
    );
    if a.repeat > 1 {
        println!(
            "  each measurement run {} times: the run with the median figure is shown, with the range in the note",
            a.repeat
        );
    }
    for s in skipped {
        println!("  skipped: {s}");
    }
    println!();
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("grid-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    plan::set_window(args.window.unwrap_or(plan::DEFAULT_WINDOW));
    if let Some(subject) = args.server_of {
        return server::run(subject, args.peer.clone());
    }
    let remote = match args.remote.is_some().then(|| remote_args(&args)) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            eprintln!("grid-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
        None => None,
    };
    let (plan, skipped) = plan(&args);
    let wants_smol = match &remote {
        Some(r) => r.runtime == RuntimeKind::Smol,
        None => args.in_process && plan.iter().any(|p| p.subject == Subject::Smol),
    };
    if wants_smol && std::env::var("SMOL_THREADS").ok().as_deref() != Some("2") {
        // smol reads SMOL_THREADS once, at its first use; setting it here
        // would need `unsafe`, so run again with it set.
        use std::os::unix::process::CommandExt;
        if let Ok(exe) = std::env::current_exe() {
            let e = Command::new(exe)
                .args(std::env::args().skip(1))
                .env("SMOL_THREADS", THREADS.to_string())
                .exec();
            eprintln!("grid-bench: could not re-run with SMOL_THREADS set: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(r) = remote {
        return match remote::run(&r) {
            Ok(code) => {
                let _ = std::io::stdout().flush();
                // Leftover tasks and the connection need no orderly end.
                std::process::exit(i32::from(code))
            }
            Err(e) => {
                eprintln!("grid-bench: {e}");
                ExitCode::from(2)
            }
        };
    }
    if args.child {
        let mut out = std::io::stdout().lock();
        for p in &plan {
            for r in run_here(p) {
                let _ = writeln!(out, "{}", r.encode());
            }
        }
        let _ = out.flush();
        // Leftover tasks and detached threads need no orderly end.
        std::process::exit(0);
    }
    if args.machine {
        for s in &skipped {
            eprintln!("grid-bench: skipped: {s}");
        }
    } else {
        header(&args, &plan, &skipped);
    }
    let load_start = sys::loadavg();
    let mut rows = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let runs = (0..args.repeat)
            .map(|_| {
                if args.in_process {
                    run_here(p)
                } else {
                    run_child(p)
                }
            })
            .collect();
        let got = median_of(runs);
        let load1 = sys::loadavg()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        for r in got {
            if args.machine {
                println!("{}", r.machine());
                if !r.note.is_empty() && r.errors > 0 {
                    eprintln!("grid-bench: {} {}: {}", r.workload, r.subject, r.note);
                }
            } else {
                let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}%"));
                eprintln!(
                    "[{}/{}] {p}: {} {} p50 {} µs p99 {} µs cpu {} (server {}) load {load1} {}",
                    i + 1,
                    plan.len(),
                    figure(&r),
                    r.unit,
                    r.p50_us.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                    r.p99_us.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                    pct(r.cpu_pct),
                    pct(r.server_cpu_pct),
                    r.note
                );
            }
            rows.push((r, load1.clone()));
        }
    }
    if !args.machine {
        println!();
        print_table(&rows);
        println!();
        println!(
            "load average (1/5/15 min): {load_start} at start, {} at end",
            sys::loadavg()
        );
        let anomalies: Vec<_> = rows.iter().filter(|(r, _)| r.errors > 0).collect();
        if anomalies.is_empty() {
            println!("anomalies: none");
        } else {
            println!("anomalies:");
            for (r, _) in anomalies {
                println!(
                    "  {} {} {} conc {}: {}",
                    r.workload, r.subject, r.topology, r.concurrency, r.note
                );
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults_and_quick() {
        let (p, skipped) = plan(&args("").unwrap());
        // single: 4 concurrencies x 4 subjects; stream: 2 x 3; stream-pipe
        // and stream-out: 1 x 3 each; memory: 4; without bench-tarpc,
        // tarpc's single and memory rows are skipped.
        let tarpc = usize::from(cfg!(feature = "bench-tarpc"));
        assert_eq!(p.len(), 4 * (3 + tarpc) + 6 + 3 + 3 + (3 + tarpc));
        assert_eq!(skipped.len(), 3 + 2 * (1 - tarpc), "{skipped:?}");
        assert!(p.iter().all(|p| p.duration == Duration::from_secs(3)));
        assert!(p.iter().all(|p| p.topology == Topology::TwoProcess));
        let (p, _) = plan(&args("--quick --subject tokio --workload single").unwrap());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].payload, 512);
        assert_eq!(p[0].duration, Duration::from_secs(1));
    }

    #[test]
    fn topologies() {
        let (p, _) = plan(
            &args("--subject tokio --workload single --concurrency 1 --topology all").unwrap(),
        );
        let t: Vec<Topology> = p.iter().map(|p| p.topology).collect();
        assert_eq!(t, [Topology::TwoProcess, Topology::OneProcess]);
        let (p, _) = plan(&args("--workload stream-pipe --topology one-process").unwrap());
        assert!(p.iter().all(|p| p.topology == Topology::OneProcess));
        assert!(args("--topology three-process").is_err());
    }

    #[test]
    fn remote_options() {
        let remote = |s: &str| remote_args(&args(s)?);
        let r = remote("--remote http://a:1 --local http://b:2").unwrap();
        assert_eq!(r.workload, RemoteWorkload::Single);
        assert_eq!((r.concurrency, r.payload), (1, 512));
        assert_eq!(r.deadline, Duration::from_secs(2));
        assert_eq!(r.runtime, RuntimeKind::Tokio);
        let r = remote(
            "--remote http://a:1 --local http://b:2 --workload stream --concurrency 8 \
             --runtime smol --deadline 0.5 --pong-timeout 2 --listen 127.0.0.1:7",
        )
        .unwrap();
        assert_eq!(r.workload, RemoteWorkload::Stream);
        assert_eq!(r.concurrency, 8);
        assert_eq!(r.runtime, RuntimeKind::Smol);
        assert_eq!(r.deadline, Duration::from_millis(500));
        assert_eq!(r.pong_timeout, Some(Duration::from_secs(2)));
        assert_eq!(r.listen.as_deref(), Some("127.0.0.1:7"));
        assert!(remote("--remote http://a:1").is_err());
        assert!(remote("--remote http://a:1 --local http://a:1").is_err());
        assert!(remote("--remote http://a:1 --local http://b:2 --workload memory").is_err());
        assert!(remote("--remote http://a:1 --local http://b:2 --concurrency 1,2").is_err());
    }

    #[test]
    fn options() {
        let a = args(
            "--workload stream-pipe,stream-out --subject tarpc,raw-ws --concurrency 2,4 --payload 100 --duration 0.5",
        )
        .unwrap();
        let (p, skipped) = plan(&a);
        assert_eq!(p.len(), 4);
        assert_eq!(skipped.len(), 2);
        assert!(
            p.iter()
                .all(|p| p.subject == Subject::RawWs && p.payload == 100)
        );
        assert!(args("--workload nope").is_err());
        assert!(args("--concurrency 0").is_err());
        assert!(args("--duration").is_err());
        assert_eq!(args("").unwrap().repeat, 1);
        assert_eq!(args("--repeat 3").unwrap().repeat, 3);
        assert_eq!(args("--window 256").unwrap().window, Some(256));
        assert!(args("--window 0").is_err());
        assert!(args("--window -1").is_err());
        // A child's arguments give back the same measurement.
        let (again, _) = plan(&parse_args(item_args(&p[1]).into_iter()).unwrap());
        assert_eq!(again.len(), 1);
        assert_eq!(format!("{:?}", again[0]), format!("{:?}", p[1]));
    }

    #[test]
    fn tarpc_is_planned_only_when_built_in() {
        let (p, skipped) =
            plan(&args("--workload single --subject tarpc --concurrency 1").unwrap());
        let built_in = cfg!(feature = "bench-tarpc");
        assert_eq!(p.len(), usize::from(built_in));
        assert_eq!(skipped.len(), usize::from(!built_in), "{skipped:?}");
    }

    #[test]
    fn median_of_runs() {
        let row = |figure: f64, errors: u64| Row {
            workload: "single".into(),
            subject: "tokio".into(),
            topology: "two-process".into(),
            concurrency: 1,
            figure,
            errors,
            note: if errors > 0 {
                "boom".into()
            } else {
                String::new()
            },
            ..Row::default()
        };
        let m = median_of(vec![
            vec![row(300.0, 0)],
            vec![row(100.0, 0)],
            vec![row(200.0, 0)],
        ]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].figure, 200.0);
        assert_eq!(m[0].note, "median of 3: 100..300 (spread 100%)");
        let m = median_of(vec![vec![row(f64::NAN, 1)], vec![row(100.0, 0)]]);
        assert_eq!(m[0].figure, 100.0);
        assert_eq!(m[0].errors, 1);
        assert!(
            m[0].note.contains("1 of 2 runs FAILED, first: boom"),
            "{}",
            m[0].note
        );
    }
}
