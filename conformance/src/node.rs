//! A grid node on a real runtime: a [`Manager`] of `grid-tokio` or
//! `grid-smol` with the transcripts' handler table, optionally listening on
//! a socket, and a way for synchronous code (the replay, the CLI) to run
//! futures on it.
//!
//! [`Manager`]: grid_proto::driver::Manager

use std::fmt;
use std::future::Future;
use std::net::TcpListener;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use grid_proto::driver::{Connection, Manager, Options, Refusals, RegisterError, Runtime};

use crate::reference::register_reference_handlers;
use crate::script::Answers;
use crate::scripted::register_scripted_handlers;

/// The runtime a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// `grid-tokio` on a multi-threaded tokio runtime of its own.
    Tokio,
    /// `grid-smol` on smol's global executor.
    Smol,
}

impl RuntimeKind {
    /// Both runtimes.
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Tokio, RuntimeKind::Smol];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Tokio => "tokio",
            RuntimeKind::Smol => "smol",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<RuntimeKind, String> {
        RuntimeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown runtime {s:?} (tokio, smol)"))
    }
}

/// The handlers a node serves.
#[derive(Clone)]
pub enum Handlers {
    /// The transcripts' handler table (live interop).
    Reference,
    /// Whatever a recording answered (a replay's subject).
    Scripted(Arc<Answers>),
    /// Handlers the caller registers itself (a test's workload).
    Custom(Arc<dyn Registrar>),
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handlers::Reference => "Reference",
            Handlers::Scripted(_) => "Scripted",
            Handlers::Custom(_) => "Custom",
        })
    }
}

/// Registers handlers on a manager of either runtime (write one generic
/// function over [`Runtime`] and call it from both).
pub trait Registrar: Send + Sync {
    /// Registers on a `grid-tokio` manager.
    fn on_tokio(&self, manager: &grid_tokio::Manager) -> Result<(), RegisterError>;
    /// Registers on a `grid-smol` manager.
    fn on_smol(&self, manager: &grid_smol::Manager) -> Result<(), RegisterError>;
}

impl Handlers {
    fn register<R: Runtime>(
        &self,
        manager: &Manager<R>,
        custom: impl FnOnce(&dyn Registrar) -> Result<(), RegisterError>,
    ) -> Result<(), RegisterError> {
        match self {
            Handlers::Reference => register_reference_handlers(manager),
            Handlers::Scripted(answers) => register_scripted_handlers(manager, answers),
            Handlers::Custom(registrar) => custom(registrar.as_ref()),
        }
    }
}

enum Inner {
    Tokio {
        rt: tokio::runtime::Runtime,
        manager: grid_tokio::Manager,
        /// The accept loop, if the node listens.
        server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    },
    Smol {
        manager: grid_smol::Manager,
        /// The accept loop, if the node listens (dropping it stops it).
        server: Option<smol::Task<std::io::Result<()>>>,
    },
}

/// A started manager serving the transcripts' handler table
/// ([`register_reference_handlers`]).
pub struct Node {
    inner: Inner,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("runtime", &self.kind())
            .field("local", &self.local_host())
            .finish()
    }
}

impl Node {
    /// Builds the manager for `local` among `hosts`, registers the reference
    /// handlers, serves incoming connections on `listener` (if any) and
    /// starts it (a dialer starts dialing).
    pub fn start(
        kind: RuntimeKind,
        local: &str,
        hosts: &[String],
        options: Options,
        listener: Option<TcpListener>,
    ) -> Result<Node, String> {
        Node::start_with(kind, local, hosts, options, listener, &Handlers::Reference)
    }

    /// [`Node::start`] serving `handlers`.
    pub fn start_with(
        kind: RuntimeKind,
        local: &str,
        hosts: &[String],
        options: Options,
        listener: Option<TcpListener>,
        handlers: &Handlers,
    ) -> Result<Node, String> {
        if let Some(l) = &listener {
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
        let inner = match kind {
            RuntimeKind::Tokio => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
                let manager = grid_tokio::Manager::new(grid_tokio::Tokio, local, hosts, options)
                    .map_err(|e| e.to_string())?;
                handlers
                    .register(&manager, |r| r.on_tokio(&manager))
                    .map_err(|e| e.to_string())?;
                let _guard = rt.enter();
                let server = match listener {
                    Some(l) => {
                        let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
                        Some(rt.spawn(grid_tokio::serve(manager.clone(), l)))
                    }
                    None => None,
                };
                manager.start();
                drop(_guard);
                Inner::Tokio {
                    rt,
                    manager,
                    server,
                }
            }
            RuntimeKind::Smol => {
                let manager = grid_smol::Manager::new(grid_smol::Smol, local, hosts, options)
                    .map_err(|e| e.to_string())?;
                handlers
                    .register(&manager, |r| r.on_smol(&manager))
                    .map_err(|e| e.to_string())?;
                let server = match listener {
                    Some(l) => {
                        let l = async_net::TcpListener::try_from(l).map_err(|e| e.to_string())?;
                        Some(grid_smol::spawn(grid_smol::serve(manager.clone(), l)))
                    }
                    None => None,
                };
                manager.start();
                Inner::Smol { manager, server }
            }
        };
        Ok(Node { inner })
    }

    /// The runtime.
    pub fn kind(&self) -> RuntimeKind {
        match self.inner {
            Inner::Tokio { .. } => RuntimeKind::Tokio,
            Inner::Smol { .. } => RuntimeKind::Smol,
        }
    }

    /// This node's host string.
    pub fn local_host(&self) -> &str {
        match &self.inner {
            Inner::Tokio { manager, .. } => manager.local_host(),
            Inner::Smol { manager, .. } => manager.local_host(),
        }
    }

    /// The connection to `host`.
    pub fn connection(&self, host: &str) -> Option<Connection> {
        match &self.inner {
            Inner::Tokio { manager, .. } => manager.connection(host),
            Inner::Smol { manager, .. } => manager.connection(host),
        }
    }

    /// Incoming connections this node refused, and why the latest was.
    pub fn refusals(&self) -> Refusals {
        match &self.inner {
            Inner::Tokio { manager, .. } => manager.refusals(),
            Inner::Smol { manager, .. } => manager.refusals(),
        }
    }

    /// Runs `fut` to completion on the calling thread (inside the runtime's
    /// context, for tokio).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        match &self.inner {
            Inner::Tokio { rt, .. } => rt.block_on(fut),
            Inner::Smol { .. } => smol::block_on(fut),
        }
    }

    /// Runs `fut` in the background.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        match &self.inner {
            Inner::Tokio { rt, .. } => {
                rt.spawn(fut);
            }
            Inner::Smol { .. } => grid_smol::spawn(fut).detach(),
        }
    }

    /// Stops listening, shuts the manager down (no grace) and stops the
    /// runtime. The listener goes first, so the other node cannot reconnect
    /// to a node on its way out.
    pub fn shutdown(self) {
        let limit = Duration::from_secs(2);
        match self.inner {
            Inner::Tokio {
                rt,
                manager,
                server,
            } => {
                if let Some(server) = server {
                    server.abort();
                    let _ = rt.block_on(with_timeout(limit, server));
                }
                rt.block_on(with_timeout(limit, manager.shutdown(None)));
                rt.shutdown_background();
            }
            Inner::Smol { manager, server } => {
                if let Some(server) = server {
                    smol::block_on(with_timeout(limit, server.cancel()));
                }
                smol::block_on(with_timeout(limit, manager.shutdown(None)));
            }
        }
    }
}

/// `fut`, or `None` once `limit` has passed. Runtime-neutral: the timer is
/// async-io's, which runs under any executor.
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let timer = async {
        smol::Timer::after(limit).await;
        None
    };
    smol::future::or(async { Some(fut.await) }, timer).await
}
