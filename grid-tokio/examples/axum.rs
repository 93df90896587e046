//! Serving grid inside an axum server, next to other routes, on one port:
//! the way MinIO serves its grid on the port of its S3 API. Two nodes on
//! loopback, each one axum server with `/health` and the grid route; node
//! `a` calls node `b` over grid, then asks `b`'s `/health` on the same port.
//!
//! The grid route answers the upgrade itself ([`Manager::upgrade_response`]:
//! WebSocket headers, token, clock) and hands hyper's upgraded connection
//! to the manager ([`grid_tokio::accept_upgraded`]); axum's own
//! `WebSocketUpgrade` is not needed.
//!
//! Run with `cargo run -p grid-tokio --example axum`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use grid_tokio::{AcceptError, DEFAULT_ROUTE, HandlerId, Manager, Options, Tokio};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Answers with the request.
const ECHO: HandlerId = HandlerId(78);

/// The grid route: upgrade to a WebSocket and hand it to the manager.
async fn grid_route(State(manager): State<Manager>, mut request: Request) -> Response {
    let answer = match manager.upgrade_response(&request) {
        Ok(answer) => answer,
        // A bare status: the reason is logged and counted by the manager.
        Err(refused) => return refused.status().into_response(),
    };
    // hyper hands the connection over once the 101 answer is sent.
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let stream = TokioIo::new(upgraded);
                match grid_tokio::accept_upgraded(&manager, stream).await {
                    // The peer redials while this node shuts down.
                    Ok(()) | Err(AcceptError::Shutdown) => {}
                    Err(e) => eprintln!("grid connection refused: {e}"),
                }
            }
            Err(e) => eprintln!("upgrade failed: {e}"),
        }
    });
    answer.map(|()| Body::empty())
}

/// One node: a grid manager, and an axum server on `listener` with the
/// grid route next to `/health`.
async fn start_node(
    listener: TcpListener,
    local: &str,
    hosts: &[String],
) -> Result<Manager, Error> {
    let manager = Manager::new(Tokio, local, hosts, Options::default())?;
    manager.register_single(ECHO, |payload: Bytes| async move { Ok(payload) })?;
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(DEFAULT_ROUTE, any(grid_route))
        .with_state(manager.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("server stopped: {e}");
        }
    });
    manager.start();
    Ok(manager)
}

/// A plain HTTP/1.1 GET, enough to show the other route shares the port.
async fn http_get(host: &str, path: &str) -> Result<String, Error> {
    let authority = host.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    Ok(response)
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
    let a = start_node(first, &hosts[0], &hosts).await?;
    let b = start_node(second, &hosts[1], &hosts).await?;

    let peer = a.connection(&hosts[1]).ok_or("not one of the hosts")?;
    peer.wait_for_connect(Duration::from_secs(5)).await?;
    let answer = peer.request(ECHO, Bytes::from_static(b"ping")).await?;
    println!("grid request: {}", String::from_utf8_lossy(&answer));
    assert_eq!(answer, "ping");

    let health = http_get(&hosts[1], "/health").await?;
    let status = health.lines().next().unwrap_or_default();
    println!("GET /health on the same port: {status}");
    assert!(status.ends_with("200 OK") && health.ends_with("ok"));

    // A plain GET of the grid route is no WebSocket upgrade.
    let plain = http_get(&hosts[1], DEFAULT_ROUTE).await?;
    let status = plain.lines().next().unwrap_or_default();
    println!("GET {DEFAULT_ROUTE} without an upgrade: {status}");
    assert!(status.contains(&StatusCode::BAD_REQUEST.as_u16().to_string()));

    // The connection task publishes fresh stats at most every 100 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = a.stats_total();
    println!(
        "node a: {} connected, {} messages sent, {} received",
        stats.connected, stats.messages_sent, stats.messages_received
    );

    a.shutdown(Some(Duration::from_secs(1))).await;
    b.shutdown(Some(Duration::from_secs(1))).await;
    Ok(())
}
