//! A node behind an HTTP server of its own, on either driver: the server
//! reads the request head itself, answers with
//! `Manager::upgrade_response` and hands the upgraded byte stream to the
//! driver's `accept_upgraded`; the other node dials it as usual. A request
//! that is no WebSocket upgrade gets 400, one with a wrong token 403, and
//! neither reaches the manager.
//!
//! Real loopback sockets; every wait is bounded.

use std::time::Duration;

use bytes::Bytes;
use grid_proto::driver::tungstenite::http::{Request, Response};
use grid_proto::driver::{HttpUpgradeError, Manager, Options, Runtime};
use grid_proto::{HandlerId, should_dial};

const ECHO: HandlerId = HandlerId::TEST;
const TOKEN: &str = "embed-test-token";
const LIMIT: Duration = Duration::from_secs(10);

fn options() -> Options {
    Options {
        auth_token: std::sync::Arc::new(|_| TOKEN.to_owned()),
        validate_token: std::sync::Arc::new(|t| {
            if t == TOKEN {
                Ok(())
            } else {
                Err("wrong token".to_owned())
            }
        }),
        ..Options::default()
    }
}

/// A request head as an HTTP server parses it.
fn parse_head(head: &str) -> Request<()> {
    let mut lines = head.split("\r\n");
    let first = lines.next().expect("a request line");
    let mut parts = first.split(' ');
    let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
    let mut request = Request::builder().method(method).uri(path);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').expect("a header");
        request = request.header(name.trim(), value.trim());
    }
    request.body(()).expect("a request")
}

/// What the server writes back: the answer, or a bare status.
fn answer_head(answer: &Result<Response<()>, HttpUpgradeError>) -> String {
    let (status, headers) = match answer {
        Ok(response) => (response.status(), Some(response.headers())),
        Err(e) => (e.status(), None),
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in headers.into_iter().flatten() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    if answer.is_err() {
        head.push_str("Content-Length: 0\r\nConnection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Two hosts on loopback ports, ordered so that `hosts[0]` is the acceptor
/// of the pair (the node behind its own server), `hosts[1]` the dialer.
fn hosts(a: u16, b: u16) -> [String; 2] {
    let (x, y) = (
        format!("http://127.0.0.1:{a}"),
        format!("http://127.0.0.1:{b}"),
    );
    if should_dial(&y, &x) { [x, y] } else { [y, x] }
}

/// The status line of an answer.
fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

fn upgrade_head(path: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\nX-Minio-Time: {}\r\n\r\n",
        grid_proto::Timestamp::from_system_time(std::time::SystemTime::now()).unix_nanos()
    )
}

mod on_tokio {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn read_head(tcp: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            let mut byte = [0u8];
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// The node's own server: one request per connection.
    async fn own_server<R: Runtime<Socket = grid_tokio::BoxSocket>>(
        manager: Manager<R>,
        listener: TcpListener,
    ) {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let manager = manager.clone();
            tokio::spawn(async move {
                let request = parse_head(&read_head(&mut tcp).await);
                let answer = manager.upgrade_response(&request);
                let _ = tcp.write_all(answer_head(&answer).as_bytes()).await;
                if answer.is_ok() {
                    let _ = grid_tokio::accept_upgraded(&manager, tcp).await;
                }
            });
        }
    }

    async fn ask(host: &str, head: &str) -> String {
        let mut tcp = TcpStream::connect(host.trim_start_matches("http://"))
            .await
            .unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        read_head(&mut tcp).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_behind_its_own_http_server() {
        let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hosts = hosts(
            la.local_addr().unwrap().port(),
            lb.local_addr().unwrap().port(),
        );
        let (own, plain) = if hosts[0].ends_with(&la.local_addr().unwrap().port().to_string()) {
            (la, lb)
        } else {
            (lb, la)
        };
        let embedded =
            grid_tokio::Manager::new(grid_tokio::Tokio, &hosts[0], &hosts, options()).unwrap();
        embedded
            .register_single(ECHO, |p: Bytes| async move { Ok(p) })
            .unwrap();
        tokio::spawn(own_server(embedded.clone(), own));
        embedded.start();
        let dialer =
            grid_tokio::Manager::new(grid_tokio::Tokio, &hosts[1], &hosts, options()).unwrap();
        dialer
            .register_single(ECHO, |p: Bytes| async move { Ok(p) })
            .unwrap();
        tokio::spawn(grid_tokio::serve(dialer.clone(), plain));
        dialer.start();

        let conn = dialer.connection(&hosts[0]).unwrap();
        conn.wait_for_connect(LIMIT).await.unwrap();
        let answer = tokio::time::timeout(LIMIT, conn.request(ECHO, "over the own server")).await;
        assert_eq!(answer.unwrap().unwrap(), "over the own server");
        // And back, over the same connection.
        let back = embedded.connection(&hosts[1]).unwrap();
        assert_eq!(back.request(ECHO, "back").await.unwrap(), "back");

        let refusals = embedded.refusals();
        let plain_get = ask(&hosts[0], "GET /minio/grid/v1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status_line(&plain_get), "HTTP/1.1 400 Bad Request");
        let wrong = ask(&hosts[0], &upgrade_head("/minio/grid/v1", "wrong")).await;
        assert_eq!(status_line(&wrong), "HTTP/1.1 403 Forbidden");
        let elsewhere = ask(&hosts[0], &upgrade_head("/other", TOKEN)).await;
        assert_eq!(status_line(&elsewhere), "HTTP/1.1 404 Not Found");
        // The grid's refusals are counted; a request that is no upgrade
        // never got that far.
        assert_eq!(embedded.refusals().total, refusals.total + 2);
        assert!(conn.is_connected());

        dialer.shutdown(None).await;
        embedded.shutdown(None).await;
    }
}

mod on_smol {
    use super::*;
    use async_net::{TcpListener, TcpStream};
    use smol::io::{AsyncReadExt, AsyncWriteExt};

    async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
        let timeout = async {
            smol::Timer::after(LIMIT).await;
            panic!("timed out: {what}")
        };
        smol::future::or(fut, timeout).await
    }

    async fn read_head(tcp: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            let mut byte = [0u8];
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    async fn own_server<R: Runtime<Socket = grid_smol::BoxSocket>>(
        manager: Manager<R>,
        listener: TcpListener,
    ) {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let manager = manager.clone();
            smol::spawn(async move {
                let request = parse_head(&read_head(&mut tcp).await);
                let answer = manager.upgrade_response(&request);
                let _ = tcp.write_all(answer_head(&answer).as_bytes()).await;
                if answer.is_ok() {
                    let _ = grid_smol::accept_upgraded(&manager, tcp).await;
                }
            })
            .detach();
        }
    }

    async fn ask(host: &str, head: &str) -> String {
        let mut tcp = TcpStream::connect(host.trim_start_matches("http://"))
            .await
            .unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        read_head(&mut tcp).await
    }

    #[test]
    fn a_node_behind_its_own_http_server() {
        smol::block_on(within("the scenario", async {
            let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (pa, pb) = (
                la.local_addr().unwrap().port(),
                lb.local_addr().unwrap().port(),
            );
            let hosts = hosts(pa, pb);
            let (own, plain) = if hosts[0].ends_with(&format!(":{pa}")) {
                (la, lb)
            } else {
                (lb, la)
            };
            let embedded =
                grid_smol::Manager::new(grid_smol::Smol, &hosts[0], &hosts, options()).unwrap();
            embedded
                .register_single(ECHO, |p: Bytes| async move { Ok(p) })
                .unwrap();
            smol::spawn(own_server(embedded.clone(), own)).detach();
            embedded.start();
            let dialer =
                grid_smol::Manager::new(grid_smol::Smol, &hosts[1], &hosts, options()).unwrap();
            smol::spawn(grid_smol::serve(dialer.clone(), plain)).detach();
            dialer.start();

            let conn = dialer.connection(&hosts[0]).unwrap();
            conn.wait_for_connect(LIMIT).await.unwrap();
            let answer = conn.request(ECHO, "over the own server").await;
            assert_eq!(answer.unwrap(), "over the own server");

            let plain_get = ask(&hosts[0], "GET /minio/grid/v1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert_eq!(status_line(&plain_get), "HTTP/1.1 400 Bad Request");
            let wrong = ask(&hosts[0], &upgrade_head("/minio/grid/v1", "wrong")).await;
            assert_eq!(status_line(&wrong), "HTTP/1.1 403 Forbidden");
            assert!(conn.is_connected());

            dialer.shutdown(None).await;
            embedded.shutdown(None).await;
        }));
    }
}
