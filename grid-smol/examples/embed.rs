//! Embedding grid in a smol program: two nodes on loopback, one calling
//! the other with a single request and a stream. In a cluster every node
//! runs this setup in its own process with the same host list.
//!
//! Run with `cargo run -p grid-smol --example smol-embed`.

use std::time::Duration;

use async_net::TcpListener;
use bytes::Bytes;
use grid_smol::{Capacities, HandlerId, Manager, Options, RemoteError, Smol, StreamCall};

type Error = Box<dyn std::error::Error>;

/// Single: answers with the request. Stream: answers each message with it.
const ECHO: HandlerId = HandlerId(78);

async fn echo_stream(call: StreamCall) -> Result<(), RemoteError> {
    let (Some(mut input), mut output) = (call.input, call.output) else {
        return Ok(());
    };
    while let Some(message) = input.recv().await {
        let message = message.map_err(|e| RemoteError(e.to_string()))?;
        output
            .send(message)
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// One node: serves `ECHO` on `listener` and connects to the other hosts.
fn start_node(listener: TcpListener, local: &str, hosts: &[String]) -> Result<Manager, Error> {
    let manager = Manager::new(Smol, local, hosts, Options::default())?;
    manager.register_single(ECHO, |payload: Bytes| async move { Ok(payload) })?;
    manager.register_stream(ECHO, Capacities::DEFAULT, echo_stream)?;
    grid_smol::spawn(grid_smol::serve(manager.clone(), listener)).detach();
    manager.start();
    Ok(manager)
}

fn main() -> Result<(), Error> {
    async_io::block_on(run())
}

async fn run() -> Result<(), Error> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    ];
    let hosts = [
        format!("http://{}", listeners[0].local_addr()?),
        format!("http://{}", listeners[1].local_addr()?),
    ];
    let [first, second] = listeners;
    let a = start_node(first, &hosts[0], &hosts)?;
    let b = start_node(second, &hosts[1], &hosts)?;

    // The connection comes up in the background; a call made before it is
    // up fails with `CallError::NotConnected`, so wait for it first.
    let peer = a.connection(&hosts[1]).ok_or("not one of the hosts")?;
    peer.wait_for_connect(Duration::from_secs(5)).await?;

    let answer = peer.request(ECHO, Bytes::from_static(b"ping")).await?;
    println!("request: {}", String::from_utf8_lossy(&answer));

    let (mut tx, mut rx) = peer.open_stream(ECHO, None).await?;
    for message in ["one", "two"] {
        tx.send(Bytes::from(message)).await?;
        let echoed = rx.recv().await.ok_or("the stream ended early")??;
        println!("stream: {}", String::from_utf8_lossy(&echoed));
    }
    tx.close();

    a.shutdown(Some(Duration::from_secs(1))).await;
    b.shutdown(Some(Duration::from_secs(1))).await;
    Ok(())
}
