//! Three grid nodes on loopback, all on smol, calling each other.
//!
//! Run with `cargo run -p grid-smol --example smol-cluster`. Every node serves
//! the handler table of the shared transcripts plus `whoami`; every node
//! sends single requests and opens streams to every other node, over the one
//! connection each pair shares (the dial rule picks which node of a pair
//! dials). Then the cluster shuts down and prints each connection's stats.
//! `grid-tokio`'s example is the same program on tokio.

use std::time::Duration;

use bytes::Bytes;
use grid_smol::proto::driver::register_reference_handlers;
use grid_smol::proto::sim::REF_SUB;
use grid_smol::{CallError, Connection, HandlerId, Manager, Options, RemoteError, Smol};

/// A handler of our own: answers with the serving node's host string.
const WHOAMI: HandlerId = HandlerId(40);
/// The reference handlers: single echo / bidirectional stream echo.
const ECHO: HandlerId = HandlerId::TEST;
/// The reference handlers: single remote error / counting stream.
const FAIL_OR_COUNT: HandlerId = HandlerId::TEST2;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    smol::block_on(run())
}

async fn run() -> Result<(), Error> {
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
        register_reference_handlers(&manager)?;
        let me = Bytes::from(host.clone());
        manager.register_single(WHOAMI, move |_| {
            let me = me.clone();
            async move { Ok::<_, RemoteError>(me) }
        })?;
        smol::spawn(grid_smol::serve(manager.clone(), listener)).detach();
        manager.start();
        nodes.push(manager);
    }

    for node in &nodes {
        for peer in hosts.iter().filter(|h| *h != node.local_host()) {
            let conn = node.connection(peer).ok_or("unknown host")?;
            conn.wait_for_connect(Duration::from_secs(5)).await?;
            exchange(&conn).await?;
        }
    }

    for node in &nodes {
        node.shutdown(Some(Duration::from_secs(1))).await;
    }
    for node in &nodes {
        for (peer, stats) in node.stats() {
            let Some(s) = stats else { continue };
            println!(
                "{} -> {peer}: {:?}, {} messages / {} frames / {} bytes sent, \
                 {} messages / {} frames / {} bytes received",
                node.local_host(),
                s.state,
                s.messages_sent,
                s.frames_sent,
                s.bytes_sent,
                s.messages_received,
                s.frames_received,
                s.bytes_received,
            );
        }
    }
    Ok(())
}

/// Calls from one node to another: single requests (one failing, one on a
/// subroute) and two streams.
async fn exchange(conn: &Connection) -> Result<(), Error> {
    let route = format!("{} -> {}", conn.local_host(), conn.remote_host());

    let who = conn.request(WHOAMI, Bytes::new()).await?;
    println!("{route}: whoami = {}", String::from_utf8_lossy(&who));
    let echo = conn.request(ECHO, Bytes::from("hello")).await?;
    println!("{route}: echo = {}", String::from_utf8_lossy(&echo));
    match conn
        .request(FAIL_OR_COUNT, Bytes::from("no such bucket"))
        .await
    {
        Err(CallError::Remote(text)) => println!("{route}: remote error = {text}"),
        other => return Err(format!("expected a remote error, got {other:?}").into()),
    }
    let sub = conn.subroute(REF_SUB);
    let answer = sub.request(ECHO, Bytes::from("disk-1")).await?;
    println!(
        "{route}: {REF_SUB} echo = {}",
        String::from_utf8_lossy(&answer)
    );

    // Both ways: every message comes back behind the initial payload.
    let (mut tx, mut rx) = conn.open_stream(ECHO, Some(Bytes::from("re:"))).await?;
    let mut replies = Vec::new();
    for m in ["a", "b", "c"] {
        tx.send(Bytes::from(m)).await?;
        let reply = rx.recv().await.ok_or("the stream ended early")??;
        replies.push(String::from_utf8_lossy(&reply).into_owned());
    }
    tx.close();
    println!("{route}: stream echo = {replies:?}");

    // One way: the handler sends N numbered messages, then ends the stream.
    let mut request = 5u32.to_be_bytes().to_vec();
    request.extend_from_slice(b"!");
    let (_tx, mut rx) = conn
        .open_stream(FAIL_OR_COUNT, Some(request.into()))
        .await?;
    let mut count = 0;
    while let Some(message) = rx.recv().await {
        message?;
        count += 1;
    }
    println!("{route}: stream count = {count} messages");
    Ok(())
}
