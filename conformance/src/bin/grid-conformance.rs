//! `grid-conformance`: replays recorded transcripts against our
//! implementation, and runs an interop peer for live tests against another
//! grid node (Go's or ours).
//!
//! ```text
//! grid-conformance replay FILE_OR_DIR... [--target core|tokio|smol|all|LIST] [--role client|server|both] [-v]
//! grid-conformance decode FILE_OR_DIR...
//! grid-conformance tap --listen ADDR --upstream ADDR [--record DIR] [--print]
//! grid-conformance serve --local URL [--listen ADDR] --hosts URL,URL [--token T] [--runtime tokio|smol] [--record DIR]
//!                        [--ping-interval SECONDS] [--pong-timeout SECONDS]
//! grid-conformance call  --local URL [--listen ADDR] --hosts URL,URL [--remote URL] [--token T]
//!                        [--runtime tokio|smol] [--scenario all|typed|NAME,...] [--record DIR]
//! ```
//!
//! `replay`: `--target` takes one target, a comma-separated list or `all`
//! (default: `core`); the drivers are replayed on real time over loopback
//! TCP. `-v` adds what each passing replay checked. Prints one line per
//! transcript × target × role (`PASS`, `SKIP` or `FAIL` with the first
//! mismatch). The directories in `GRID_TRANSCRIPTS` (colon-separated) are
//! replayed too.
//!
//! `decode`: prints every record of the transcripts, one line per message
//! (time, direction, op, mux, seq, flags, handler, subroute, deadline,
//! payload size).
//!
//! `tap`: a transparent TCP forwarder between two grid peers on a plain
//! `http://` link: it listens on `--listen` (the address of the name the
//! dialer dials) and forwards to `--upstream` (where that node really
//! listens, see `--listen` below), changing no byte. `--record DIR` writes
//! each connection as a transcript (both directions, unmasked, from the
//! dialer's side, no scenario markers); `--print` prints every message as
//! it passes, one line each (as `decode` does). Runs until killed.
//!
//! `serve`: a node with exactly the transcripts' handler table, listening
//! on its own host's port (or on `--listen ADDR`, e.g. behind a tap that
//! listens on the host's port), until killed.
//!
//! `call`: a node like `serve`'s (it listens too: the dial rule may make
//! the other node the dialer) that runs the README's scenarios against the
//! remote (default: the one other host), printing `PASS name` or
//! `FAIL name: why` for each, then exits at once (no goodbye).
//! `--scenario` takes scenario names and the groups `all` (the untyped
//! table's scenarios, the default) and `typed` (the typed handlers 70–72),
//! comma-separated.
//!
//! Hosts are grid host names (`http://127.0.0.1:9001`), identical on both
//! nodes. `--token` defaults to the transcripts' `debug`; `--record DIR`
//! records every connection into `DIR` in the transcript format.
//!
//! Exit status: 0 when everything passed, 1 if anything failed, 2 on a
//! usage, load or startup error.

use std::collections::HashMap;
use std::net::{TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::node::{Node, RuntimeKind};
use conformance::stderr_log::StderrLog;
use conformance::{
    Outcome, ReplayOptions, Role, Target, Transcript, env_dirs, load_path, scenarios,
};
use grid_proto::DialFailure;
use grid_proto::driver::{Connection, Options, Recorder};

const USAGE: &str = "usage:
  grid-conformance replay FILE_OR_DIR... [--target core|tokio|smol|all|LIST] [--role client|server|both] [-v]
  grid-conformance decode FILE_OR_DIR...
  grid-conformance tap --listen ADDR --upstream ADDR [--record DIR] [--print]
  grid-conformance serve --local URL [--listen ADDR] --hosts URL,URL [--token T] [--runtime tokio|smol]
                         [--record DIR] [--ping-interval SECONDS] [--pong-timeout SECONDS]
  grid-conformance call --local URL [--listen ADDR] --hosts URL,URL [--remote URL] [--token T]
                        [--runtime tokio|smol] [--scenario all|typed|NAME,...] [--record DIR]
  grid-conformance record --out DIR [--runtime tokio|smol] [--scenario all|typed|NAME,...]
(--scenario: names and the groups all (default for call) and typed, comma-separated;
record runs the scenarios between two local nodes and writes both sides'
transcripts under DIR/serve and DIR/call; without --scenario, every scenario
but the 11-second idle-ping)
(replay also reads the directories in GRID_TRANSCRIPTS, colon-separated)";

/// How long `call` waits for the connection to the remote.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// A command line split into positional arguments, `--flag value` options
/// and bare switches.
struct Parsed {
    positional: Vec<String>,
    options: HashMap<String, String>,
    verbose: bool,
    /// `tap --print`.
    print: bool,
}

/// The options each command takes.
fn known_options(command: &str) -> &'static [&'static str] {
    match command {
        "replay" => &["--target", "--role"],
        "serve" => &[
            "--local",
            "--listen",
            "--hosts",
            "--token",
            "--runtime",
            "--record",
            "--ping-interval",
            "--pong-timeout",
        ],
        "call" => &[
            "--local",
            "--listen",
            "--hosts",
            "--remote",
            "--token",
            "--runtime",
            "--scenario",
            "--record",
        ],
        "record" => &["--out", "--runtime", "--scenario"],
        "tap" => &["--listen", "--upstream", "--record"],
        _ => &[],
    }
}

fn parse(command: &str, mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let known = known_options(command);
    let mut parsed = Parsed {
        positional: Vec::new(),
        options: HashMap::new(),
        verbose: false,
        print: false,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-v" | "--verbose" => parsed.verbose = true,
            "--print" if command == "tap" => parsed.print = true,
            "-h" | "--help" => return Err(String::new()),
            f if known.contains(&f) => {
                let value = inline
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{f} needs a value"))?;
                parsed.options.insert(f.to_owned(), value);
            }
            f if f.starts_with('-') => return Err(format!("unknown option {f:?} for {command}")),
            _ => parsed.positional.push(arg),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    if matches!(command.as_str(), "serve" | "call") {
        // Why a peer is refused, or cannot be reached, goes to stderr.
        StderrLog::install(tracing::Level::WARN);
    }
    let result = match command.as_str() {
        "replay" | "serve" | "call" | "record" | "decode" | "tap" => parse(&command, args)
            .and_then(|p| match command.as_str() {
                "replay" => replay(p),
                "decode" => decode(p),
                "tap" => tap(p),
                "serve" => serve(p),
                "record" => record(p),
                _ => call(p),
            }),
        "-h" | "--help" => Err(String::new()),
        "" => Err("missing command".into()),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("grid-conformance: {e}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

// ---- replay ----

fn replay(p: Parsed) -> Result<ExitCode, String> {
    let targets = match p.options.get("--target").map(String::as_str) {
        None => vec![Target::Core],
        Some("all") => Target::ALL.to_vec(),
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
    };
    let roles = match p.options.get("--role").map(String::as_str) {
        None | Some("both") => Role::BOTH.to_vec(),
        Some(r) => vec![r.parse()?],
    };
    let mut paths: Vec<PathBuf> = p.positional.iter().map(PathBuf::from).collect();
    paths.extend(env_dirs());
    if paths.is_empty() {
        return Err("no transcripts given (and GRID_TRANSCRIPTS is not set)".into());
    }
    let mut transcripts: Vec<Transcript> = Vec::new();
    for path in &paths {
        let ts = load_path(path).map_err(|e| e.to_string())?;
        if ts.is_empty() {
            return Err(format!("{}: no transcripts", path.display()));
        }
        transcripts.extend(ts);
    }
    let options = ReplayOptions::default();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for t in &transcripts {
        for &target in &targets {
            for &role in &roles {
                let name = t.name();
                match conformance::replay(t, target, role, &options) {
                    Outcome::Pass(stats) => {
                        passed += 1;
                        if p.verbose {
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
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

// ---- tap ----

/// `tap`: forwards `--listen` to `--upstream`, recording and printing.
fn tap(p: Parsed) -> Result<ExitCode, String> {
    if !p.positional.is_empty() {
        return Err(format!("unexpected argument {:?}", p.positional[0]));
    }
    let listener = bind(required(&p, "--listen")?)?;
    let upstream_text = required(&p, "--upstream")?;
    let upstream = upstream_text
        .to_socket_addrs()
        .map_err(|e| format!("{upstream_text}: not a host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{upstream_text}: no address"))?;
    let record = p.options.get("--record").map(PathBuf::from);
    if record.is_none() && !p.print {
        return Err("tap needs --record DIR, --print or both".into());
    }
    let options = conformance::tap::TapOptions {
        record,
        print: p.print,
    };
    let tap = conformance::tap::Tap::start(listener, upstream, options)
        .map_err(|e| format!("cannot start the tap: {e}"))?;
    eprintln!(
        "grid-conformance: tap on {} forwarding to {upstream}",
        tap.local_addr()
    );
    tap.run_forever()
}

// ---- decode ----

/// `decode`: every record of each transcript, one line per message.
fn decode(p: Parsed) -> Result<ExitCode, String> {
    use std::io::Write;
    if p.positional.is_empty() {
        return Err("no transcripts given".into());
    }
    let mut out = std::io::stdout().lock();
    for path in &p.positional {
        for t in load_path(std::path::Path::new(path)).map_err(|e| e.to_string())? {
            let h = &t.header;
            let mut text = format!(
                "# {} ({}): recorder {} ({}), peer {}\n",
                t.path.display(),
                h.name,
                h.recorder_host,
                h.recorder_ws_side,
                h.peer_host
            );
            for record in &t.records {
                // Prefixed with the record's line, as replays cite it.
                for line in conformance::decode::record_lines(record) {
                    text.push_str(&format!("{:>5} {line}\n", record.line));
                }
            }
            if out.write_all(text.as_bytes()).is_err() {
                // The reader went away (a pager or `head`): nothing to report.
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---- serve and call ----

/// What `serve` and `call` share: a started node.
struct Peer {
    node: Node,
    local: String,
    hosts: Vec<String>,
}

fn required<'a>(p: &'a Parsed, name: &str) -> Result<&'a str, String> {
    p.options
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("{name} is required"))
}

/// Starts the node `--local` among `--hosts`, listening on the local host's
/// address.
fn start_peer(p: &Parsed) -> Result<Peer, String> {
    let local = required(p, "--local")?.to_owned();
    let hosts: Vec<String> = required(p, "--hosts")?
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    let kind: RuntimeKind = p
        .options
        .get("--runtime")
        .map_or(Ok(RuntimeKind::Tokio), |r| r.parse())?;
    let token = p
        .options
        .get("--token")
        .cloned()
        .unwrap_or_else(|| "debug".to_owned());
    let mut options = token_options(&token, p.options.get("--record").map(Recorder::to_dir));
    timer_options(p, &mut options)?;
    let listener = match p.options.get("--listen") {
        Some(addr) => bind(addr)?,
        None => listen(&local)?,
    };
    let at = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let node = Node::start(kind, &local, &hosts, options, Some(listener))?;
    eprintln!("grid-conformance: {local} ({kind}) listening on {at}");
    Ok(Peer { node, local, hosts })
}

/// Options presenting and accepting `token`, recording if asked.
fn token_options(token: &str, recorder: Option<Recorder>) -> Options {
    let mut options = Options {
        recorder,
        ..Options::default()
    };
    options.auth_token = Arc::new({
        let token = token.to_owned();
        move |_| token.clone()
    });
    let token = token.to_owned();
    options.validate_token = Arc::new(move |t| {
        if t == token {
            Ok(())
        } else {
            Err("invalid token".into())
        }
    });
    options
}

/// `--ping-interval` and `--pong-timeout` (seconds; Go: 10 and 20): a
/// fault suite shortens them to see a silent peer lost in seconds.
fn timer_options(p: &Parsed, options: &mut Options) -> Result<(), String> {
    let seconds = |name: &str| -> Result<Option<Duration>, String> {
        p.options
            .get(name)
            .map(|v| match v.parse::<f64>() {
                Ok(s) if s > 0.0 && s < 86_400.0 => Ok(Duration::from_secs_f64(s)),
                _ => Err(format!("{name}: bad number of seconds {v:?}")),
            })
            .transpose()
    };
    if let Some(d) = seconds("--ping-interval")? {
        options.connection.ping_interval = d;
    }
    if let Some(d) = seconds("--pong-timeout")? {
        options.connection.pong_timeout = d;
    }
    Ok(())
}

/// A listener on the address of a host name such as `http://127.0.0.1:9001`.
fn listen(host: &str) -> Result<TcpListener, String> {
    let rest = host
        .split_once("://")
        .map_or(host, |(_, rest)| rest)
        .trim_end_matches('/');
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{host}: not a host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// A listener on `addr` (`host:port`).
fn bind(addr: &str) -> Result<TcpListener, String> {
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: not a host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

fn serve(p: Parsed) -> Result<ExitCode, String> {
    if !p.positional.is_empty() {
        return Err(format!("unexpected argument {:?}", p.positional[0]));
    }
    let peer = start_peer(&p)?;
    // Runs until killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        let _ = &peer.node;
    }
}

fn call(p: Parsed) -> Result<ExitCode, String> {
    if !p.positional.is_empty() {
        return Err(format!("unexpected argument {:?}", p.positional[0]));
    }
    let names = scenarios::select(p.options.get("--scenario").map_or("all", String::as_str))?;
    let peer = start_peer(&p)?;
    let remote = match p.options.get("--remote") {
        Some(r) => r.clone(),
        None => {
            let others: Vec<&String> = peer.hosts.iter().filter(|h| **h != peer.local).collect();
            match others.as_slice() {
                [one] => (*one).clone(),
                _ => return Err("--remote is required with more than two hosts".into()),
            }
        }
    };
    let conn = peer
        .node
        .connection(&remote)
        .ok_or_else(|| format!("{remote} is not in --hosts"))?;
    if let Err(why) = wait_connected(&peer.node, &conn) {
        println!("FAIL connect: {why}");
        exit(1);
    }
    let mut failed = 0;
    for name in &names {
        match peer.node.block_on(scenarios::run(name, &conn)) {
            Ok(()) => println!("PASS {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    eprintln!("{} passed, {failed} failed", names.len() - failed);
    exit(if failed > 0 { 1 } else { 0 })
}

/// Waits for `conn` to connect, at most [`CONNECT_WAIT`], but gives up at
/// once when either side refuses the other (a wrong token, host or clock
/// does not fix itself), saying which side refused and why. A peer not up
/// yet is waited for.
fn wait_connected(node: &Node, conn: &Connection) -> Result<(), String> {
    let remote = conn.remote_host();
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        if node
            .block_on(conn.wait_for_connect(Duration::from_millis(50)))
            .is_ok()
        {
            return Ok(());
        }
        if let Some(failure) = conn.last_dial_failure().filter(DialFailure::is_rejection) {
            return Err(format!("{remote} refused this node: {failure}"));
        }
        if let Some(reason) = node.refusals().last_reason {
            return Err(format!("this node refused {remote}: {reason}"));
        }
        if Instant::now() >= deadline {
            let last = conn
                .last_dial_failure()
                .map_or_else(String::new, |f| format!(" (last attempt: {f})"));
            return Err(format!(
                "no connection to {remote} within {CONNECT_WAIT:?}{last}"
            ));
        }
    }
}

/// `record`: two nodes of one runtime on loopback ports, both recording,
/// the caller running the scenarios; the transcripts replay with `replay`.
fn record(p: Parsed) -> Result<ExitCode, String> {
    if !p.positional.is_empty() {
        return Err(format!("unexpected argument {:?}", p.positional[0]));
    }
    let out = std::path::PathBuf::from(required(&p, "--out")?);
    let kind: RuntimeKind = p
        .options
        .get("--runtime")
        .map_or(Ok(RuntimeKind::Tokio), |r| r.parse())?;
    let names: Vec<&str> = match p.options.get("--scenario") {
        None => scenarios::known().filter(|s| *s != "idle-ping").collect(),
        Some(list) => scenarios::select(list)?,
    };
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen: {e}"));
    let (l_serve, l_call) = (bind()?, bind()?);
    let host = |l: &TcpListener| {
        l.local_addr()
            .map(|a| format!("http://{a}"))
            .map_err(|e| e.to_string())
    };
    let (serve_host, call_host) = (host(&l_serve)?, host(&l_call)?);
    let hosts = vec![serve_host.clone(), call_host.clone()];
    // The transcripts' token, as `serve` and `call` use by default.
    let options = |dir: &str| token_options("debug", Some(Recorder::to_dir(out.join(dir))));
    let server = Node::start(kind, &serve_host, &hosts, options("serve"), Some(l_serve))?;
    let caller = Node::start(kind, &call_host, &hosts, options("call"), Some(l_call))?;
    let conn = caller
        .connection(&serve_host)
        .ok_or("the serving node is not a peer")?;
    caller
        .block_on(conn.wait_for_connect(CONNECT_WAIT))
        .map_err(|e| format!("no connection between the two nodes: {e}"))?;
    let mut failed = 0;
    for name in &names {
        match caller.block_on(scenarios::run(name, &conn)) {
            Ok(()) => println!("PASS {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    caller.shutdown();
    server.shutdown();
    println!("transcripts written under {}", out.display());
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Ends the process at once: the listener and the connection close
/// together, so the remote cannot reconnect to a node on its way out (and
/// a recording ends with the last scenario).
fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}
