//! The `tarpc` reference point: tarpc's unary RPC, an echo of a byte
//! buffer (`serde_bytes::ByteBuf`, so bincode copies it in one piece) with
//! the serde bincode transport over one TCP connection (`TCP_NODELAY` on
//! both ends, as grid sets it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_bytes::ByteBuf;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context, serde_transport};
use tokio::net::{TcpListener, TcpStream};

use crate::load::{self, TokioExec};
use crate::plan::{Params, Row, Subject, Topology, Workload};
use crate::server::ServerProcess;
use crate::sys;

/// The service.
#[tarpc::service]
pub(crate) trait Echo {
    /// Answers with the request.
    async fn echo(data: ByteBuf) -> ByteBuf;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, data: ByteBuf) -> ByteBuf {
        data
    }
}

/// Serves the echo on every connection `listener` accepts.
async fn accept_loop(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let transport = serde_transport::Transport::from((tcp, Bincode::default()));
        tokio::spawn(
            BaseChannel::with_defaults(transport)
                .execute(EchoServer.serve())
                .for_each(|answer| async move {
                    tokio::spawn(answer);
                }),
        );
    }
}

/// The server process of a tarpc measurement.
pub(crate) async fn serve(listener: std::net::TcpListener) -> Result<(), String> {
    let l = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    crate::server::announce(l.local_addr().map_err(|e| e.to_string())?);
    accept_loop(l).await;
    Err("the listener failed".into())
}

/// A client of a fresh server: in this process, or in a server process of
/// its own (returned, to be held until the end).
async fn start(p: &Params) -> Result<(EchoClient, Option<ServerProcess>), String> {
    let e = |e: std::io::Error| e.to_string();
    let (addr, server) = if p.topology == Topology::TwoProcess {
        let server = ServerProcess::spawn(Subject::Tarpc, None)?;
        (server.addr, Some(server))
    } else {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(e)?;
        let addr = listener.local_addr().map_err(e)?;
        tokio::spawn(accept_loop(listener));
        (addr, None)
    };
    let tcp = TcpStream::connect(addr).await.map_err(e)?;
    let _ = tcp.set_nodelay(true);
    let transport = serde_transport::Transport::from((tcp, Bincode::default()));
    let client = EchoClient::new(client::Config::default(), transport).spawn();
    Ok((client, server))
}

async fn call(client: &EchoClient, payload: Bytes) -> Result<Bytes, String> {
    client
        .echo(context::current(), ByteBuf::from(payload.to_vec()))
        .await
        .map(|b| Bytes::from(b.into_vec()))
        .map_err(|e| e.to_string())
}

/// Runs workload `p` (inside the tokio runtime).
pub(crate) async fn run(p: &Params) -> Vec<Row> {
    let ex = TokioExec;
    match p.workload {
        Workload::Single => {
            let (client, _server) = match start(p).await {
                Ok((c, s)) => (Arc::new(c), s),
                Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
            };
            vec![
                load::closed_loop(&ex, p, move |payload| {
                    let c = Arc::clone(&client);
                    async move { call(&c, payload).await }
                })
                .await,
            ]
        }
        Workload::Memory => {
            load::settle(&ex).await;
            let mut r0 = sys::Sides::now();
            let (client, server) = match start(p).await {
                Ok(c) => c,
                Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
            };
            r0.server = server.as_ref().map(|s| s.baseline);
            let first = load::timeout(
                &ex,
                Duration::from_secs(5),
                call(&client, Bytes::from_static(b"x")),
            )
            .await;
            if !matches!(first, Some(Ok(_))) {
                return vec![Row::failed(p, "the first echo failed")];
            }
            load::settle(&ex).await;
            let r1 = sys::Sides::now();
            vec![load::memory_row(p, "memory/conn", 1, r0, r1)]
        }
        Workload::Stream | Workload::StreamPipe | Workload::StreamOut => {
            vec![Row::failed(p, "tarpc has no streams")]
        }
    }
}
