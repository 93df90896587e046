//! How long a dialer takes to get its peer back after a fault, on loopback:
//!
//! - `restart`: the accepting node shuts down (its port refuses) and a new
//!   one starts on the same port after `--down` seconds;
//! - `freeze`: a proxy in front of the acceptor stops moving bytes and
//!   leaves new connections waiting, as a SIGSTOPped process does (the
//!   kernel still accepts), then moves everything again (SIGCONT);
//! - `blackhole`: the proxy silently drops every byte both ways and new
//!   connections never get through, then heals (bytes lost meanwhile stay
//!   lost, as on a cut link without TCP retransmission catching up).
//!
//! Recovery is measured from the moment the peer is back to the first
//! request from the dialer that succeeds.
//!
//! ```sh
//! cargo run -p conformance --example recovery -- --runtime smol --fault restart --down 3 --repeat 10
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::node::{Node, RuntimeKind, with_timeout};
use grid_proto::driver::Options;
use grid_proto::{HandlerId, should_dial};

/// The proxied links: the client side and, once connected, the upstream side.
type Links = Arc<Mutex<Vec<(TcpStream, Option<TcpStream>)>>>;

/// The proxy's behaviour.
const UP: u8 = 0;
const FROZEN: u8 = 1;
const BLACKHOLE: u8 = 2;

/// A TCP proxy whose links can be frozen or blackholed.
struct Proxy {
    mode: Arc<AtomicU8>,
    /// Every link's sockets, so a heal from a blackhole can drop the links
    /// that never got through.
    links: Links,
}

impl Proxy {
    fn start(listener: TcpListener, upstream: std::net::SocketAddr) -> Proxy {
        let mode = Arc::new(AtomicU8::new(UP));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (m, l) = (Arc::clone(&mode), Arc::clone(&links));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (m, l) = (Arc::clone(&m), Arc::clone(&l));
                std::thread::spawn(move || link(client, upstream, &m, &l));
            }
        });
        Proxy { mode, links }
    }

    fn set(&self, mode: u8) {
        if mode == UP && self.mode.load(Ordering::SeqCst) == BLACKHOLE {
            // Links whose bytes were dropped are broken streams now.
            for (a, b) in self.links.lock().unwrap().drain(..) {
                let _ = a.shutdown(Shutdown::Both);
                if let Some(b) = b {
                    let _ = b.shutdown(Shutdown::Both);
                }
            }
        }
        self.mode.store(mode, Ordering::SeqCst);
    }
}

fn link(client: TcpStream, upstream: std::net::SocketAddr, mode: &Arc<AtomicU8>, links: &Links) {
    let _ = client.set_nodelay(true);
    // A frozen or blackholed peer does not take the connection yet.
    while mode.load(Ordering::SeqCst) != UP {
        if let Ok(c) = client.try_clone() {
            let mut l = links.lock().unwrap();
            if !l
                .iter()
                .any(|(a, _)| a.peer_addr().ok() == c.peer_addr().ok())
            {
                l.push((c, None));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = server.set_nodelay(true);
    links.lock().unwrap().push((
        client.try_clone().expect("clone"),
        Some(server.try_clone().expect("clone")),
    ));
    let (c2, s2) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let m2 = Arc::clone(mode);
    std::thread::spawn(move || pump(c2, s2, &m2));
    pump(server, client, mode);
}

/// Copies `from` → `to`, holding bytes while frozen, dropping them in a
/// blackhole.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            match mode.load(Ordering::SeqCst) {
                UP => break,
                BLACKHOLE => break,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        if mode.load(Ordering::SeqCst) == BLACKHOLE {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("a loopback port")
}

fn host(l: &TcpListener) -> String {
    format!("http://{}", l.local_addr().expect("bound"))
}

/// Waits until a request from `node` to `remote` succeeds; how long that took.
fn until_answered(node: &Node, remote: &str, limit: Duration) -> Option<Duration> {
    let conn = node.connection(remote).expect("a peer");
    let start = Instant::now();
    while start.elapsed() < limit {
        let r = node.block_on(with_timeout(
            Duration::from_millis(200),
            conn.request(HandlerId::TEST, Bytes::from_static(b"back?")),
        ));
        if matches!(r, Some(Ok(_))) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind: RuntimeKind = arg(&args, "--runtime", "tokio").parse().expect("--runtime");
    let fault = arg(&args, "--fault", "restart");
    let down = Duration::from_secs_f64(arg(&args, "--down", "3").parse().expect("--down"));
    let repeat: usize = arg(&args, "--repeat", "5").parse().expect("--repeat");

    // The dialer's host string, and the acceptor's: the one the dialer
    // connects to (the proxy's port for freeze and blackhole).
    let (dialer_l, front, acceptor_l) = loop {
        let (d, f, a) = (listener(), listener(), listener());
        if should_dial(&host(&d), &host(&f)) {
            break (d, f, a);
        }
    };
    let (dialer_host, acceptor_host) = (host(&dialer_l), host(&front));
    let hosts = vec![dialer_host.clone(), acceptor_host.clone()];
    let acceptor_addr = acceptor_l.local_addr().expect("bound");
    let proxy = (fault != "restart").then(|| Proxy::start(front, acceptor_addr));
    let front_addr = acceptor_host.trim_start_matches("http://").to_owned();
    let mut acceptor_l = Some(if fault == "restart" {
        drop(acceptor_l);
        // The acceptor listens where the dialer connects.
        std::thread::sleep(Duration::from_millis(10));
        TcpListener::bind(&front_addr).expect("the front port")
    } else {
        acceptor_l
    });
    let start_acceptor = |l: TcpListener| {
        Node::start(kind, &acceptor_host, &hosts, Options::default(), Some(l)).expect("a node")
    };
    let dialer = Node::start(
        kind,
        &dialer_host,
        &hosts,
        Options::default(),
        Some(dialer_l),
    )
    .expect("a node");
    let mut acceptor = Some(start_acceptor(acceptor_l.take().expect("a listener")));
    until_answered(&dialer, &acceptor_host, Duration::from_secs(10)).expect("connected");

    let mut times = Vec::new();
    for i in 0..repeat {
        let back = match (fault.as_str(), &proxy) {
            ("restart", _) => {
                acceptor.take().expect("running").shutdown();
                std::thread::sleep(down);
                let l = TcpListener::bind(&front_addr).expect("the port again");
                acceptor = Some(start_acceptor(l));
                Instant::now()
            }
            ("freeze", Some(p)) | ("blackhole", Some(p)) => {
                p.set(if fault == "freeze" { FROZEN } else { BLACKHOLE });
                std::thread::sleep(down);
                p.set(UP);
                Instant::now()
            }
            _ => panic!("--fault restart|freeze|blackhole"),
        };
        until_answered(&dialer, &acceptor_host, Duration::from_secs(60))
            .expect("recovered within 60 s");
        let took = back.elapsed();
        let stats = dialer
            .connection(&acceptor_host)
            .and_then(|c| c.stats())
            .map(|s| (s.dial_failures, s.reconnects));
        println!(
            "{kind} {fault} down {down:?} #{i}: answered {:.0} ms after the peer was back (dial failures, reconnects so far: {stats:?})",
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{kind} {fault} down {down:?}: n={} min {:.0} ms, median {:.0} ms, p99/max {:.0} ms",
        times.len(),
        times[0].as_secs_f64() * 1000.0,
        pct(0.5).as_secs_f64() * 1000.0,
        pct(1.0).as_secs_f64() * 1000.0
    );
    drop(proxy);
}
