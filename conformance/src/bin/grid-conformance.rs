//! `grid-conformance`: replays recorded Go transcripts against our
//! implementation.
//!
//! ```text
//! grid-conformance replay FILE_OR_DIR... [--target core|tokio|smol|all] [--role client|server|both] [-v]
//! ```
//!
//! `--target` takes one target, a comma-separated list or `all` (default:
//! `core`); the drivers are replayed on real time over loopback TCP. `-v`
//! adds what each passing replay checked.
//!
//! Prints one line per transcript × target × role (`PASS`, `SKIP` or `FAIL`
//! with the first mismatch) and exits with status 1 if anything failed, 2 on
//! a usage or load error. The directories in `GRID_TRANSCRIPTS`
//! (colon-separated) are replayed too.

use std::path::PathBuf;
use std::process::ExitCode;

use conformance::{Outcome, ReplayOptions, Role, Target, Transcript, env_dirs, load_path};

const USAGE: &str = "usage: grid-conformance replay FILE_OR_DIR... \
[--target core|tokio|smol|all|LIST] [--role client|server|both] [-v]
(the directories in GRID_TRANSCRIPTS, colon-separated, are replayed too)";

/// What the command line asks for.
struct Args {
    paths: Vec<PathBuf>,
    targets: Vec<Target>,
    roles: Vec<Role>,
    verbose: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    match args.next().as_deref() {
        Some("replay") => {}
        Some("-h" | "--help") => return Err(String::new()),
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("missing command".into()),
    }
    let mut parsed = Args {
        paths: Vec::new(),
        targets: vec![Target::Core],
        roles: Role::BOTH.to_vec(),
        verbose: false,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--target" => {
                let v = value("--target")?;
                parsed.targets = if v == "all" {
                    Target::ALL.to_vec()
                } else {
                    v.split(',').map(str::parse).collect::<Result<_, _>>()?
                };
            }
            "--role" => {
                let v = value("--role")?;
                parsed.roles = if v == "both" {
                    Role::BOTH.to_vec()
                } else {
                    vec![v.parse()?]
                };
            }
            "-v" | "--verbose" => parsed.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            f if f.starts_with('-') => return Err(format!("unknown option {f:?}")),
            _ => parsed.paths.push(PathBuf::from(arg)),
        }
    }
    parsed.paths.extend(env_dirs());
    if parsed.paths.is_empty() {
        return Err("no transcripts given (and GRID_TRANSCRIPTS is not set)".into());
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("grid-conformance: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut transcripts: Vec<Transcript> = Vec::new();
    for path in &args.paths {
        match load_path(path) {
            Ok(ts) if ts.is_empty() => {
                eprintln!("grid-conformance: {}: no transcripts", path.display());
                return ExitCode::from(2);
            }
            Ok(ts) => transcripts.extend(ts),
            Err(e) => {
                eprintln!("grid-conformance: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let options = ReplayOptions::default();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for t in &transcripts {
        for &target in &args.targets {
            for &role in &args.roles {
                let name = t.name();
                match conformance::replay(t, target, role, &options) {
                    Outcome::Pass(stats) => {
                        passed += 1;
                        if args.verbose {
                            println!(
                                "PASS {name} {target} {role} ({} messages matched, {} frames delivered, {} app calls)",
                                stats.messages_matched, stats.frames_delivered, stats.app_calls
                            );
                        } else {
                            println!("PASS {name} {target} {role}");
                        }
                    }
                    Outcome::Skip(why) => {
                        skipped += 1;
                        println!("SKIP {name} {target} {role} ({why})");
                    }
                    Outcome::Fail(f) => {
                        failed += 1;
                        println!("FAIL {name} {target} {role}: {f}");
                    }
                }
            }
        }
    }
    eprintln!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
