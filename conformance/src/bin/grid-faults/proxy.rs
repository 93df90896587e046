//! A TCP proxy between two grid nodes that can fail on command: stop
//! forwarding while keeping every socket open (a blackhole), reset both
//! sides of every connection, or delay and throttle what it forwards.
//!
//! Each connection is two sockets shared by four tasks (a reader and a
//! writer per direction) through `&TcpStream`'s readiness methods, and one
//! kill switch, so that a reset can end all four at once and the sockets
//! close with a zero linger: an RST to both sides, no FIN first. For the same reason a side
//! that ends its connection gets the other side reset rather than shut
//! down; grid treats both alike.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    /// Forwards everything at once.
    None,
    /// Forwards nothing, reads nothing, closes nothing: to both nodes the
    /// peer has gone silent.
    Blackhole,
    /// Delays every chunk by `latency` and caps each direction at
    /// `bytes_per_sec`.
    Slow {
        latency: Duration,
        bytes_per_sec: u64,
    },
}

/// The largest chunk read at once (a throttled chunk goes out whole).
const CHUNK: usize = 16 * 1024;

/// A running proxy; stops (and resets every connection) when dropped.
pub(crate) struct Proxy {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    fault: watch::Sender<Fault>,
    /// The kill switch of every connection carried so far.
    links: Arc<Mutex<Vec<watch::Sender<bool>>>>,
    rt: tokio::runtime::Runtime,
}

impl Proxy {
    /// Listens on `listen` and forwards each connection to `upstream`.
    pub(crate) fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = rt.block_on(TcpListener::bind(listen))?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::None);
        let links: Arc<Mutex<Vec<watch::Sender<bool>>>> = Arc::new(Mutex::new(Vec::new()));
        let (faults, held) = (fault.clone(), Arc::clone(&links));
        rt.spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let (faults, held) = (faults.clone(), Arc::clone(&held));
                tokio::spawn(async move {
                    // A refused upstream: the dialer sees its socket reset.
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        let _ = down.set_zero_linger();
                        return;
                    };
                    let kill = link(down, up, &faults);
                    let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                    held.retain(|k| !*k.borrow());
                    held.push(kill);
                });
            }
        });
        Ok(Proxy {
            addr,
            fault,
            links,
            rt,
        })
    }

    /// From now on, treat every connection (open or new) with `f`.
    pub(crate) fn set(&self, f: Fault) {
        self.fault.send_replace(f);
    }

    /// Resets both sides of every open connection (how many there were);
    /// new ones are carried.
    pub(crate) fn reset(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner()));
        links.iter().filter(|kill| !kill.send_replace(true)).count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.reset();
        let _ = &self.rt;
    }
}

/// Starts forwarding between `a` and `b`; the connection's kill switch.
fn link(a: TcpStream, b: TcpStream, faults: &watch::Sender<Fault>) -> watch::Sender<bool> {
    for s in [&a, &b] {
        let _ = s.set_nodelay(true);
        let _ = s.set_zero_linger();
    }
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (kill, _) = watch::channel(false);
    for (from, to) in [(Arc::clone(&a), Arc::clone(&b)), (b, a)] {
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = read_side(from, tx, faults.subscribe());
        let writer = write_side(to, rx, faults.subscribe());
        tokio::spawn(until_killed(kill.clone(), reader));
        tokio::spawn(until_killed(kill.clone(), writer));
    }
    kill
}

/// Runs `task` until it ends or the connection is killed; either way, the
/// whole connection ends (its sockets go with the last task).
async fn until_killed(kill: watch::Sender<bool>, task: impl std::future::Future<Output = ()>) {
    let mut killed = kill.subscribe();
    tokio::select! {
        () = task => {}
        _ = killed.wait_for(|k| *k) => {}
    }
    kill.send_replace(true);
}

/// Waits while the proxy is a blackhole.
async fn while_blackhole(faults: &mut watch::Receiver<Fault>) {
    while *faults.borrow_and_update() == Fault::Blackhole {
        if faults.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reads chunks from `from`, stamped with when they arrived.
async fn read_side(
    from: Arc<TcpStream>,
    to_writer: mpsc::UnboundedSender<(Instant, Bytes)>,
    mut faults: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        while_blackhole(&mut faults).await;
        // Wake on a fault change too, so a blackhole stops reading at once.
        tokio::select! {
            r = from.readable() => if r.is_err() { break },
            _ = faults.changed() => continue,
        }
        match from.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to_writer
                    .send((Instant::now(), Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
}

/// Writes what the reader got to `to`, as the fault of the moment allows.
async fn write_side(
    to: Arc<TcpStream>,
    mut chunks: mpsc::UnboundedReceiver<(Instant, Bytes)>,
    mut faults: watch::Receiver<Fault>,
) {
    // When the throttled link is free again.
    let mut free_at = Instant::now();
    while let Some((read_at, mut chunk)) = chunks.recv().await {
        loop {
            while_blackhole(&mut faults).await;
            let fault = *faults.borrow();
            let Fault::Slow {
                latency,
                bytes_per_sec,
            } = fault
            else {
                break;
            };
            let start = (read_at + latency).max(free_at).max(Instant::now());
            let busy = Duration::from_secs_f64(chunk.len() as f64 / bytes_per_sec.max(1) as f64);
            // A change of fault (repair, blackhole) re-plans the chunk.
            tokio::select! {
                () = tokio::time::sleep_until(start) => {
                    free_at = start + busy;
                    break;
                }
                _ = faults.changed() => {}
            }
        }
        while !chunk.is_empty() {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&chunk) {
                Ok(n) => chunk = chunk.slice(n..),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener as StdListener, TcpStream as StdStream};

    /// A proxy in front of a plain TCP server; the client's socket and the
    /// server's side of it.
    fn setup() -> (Proxy, StdStream, StdStream) {
        let server = StdListener::bind("127.0.0.1:0").unwrap();
        let proxy =
            Proxy::start("127.0.0.1:0".parse().unwrap(), server.local_addr().unwrap()).unwrap();
        let client = StdStream::connect(proxy.addr).unwrap();
        let (accepted, _) = server.accept().unwrap();
        for s in [&client, &accepted] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        (proxy, client, accepted)
    }

    fn read_n(s: &mut StdStream, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf)?;
        Ok(buf)
    }

    #[test]
    fn carries_both_ways() {
        let (_proxy, mut client, mut server) = setup();
        client.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut server, 4).unwrap(), b"ping");
        server.write_all(b"pong!").unwrap();
        assert_eq!(read_n(&mut client, 5).unwrap(), b"pong!");
    }

    #[test]
    fn a_blackhole_holds_bytes_until_repaired() {
        let (proxy, mut client, mut server) = setup();
        proxy.set(Fault::Blackhole);
        client.write_all(b"lost?").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 5];
        let err = server.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        proxy.set(Fault::None);
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(read_n(&mut server, 5).unwrap(), b"lost?");
    }

    #[test]
    fn a_reset_reaches_both_sides() {
        let (proxy, mut client, mut server) = setup();
        client.write_all(b"x").unwrap();
        assert_eq!(read_n(&mut server, 1).unwrap(), b"x");
        assert_eq!(proxy.reset(), 1);
        for s in [&mut client, &mut server] {
            let mut buf = [0u8; 1];
            match s.read(&mut buf) {
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
                Ok(n) => panic!("read {n} bytes after a reset, no error"),
            }
        }
    }

    #[test]
    fn slow_delays_every_chunk() {
        let (proxy, mut client, mut server) = setup();
        let latency = Duration::from_millis(150);
        proxy.set(Fault::Slow {
            latency,
            bytes_per_sec: 1 << 20,
        });
        let t0 = std::time::Instant::now();
        client.write_all(b"late").unwrap();
        assert_eq!(read_n(&mut server, 4).unwrap(), b"late");
        assert!(t0.elapsed() >= latency, "{:?}", t0.elapsed());
        proxy.set(Fault::None);
        client.write_all(b"now").unwrap();
        assert_eq!(read_n(&mut server, 3).unwrap(), b"now");
    }
}
