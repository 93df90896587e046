//! The program of the drivers' `cluster` examples, written once for any
//! runtime (`grid-tokio/examples/cluster.rs`, `grid-smol/examples/cluster.rs`
//! only listen, build the managers and start them): every node serves a few
//! handlers of its own (echo, an error, a subroute, two streams and
//! `whoami`) and sends single requests and opens streams to every other
//! node, over the one connection each pair shares (the dial rule picks
//! which node of a pair dials). Then the cluster shuts down and prints each
//! connection's stats.
//!
//! ```no_run
//! # async fn demo<R: grid_proto::driver::Runtime>(
//! #     nodes: Vec<grid_proto::driver::Manager<R>>,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use grid_proto::driver::example;
//!
//! for node in &nodes {
//!     example::register_handlers(node)?;
//!     // ...serve the node's listener, then:
//!     node.start();
//! }
//! example::run(&nodes).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use bytes::Bytes;

use crate::capacities::Capacities;
use crate::driver::conn::Connection;
use crate::driver::manager::Manager;
use crate::driver::registry::{RegisterError, RemoteError, StreamCall};
use crate::driver::runtime::Runtime;
use crate::error::CallError;
use crate::handler::HandlerId;

// Handler ids are MinIO's (1..=79); an application on its own grid picks
// any. These are MinIO's two test ids and one more.
/// Answers with the serving node's host string.
pub const WHOAMI: HandlerId = HandlerId(40);
/// Single: echo. Stream: each message comes back behind the initial payload.
pub const ECHO: HandlerId = HandlerId::TEST;
/// Single: fails with the payload as error text. Stream: `u32be N ++ data`
/// gives N numbered messages.
pub const FAIL_OR_COUNT: HandlerId = HandlerId::TEST2;
/// A subroute: the same handler id on a named route (MinIO uses a drive's
/// path).
pub const DISK: &str = "disk-1";

/// What the example's calls fail with.
pub type Error = Box<dyn std::error::Error>;

/// Calls from every node to every other node, then a graceful shutdown of
/// every node and each connection's stats, printed. The nodes must be
/// started, with [`register_handlers`] done on each.
pub async fn run<R: Runtime>(nodes: &[Manager<R>]) -> Result<(), Error> {
    for node in nodes {
        // In host order (the map's order is random).
        let mut peers: Vec<&str> = node.remote_hosts().collect();
        peers.sort_unstable();
        for peer in peers {
            let conn = node.connection(peer).ok_or("unknown host")?;
            conn.wait_for_connect(Duration::from_secs(5)).await?;
            exchange(&conn).await?;
        }
    }

    for node in nodes {
        node.shutdown(Some(Duration::from_secs(1))).await;
    }
    for node in nodes {
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

/// Registers the example's handlers on `manager`.
pub fn register_handlers<R: Runtime>(manager: &Manager<R>) -> Result<(), RegisterError> {
    let me = Bytes::from(manager.local_host().to_owned());
    manager.register_single(WHOAMI, move |_| {
        let me = me.clone();
        async move { Ok::<_, RemoteError>(me) }
    })?;
    manager.register_single(ECHO, |payload| async move { Ok(payload) })?;
    manager.register_single(FAIL_OR_COUNT, |payload| async move {
        Err(RemoteError(String::from_utf8_lossy(&payload).into_owned()))
    })?;
    manager.register_single_subroute(ECHO, DISK, |payload| async move {
        Ok(Bytes::from(format!(
            "{DISK} has {}",
            String::from_utf8_lossy(&payload)
        )))
    })?;
    manager.register_stream(ECHO, Capacities::DEFAULT, echo_stream)?;
    // No input (InCapacity 0): the caller only receives.
    let one_way = Capacities {
        in_capacity: 0,
        out_capacity: 1,
    };
    manager.register_stream(FAIL_OR_COUNT, one_way, count_stream)
}

/// Stream `ECHO`: answers every message with the initial payload ++ it.
async fn echo_stream(call: StreamCall) -> Result<(), RemoteError> {
    let prefix = call.payload.unwrap_or_default();
    let mut output = call.output;
    let Some(mut input) = call.input else {
        return Ok(());
    };
    while let Some(message) = input.recv().await {
        let message = message.map_err(|e| RemoteError(e.to_string()))?;
        let reply = [&prefix[..], &message[..]].concat();
        output
            .send(reply.into())
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// Stream `FAIL_OR_COUNT`: payload `u32be N ++ data` → N messages
/// `u32be(i) ++ data`, then the end of the stream.
async fn count_stream(call: StreamCall) -> Result<(), RemoteError> {
    let payload = call.payload.unwrap_or_default();
    let Some((n, data)) = payload.split_first_chunk::<4>() else {
        return Err(RemoteError("payload too short".into()));
    };
    let mut output = call.output;
    for i in 0..u32::from_be_bytes(*n) {
        let message = [&i.to_be_bytes()[..], data].concat();
        output
            .send(message.into())
            .await
            .map_err(|e| RemoteError(e.to_string()))?;
    }
    Ok(())
}

/// Calls from one node to another: single requests (one failing, one on a
/// subroute) and two streams.
pub async fn exchange(conn: &Connection) -> Result<(), Error> {
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
    let disk = conn.subroute(DISK);
    let answer = disk.request(ECHO, Bytes::from("hello")).await?;
    println!("{route}: {DISK} = {}", String::from_utf8_lossy(&answer));

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
