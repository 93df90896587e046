//! Three grid nodes on loopback, all on smol, calling each other.
//!
//! Run with `cargo run -p grid-smol --example smol-cluster`. Every node
//! serves a few handlers of its own and calls every other node over the one
//! connection each pair shares; then the cluster shuts down and prints each
//! connection's stats. The program itself is runtime-neutral
//! (`grid_proto::driver::example`); this file is what smol adds to it, and
//! `grid-tokio`'s example the same on tokio.

use grid_smol::{Manager, Options, Smol, example};

fn main() -> Result<(), example::Error> {
    async_io::block_on(run())
}

async fn run() -> Result<(), example::Error> {
    // Listen first on ephemeral ports, so every node knows every host string.
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(async_net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let mut hosts = Vec::new();
    for listener in &listeners {
        hosts.push(format!("http://{}", listener.local_addr()?));
    }

    let mut nodes = Vec::new();
    for (listener, host) in listeners.into_iter().zip(&hosts) {
        let manager = Manager::new(Smol, host, &hosts, Options::default())?;
        example::register_handlers(&manager)?;
        grid_smol::spawn(grid_smol::serve(manager.clone(), listener)).detach();
        manager.start();
        nodes.push(manager);
    }
    example::run(&nodes).await
}
