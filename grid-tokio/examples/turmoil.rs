//! Three grid nodes in a turmoil simulation: the real tokio driver over a
//! simulated network, on simulated clocks, the same run for the same seed.
//!
//! Run with `cargo run -p grid-tokio --features turmoil --example turmoil
//! [seed]`. Node `n1` calls `n2` once a second for a minute of simulated
//! time; `n2` is cut off from the others for twenty seconds, and `n3`
//! crashes and comes back as a new instance. The calls during the partition
//! fail with a typed error, and the connection comes back by itself once
//! the network heals. The whole minute takes well under a second to run.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use grid_tokio::turmoil::{ClockSkew, Manager, Turmoil, serve};
use grid_tokio::{HandlerId, Options, RemoteError};

const HOSTS: [&str; 3] = ["http://n1:9000", "http://n2:9000", "http://n3:9000"];
const ECHO: HandlerId = HandlerId(40);

type Error = Box<dyn std::error::Error>;

/// Starts a grid node on the current simulated host. `seed` must differ per
/// host and per restart: it makes the instance id.
async fn start_node(local: &str, seed: u64, skew: ClockSkew) -> Result<Manager, Error> {
    let options = Options {
        seed: Some(seed),
        ..Options::default()
    };
    let manager = Manager::new(Turmoil::with_clock_skew(skew), local, &HOSTS, options)?;
    manager.register_single(ECHO, |payload: Bytes| async move {
        Ok::<_, RemoteError>(payload)
    })?;
    let listener = turmoil::net::TcpListener::bind("0.0.0.0:9000").await?;
    tokio::spawn(serve(manager.clone(), listener));
    manager.start();
    Ok(manager)
}

fn main() -> Result<(), Error> {
    let seed = std::env::args().nth(1).map_or(Ok(1), |s| s.parse())?;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .simulation_duration(Duration::from_secs(120))
        .build();

    sim.host("n2", move || async move {
        start_node(
            HOSTS[1],
            seed ^ 2,
            ClockSkew::Behind(Duration::from_secs(30)),
        )
        .await?;
        std::future::pending().await
    });
    // Each start of n3 is a new process: a new seed, a new instance id.
    let restarts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    sim.host("n3", move || {
        let run = restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let manager = start_node(HOSTS[2], seed ^ (3 + (run << 8)), ClockSkew::None).await?;
            println!("n3 started as instance {:?}", manager.instance_id());
            std::future::pending().await
        }
    });
    sim.client("n1", async move {
        let manager = start_node(HOSTS[0], seed ^ 1, ClockSkew::None).await?;
        let n2 = manager.connection(HOSTS[1]).ok_or("n2 is a known host")?;
        n2.wait_for_connect(Duration::from_secs(10)).await?;
        for i in 0..60u32 {
            let at = turmoil::sim_elapsed().unwrap_or_default();
            let deadline = tokio::time::Instant::now().into_std() + Duration::from_millis(500);
            match n2
                .request_with_deadline(ECHO, Bytes::from(i.to_string()), deadline)
                .await
            {
                Ok(answer) => {
                    println!("{at:>8.1?}  n1 -> n2: {}", String::from_utf8_lossy(&answer))
                }
                Err(e) => println!("{at:>8.1?}  n1 -> n2: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    });

    // The outer loop is the test's: it advances simulated time and breaks
    // the network on a schedule of its own.
    while sim.elapsed() < Duration::from_secs(10) {
        sim.step()?;
    }
    println!("-- partition n2 | n1, n3; crash n3");
    sim.partition("n2", "n1");
    sim.partition("n2", "n3");
    sim.crash("n3");
    while sim.elapsed() < Duration::from_secs(30) {
        sim.step()?;
    }
    println!("-- heal; restart n3");
    sim.repair("n2", "n1");
    sim.repair("n2", "n3");
    sim.bounce("n3");
    while !sim.step()? {}
    Ok(())
}
