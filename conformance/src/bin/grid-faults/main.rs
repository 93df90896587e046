//! `grid-faults`: the process-level fault suite. Real processes and
//! sockets: a serving node (`grid-conformance serve`) and a load
//! (`grid-bench --remote`) of one runtime, and between them, for the
//! network faults, a TCP proxy in this process.
//!
//! ```text
//! grid-faults [--runtime tokio|smol|all] [--scenario kill|stop|blackhole|reset|slow|all]
//!             [--workload single|stream] [--concurrency N]
//! ```
//!
//! Scenarios: kill -9 the serving node under load and restart it; SIGSTOP
//! it for longer than the pong timeout, then SIGCONT; a proxy that
//! blackholes (stops forwarding, keeps the sockets open), resets both
//! sides, or adds latency and caps bandwidth. Both nodes run with a ping
//! interval of 1 s and a pong timeout of 2 s (Go: 10 s and 20 s) so that
//! the suite runs in seconds; calls have a deadline of 1 s.
//!
//! Each run passes when: every call resolved within its deadline plus 1 s
//! with a success or a typed error (the load counts the others as
//! unresolved), the load ended on time (nothing hung), throughput in the
//! first whole second starting 2 s after the repair was at least 30 % of
//! the baseline (the median of the first three seconds; a link still down
//! shows none, and on a shared machine a healthy second is often half of
//! another), and both resident sets came back within a quarter (or 8 MiB)
//! of their baseline. It prints the figures of every run: recovery (from
//! the repair, or from a reset, to the first success), time to the first
//! error, throughput after the repair, totals, RSS. Exit status 1 if any
//! run failed, 2 on a usage error.
//!
//! The binaries it starts are looked up next to its own.

mod observed;
mod procs;
mod proxy;
mod scenario;

use std::process::ExitCode;
use std::time::Duration;

use procs::{Load, Timers};
use scenario::{Outcome, Scenario, mib};

const USAGE: &str = "usage: grid-faults [--runtime tokio|smol|all] \
[--scenario kill|stop|blackhole|reset|slow|all] [--workload single|stream] [--concurrency N]";

/// Both nodes' connection timers.
const TIMERS: Timers = Timers {
    ping_interval: Duration::from_secs(1),
    pong_timeout: Duration::from_secs(2),
};

/// What the command line asks for.
struct Args {
    runtimes: Vec<&'static str>,
    scenarios: Vec<Scenario>,
    workload: String,
    concurrency: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        runtimes: vec!["tokio", "smol"],
        scenarios: Scenario::ALL.to_vec(),
        workload: "single".into(),
        concurrency: 8,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runtime" => {
                a.runtimes = match value()?.as_str() {
                    "all" => vec!["tokio", "smol"],
                    "tokio" => vec!["tokio"],
                    "smol" => vec!["smol"],
                    other => return Err(format!("unknown runtime {other:?}")),
                }
            }
            "--scenario" => {
                let v = value()?;
                a.scenarios = if v == "all" {
                    Scenario::ALL.to_vec()
                } else {
                    v.split(',')
                        .map(|s| {
                            Scenario::parse(s).ok_or_else(|| format!("unknown scenario {s:?}"))
                        })
                        .collect::<Result<_, _>>()?
                };
            }
            "--workload" => {
                a.workload = value()?;
                if !matches!(a.workload.as_str(), "single" | "stream") {
                    return Err(format!("unknown workload {:?}", a.workload));
                }
            }
            "--concurrency" => {
                a.concurrency = match value()?.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err("--concurrency takes a positive count".into()),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3} s"))
}

fn report(s: Scenario, runtime: &str, o: &Outcome) {
    let verdict = if o.problems.is_empty() {
        "PASS"
    } else {
        "FAIL"
    };
    let (ok, errors, unresolved) = o.totals.unwrap_or_default();
    println!(
        "{verdict} {} {runtime}: recovery {}, first error {} after the fault, throughput 2 s after the repair {} of baseline; {ok} ok, {errors} errors, {unresolved} unresolved; RSS server {:.1} -> {:.1} MiB, load {:.1} -> {:.1} MiB",
        s.name(),
        secs(o.recovery),
        secs(o.detected),
        o.back
            .map_or_else(|| "-".into(), |b| format!("{:.0}%", b * 100.0)),
        mib(o.rss[0].0),
        mib(o.rss[0].1),
        mib(o.rss[1].0),
        mib(o.rss[1].1),
    );
    for p in &o.problems {
        println!("    PROBLEM: {p}");
    }
    for n in &o.notes {
        println!("    {n}");
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("grid-faults: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let bin = match procs::bin_dir() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("grid-faults: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "grid-faults: {} workload, {} callers, deadline 1 s; ping interval {:?}, pong timeout {:?} on both nodes; load runs {:?} per scenario, fault at 3 s",
        args.workload,
        args.concurrency,
        TIMERS.ping_interval,
        TIMERS.pong_timeout,
        scenario::DURATION
    );
    for s in &args.scenarios {
        println!("  {}: {}", s.name(), s.describe(TIMERS));
    }
    let mut results = Vec::new();
    for runtime in &args.runtimes {
        let load = Load {
            runtime: (*runtime).into(),
            workload: args.workload.clone(),
            concurrency: args.concurrency,
            duration: scenario::DURATION,
            deadline: Duration::from_secs(1),
            timers: TIMERS,
        };
        for &s in &args.scenarios {
            let o = scenario::run(s, &bin, &load);
            report(s, runtime, &o);
            results.push((s, *runtime, o));
        }
    }
    println!();
    println!(
        "{:<10} {:<6} {:<6} {:>10} {:>12} {:>9} {:>9} {:>8} {:>10}",
        "scenario",
        "rt",
        "result",
        "recovery",
        "first error",
        "back@+2s",
        "errors",
        "unresolv",
        "RSS MiB s/l"
    );
    let mut failed = 0;
    for (s, rt, o) in &results {
        let (_, errors, unresolved) = o.totals.unwrap_or_default();
        if !o.problems.is_empty() {
            failed += 1;
        }
        println!(
            "{:<10} {:<6} {:<6} {:>10} {:>12} {:>9} {:>9} {:>8} {:>4.0}/{:<4.0}",
            s.name(),
            rt,
            if o.problems.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
            secs(o.recovery),
            secs(o.detected),
            o.back
                .map_or_else(|| "-".into(), |b| format!("{:.0}%", b * 100.0)),
            errors,
            unresolved,
            mib(o.rss[0].1),
            mib(o.rss[1].1),
        );
    }
    println!(
        "recovery: from the repair (restart, SIGCONT, end of blackhole or slowness) or from a reset, to the first success after it"
    );
    if failed > 0 {
        println!("{failed} of {} runs FAILED", results.len());
        ExitCode::FAILURE
    } else {
        println!("all {} runs passed", results.len());
        ExitCode::SUCCESS
    }
}
