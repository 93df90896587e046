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
use crate::plan::{Params, Row, Workload};
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

async fn start() -> Result<EchoClient, String> {
    let e = |e: std::io::Error| e.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(e)?;
    let addr = listener.local_addr().map_err(e)?;
    tokio::spawn(async move {
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
    });
    let tcp = TcpStream::connect(addr).await.map_err(e)?;
    let _ = tcp.set_nodelay(true);
    let transport = serde_transport::Transport::from((tcp, Bincode::default()));
    Ok(EchoClient::new(client::Config::default(), transport).spawn())
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
            let client = match start().await {
                Ok(c) => Arc::new(c),
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
            let r0 = sys::rss();
            let client = match start().await {
                Ok(c) => c,
                Err(e) => return vec![Row::failed(p, format!("SETUP FAILED: {e}"))],
            };
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
            let r1 = sys::rss();
            vec![load::memory_row(p, "memory/conn", 1, r0, r1)]
        }
        Workload::Stream | Workload::StreamOut => {
            vec![Row::failed(p, "tarpc has no streams")]
        }
    }
}
