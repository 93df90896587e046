//! The server end of a two-process measurement: this binary started again
//! as `grid-bench --server-of SUBJECT [--peer HOST]`, on a fresh loopback
//! port, serving what the subject's client needs (grid: the reference
//! handler table and the bench's own stream handlers; raw-ws: the echo and
//! source sockets; tarpc: the echo service).
//!
//! The child prints `LISTENING <addr>` once it serves, and ends when its
//! stdin closes, so a client that dies (or is killed for hanging) never
//! leaves a server behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::plan::Subject;
use crate::sys;

/// How long a server may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A running server process, killed when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    /// Held open: the child ends when it closes.
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its resident memory once listening and settled, before any client.
    pub(crate) baseline: sys::Rss,
}

impl ServerProcess {
    /// Starts the server of `subject` and waits until it listens; `peer` is
    /// the client's grid host name (grid subjects: both nodes must know
    /// each other). From then on [`sys::server_cpu_seconds`] and
    /// [`sys::Sides`] read this process.
    pub(crate) fn spawn(subject: Subject, peer: Option<&str>) -> Result<ServerProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("no executable path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--server-of").arg(subject.name());
        if let Some(peer) = peer {
            cmd.arg("--peer").arg(peer);
        }
        cmd.args(crate::plan::window_args());
        let mut child = cmd
            .env("SMOL_THREADS", crate::THREADS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("could not start the server process: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            let _ = tx.send(first);
            // Whatever else it prints is of no use here; keep the pipe open.
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let mut server = ServerProcess {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            baseline: sys::Rss::default(),
        };
        let line = rx
            .recv_timeout(START_LIMIT)
            .map_err(|_| format!("the server did not listen within {START_LIMIT:?}"))?;
        server.addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("the server said {line:?}, not LISTENING <addr>"))?;
        let pid = server.child.id();
        // Let it settle before the baseline (lazy allocations, threads).
        std::thread::sleep(Duration::from_millis(300));
        server.baseline = sys::rss_of(&pid.to_string());
        sys::set_server(Some(pid));
        Ok(server)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        sys::set_server(None);
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tells the parent where the server listens (the first stdout line).
pub(crate) fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "LISTENING {addr}");
    let _ = out.flush();
}

/// `--server-of SUBJECT`: serves until stdin closes.
pub(crate) fn run(subject: Subject, peer: Option<String>) -> ExitCode {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let listener = match std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("grid-bench server: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let peer = peer.unwrap_or_default();
    let result = match subject {
        Subject::Smol => smol::block_on(crate::grid::serve_smol(listener, &peer)),
        _ => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(crate::THREADS)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async move {
                match subject {
                    Subject::Tokio => crate::grid::serve_tokio(listener, &peer).await,
                    Subject::RawWs => crate::rawws::serve(listener).await,
                    #[cfg(feature = "bench-tarpc")]
                    Subject::Tarpc => crate::tarpc_ref::serve(listener).await,
                    #[cfg(not(feature = "bench-tarpc"))]
                    Subject::Tarpc => Err("built without the bench-tarpc feature".into()),
                    Subject::Smol => unreachable!("handled above"),
                }
            }),
            Err(e) => Err(format!("no tokio runtime: {e}")),
        },
    };
    // The servers only return on failure.
    let why = result.err().unwrap_or_else(|| "the server stopped".into());
    eprintln!("grid-bench server ({}): {why}", subject.name());
    ExitCode::FAILURE
}
