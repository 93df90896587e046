//! What is measured (workload × subject × parameters) and what one
//! measurement reports (a [`Row`]).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Closed-loop echo requests.
    Single,
    /// Echo streams (the reference table's, one message in flight each
    /// way): each sends one message and awaits its echo, in a loop.
    Stream,
    /// One stream with a window of `--window` (64) each way, messages
    /// echoed and pipelined; one way counted.
    StreamPipe,
    /// One stream without input; the server sends as fast as credit allows.
    StreamOut,
    /// RSS of an idle connection and of idle streams.
    Memory,
}

impl Workload {
    pub(crate) const ALL: [Workload; 5] = [
        Workload::Single,
        Workload::Stream,
        Workload::StreamPipe,
        Workload::StreamOut,
        Workload::Memory,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Single => "single",
            Workload::Stream => "stream",
            Workload::StreamPipe => "stream-pipe",
            Workload::StreamOut => "stream-out",
            Workload::Memory => "memory",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    /// grid-tokio.
    Tokio,
    /// grid-smol.
    Smol,
    /// A bare tokio-tungstenite echo over one WebSocket: the practical limit.
    RawWs,
    /// tarpc's unary RPC (bincode over TCP): a mainstream Rust RPC.
    Tarpc,
}

impl Subject {
    pub(crate) const ALL: [Subject; 4] = [
        Subject::Tokio,
        Subject::Smol,
        Subject::RawWs,
        Subject::Tarpc,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Subject::Tokio => "tokio",
            Subject::Smol => "smol",
            Subject::RawWs => "raw-ws",
            Subject::Tarpc => "tarpc",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Subject> {
        Subject::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Why this subject has nothing to run for `w`, if so.
    pub(crate) fn skip_reason(self, w: Workload) -> Option<&'static str> {
        if self != Subject::Tarpc {
            None
        } else if !cfg!(feature = "bench-tarpc") {
            Some("built without the bench-tarpc feature")
        } else if matches!(
            w,
            Workload::Stream | Workload::StreamPipe | Workload::StreamOut
        ) {
            Some("tarpc has no streams")
        } else {
            None
        }
    }

    /// Whether this subject has something to run for `w`.
    pub(crate) fn supports(self, w: Workload) -> bool {
        self.skip_reason(w).is_none()
    }
}

/// Where the two ends of a measurement run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// The server in a process of its own, the client in this one: the
    /// shape of a real deployment, and of the Go figures.
    TwoProcess,
    /// Both ends in this process.
    OneProcess,
}

impl Topology {
    pub(crate) const ALL: [Topology; 2] = [Topology::TwoProcess, Topology::OneProcess];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Topology::TwoProcess => "two-process",
            Topology::OneProcess => "one-process",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Topology> {
        Topology::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// One measurement.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) workload: Workload,
    pub(crate) topology: Topology,
    pub(crate) subject: Subject,
    /// Callers (single) or streams (stream workloads).
    pub(crate) concurrency: usize,
    /// Bytes per request / message.
    pub(crate) payload: usize,
    /// Unmeasured time before the window.
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) duration: Duration,
    /// Idle streams to open (memory).
    pub(crate) streams: usize,
}

/// What one measurement reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub(crate) workload: String,
    pub(crate) subject: String,
    pub(crate) topology: String,
    pub(crate) concurrency: u64,
    /// Per second for throughput workloads, bytes for memory.
    pub(crate) figure: f64,
    pub(crate) unit: String,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    /// Process CPU time over wall time during the window, in percent.
    pub(crate) cpu_pct: Option<f64>,
    /// Process CPU time per counted operation, in microseconds.
    pub(crate) cpu_us_per_op: Option<f64>,
    /// The server process's CPU time over wall time (two-process only).
    pub(crate) server_cpu_pct: Option<f64>,
    /// The server process's CPU time per counted operation.
    pub(crate) server_cpu_us_per_op: Option<f64>,
    /// Failed operations (any is an anomaly).
    pub(crate) errors: u64,
    /// Anything unusual, or extra figures.
    pub(crate) note: String,
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v}"))
}

fn parse_opt(s: &str) -> Option<f64> {
    s.parse().ok()
}

impl Row {
    /// A row for a measurement that could not produce a figure.
    pub(crate) fn failed(p: &Params, note: impl Into<String>) -> Row {
        Row {
            workload: p.workload.name().into(),
            subject: p.subject.name().into(),
            topology: p.topology.name().into(),
            concurrency: p.concurrency as u64,
            figure: f64::NAN,
            unit: "-".into(),
            errors: 1,
            note: note.into(),
            ..Row::default()
        }
    }

    /// The child → parent line: `ROW` and every field, tab-separated.
    pub(crate) fn encode(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        format!(
            "ROW\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            clean(&self.workload),
            clean(&self.subject),
            clean(&self.topology),
            self.concurrency,
            self.figure,
            clean(&self.unit),
            opt(self.p50_us),
            opt(self.p99_us),
            opt(self.cpu_pct),
            opt(self.cpu_us_per_op),
            opt(self.server_cpu_pct),
            opt(self.server_cpu_us_per_op),
            self.errors,
            clean(&self.note),
        )
    }

    pub(crate) fn decode(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.strip_prefix("ROW\t")?.split('\t').collect();
        if f.len() != 14 {
            return None;
        }
        Some(Row {
            workload: f[0].into(),
            subject: f[1].into(),
            topology: f[2].into(),
            concurrency: f[3].parse().ok()?,
            figure: f[4].parse().ok()?,
            unit: f[5].into(),
            p50_us: parse_opt(f[6]),
            p99_us: parse_opt(f[7]),
            cpu_pct: parse_opt(f[8]),
            cpu_us_per_op: parse_opt(f[9]),
            server_cpu_pct: parse_opt(f[10]),
            server_cpu_us_per_op: parse_opt(f[11]),
            errors: f[12].parse().ok()?,
            note: f[13].into(),
        })
    }

    /// `--machine-readable`: workload, subject, concurrency, figure, p50 µs,
    /// p99 µs, topology.
    pub(crate) fn machine(&self) -> String {
        let us = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
        format!(
            "{}\t{}\t{}\t{:.0}\t{}\t{}\t{}",
            self.workload,
            self.subject,
            self.concurrency,
            self.figure,
            us(self.p50_us),
            us(self.p99_us),
            self.topology
        )
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} c={} {}B",
            self.workload.name(),
            self.subject.name(),
            self.topology.name(),
            self.concurrency,
            self.payload
        )
    }
}

/// The bench's stream handlers' capacities unless `--window` says
/// otherwise.
pub(crate) const DEFAULT_WINDOW: u32 = 64;

static WINDOW: OnceLock<u32> = OnceLock::new();

/// The capacities of the bench's stream handlers (`stream-pipe`: in and
/// out; `stream-out`: out): how many messages may be in flight on one
/// stream each way. Set once per process from `--window`, which every
/// process of a run is given ([`window_args`]).
pub(crate) fn window() -> u32 {
    WINDOW.get().copied().unwrap_or(DEFAULT_WINDOW)
}

/// Sets [`window`] for this process; only the first call counts.
pub(crate) fn set_window(w: u32) {
    let _ = WINDOW.set(w);
}

/// The options that give another process this process's [`window`].
pub(crate) fn window_args() -> Vec<String> {
    match window() {
        DEFAULT_WINDOW => Vec::new(),
        w => vec!["--window".into(), w.to_string()],
    }
}

/// What a row of `p` should say about the window ("" at the default, and
/// for subjects without credit flow control).
pub(crate) fn window_note(p: &Params) -> String {
    let grid = matches!(p.subject, Subject::Tokio | Subject::Smol);
    let streams = matches!(p.workload, Workload::StreamPipe | Workload::StreamOut);
    match window() {
        w if grid && streams && w != DEFAULT_WINDOW => format!("window {w}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let r = Row {
            workload: "single".into(),
            subject: "tokio".into(),
            topology: "two-process".into(),
            concurrency: 64,
            figure: 12345.5,
            unit: "req/s".into(),
            p50_us: Some(10.5),
            p99_us: None,
            cpu_pct: Some(199.0),
            cpu_us_per_op: Some(3.25),
            server_cpu_pct: Some(80.0),
            server_cpu_us_per_op: None,
            errors: 2,
            note: "a\tb".into(),
        };
        let back = Row::decode(&r.encode()).unwrap();
        assert_eq!(back.encode(), r.encode());
        assert_eq!(back.note, "a b");
        assert_eq!(
            r.machine(),
            "single\ttokio\t64\t12346\t10.5\t-\ttwo-process"
        );
    }
}
