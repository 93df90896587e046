//! Typed handlers: a handler id bound once to its request and response
//! types, registered on one node and called from another. The types travel
//! as Go's msgp encodes them, so the same descriptor talks to a Go node
//! serving a `SingleHandler[*Greeting, *MSS]`-style handler.
//!
//! Run with `cargo run -p grid-tokio --example typed`.

use std::time::Duration;

use grid_tokio::{HandlerId, Manager, Options, RemoteError, SingleHandler, Tokio};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

type Error = Box<dyn std::error::Error>;

/// A msgp struct: the field names are the Go struct's `msg:"..."` tags.
#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "c")]
    count: u32,
}

/// Handler 78 takes a `Greeting` and answers a `String`.
const GREET: SingleHandler<Greeting, String> = SingleHandler::new(HandlerId::TEST);

/// One node: serves `GREET` on `listener` and connects to the other hosts.
fn start_node(listener: TcpListener, local: &str, hosts: &[String]) -> Result<Manager, Error> {
    let manager = Manager::new(Tokio, local, hosts, Options::default())?;
    // On the serving node:
    GREET.register(&manager, |ctx, greeting| async move {
        if greeting.count == 0 {
            return Err(RemoteError::new("nobody to greet"));
        }
        let hello = format!("hello {} ", greeting.name).repeat(greeting.count as usize);
        Ok(format!("{hello}(asked by {})", ctx.caller()))
    })?;
    tokio::spawn(grid_tokio::serve(manager.clone(), listener));
    manager.start();
    Ok(manager)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
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
    let peer = a.connection(&hosts[1]).ok_or("not one of the hosts")?;
    peer.wait_for_connect(Duration::from_secs(5)).await?;

    // On the calling node:
    let greeting = Greeting {
        name: "grid".into(),
        count: 2,
    };
    let answer = GREET.call(&peer, &greeting).await?;
    println!("{answer}");
    // The handler's error arrives as the call's remote error.
    let refused = GREET
        .call(
            &peer,
            &Greeting {
                name: "grid".into(),
                count: 0,
            },
        )
        .await;
    println!("{}", refused.expect_err("a remote error"));

    a.shutdown(Some(Duration::from_secs(1))).await;
    b.shutdown(Some(Duration::from_secs(1))).await;
    Ok(())
}
