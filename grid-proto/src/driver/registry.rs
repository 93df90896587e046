//! Handlers this node serves, and the stream capacities it assumes for the
//! handlers it calls.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use hashbrown::HashMap;

use crate::config::{Capacities, CapacityTable};
use crate::driver::runtime::BoxFuture;
use crate::driver::stream::{StreamReceiver, StreamSender};
use crate::handler::HandlerId;
use crate::subroute::SubrouteId;

/// An error a handler returns; the caller receives exactly this text as a
/// remote error ([`crate::CallError::Remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError(pub String);

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteError {}

impl From<String> for RemoteError {
    fn from(s: String) -> Self {
        RemoteError(s)
    }
}

impl From<&str> for RemoteError {
    fn from(s: &str) -> Self {
        RemoteError(s.to_owned())
    }
}

/// Why a handler could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The id is not a valid handler id (1..=79).
    InvalidHandler(HandlerId),
    /// A handler of the same kind is registered for this id and subroute
    /// (Go: "mux handler already exists").
    AlreadyExists(HandlerId),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::InvalidHandler(h) => write!(f, "invalid handler id {}", h.0),
            RegisterError::AlreadyExists(h) => write!(f, "mux handler already exists: {h}"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// An incoming stream as its handler sees it.
#[derive(Debug)]
pub struct StreamCall {
    /// The initial payload (`None` when the caller sent none).
    pub payload: Option<Bytes>,
    /// The caller's messages; `None` when the handler has no input
    /// (`InCapacity` 0).
    pub input: Option<StreamReceiver>,
    /// Where the handler's messages go. The stream ends when the handler
    /// returns: with EOF on `Ok`, with the error text on `Err`.
    pub output: StreamSender,
    /// The calling node's host string.
    pub caller: Arc<str>,
    /// The subroute the stream was opened on, if any.
    pub subroute: Option<Arc<str>>,
    /// When the stream's deadline passes (the handler is then cancelled).
    pub deadline: Option<Instant>,
}

pub(crate) type SingleFn =
    Arc<dyn Fn(Bytes) -> BoxFuture<Result<Bytes, RemoteError>> + Send + Sync>;
pub(crate) type StreamFn =
    Arc<dyn Fn(StreamCall) -> BoxFuture<Result<(), RemoteError>> + Send + Sync>;

/// How a message addresses a handler: by id among handlers without a
/// subroute, or by the 32-byte subroute id (docs/protocol.md#subroute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    Id(HandlerId),
    Sub(SubrouteId),
}

impl Route {
    pub(crate) fn of(handler: HandlerId, subroute: Option<SubrouteId>) -> Route {
        subroute.map_or(Route::Id(handler), Route::Sub)
    }
}

#[derive(Clone)]
pub(crate) struct StreamEntry {
    pub(crate) capacities: Capacities,
    pub(crate) handler: StreamFn,
    pub(crate) subroute: Option<Arc<str>>,
}

#[derive(Default)]
struct Tables {
    singles: HashMap<Route, SingleFn>,
    streams: HashMap<Route, StreamEntry>,
}

/// The handler tables of a manager, shared by its connections.
pub(crate) struct Registry {
    tables: RwLock<Tables>,
    capacities: RwLock<CapacityTable>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Registry")
            .field("singles", &t.singles.len())
            .field("streams", &t.streams.len())
            .finish()
    }
}

impl Registry {
    pub(crate) fn new(capacities: CapacityTable) -> Registry {
        Registry {
            tables: RwLock::new(Tables::default()),
            capacities: RwLock::new(capacities),
        }
    }

    fn check(handler: HandlerId) -> Result<(), RegisterError> {
        if handler.is_valid() {
            Ok(())
        } else {
            Err(RegisterError::InvalidHandler(handler))
        }
    }

    pub(crate) fn add_single<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<&str>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        Self::check(handler)?;
        let route = Route::of(handler, subroute.map(|s| SubrouteId::new(handler, s)));
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if t.singles.contains_key(&route) {
            return Err(RegisterError::AlreadyExists(handler));
        }
        let f: SingleFn = Arc::new(move |p| Box::pin(f(p)));
        if subroute.is_some() {
            t.singles
                .insert(Route::Sub(SubrouteId::zero(handler)), Arc::clone(&f));
        }
        t.singles.insert(route, f);
        Ok(())
    }

    pub(crate) fn add_stream<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<&str>,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        Self::check(handler)?;
        let sub = subroute.map(|s| SubrouteId::new(handler, s));
        let route = Route::of(handler, sub);
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if t.streams.contains_key(&route) {
            return Err(RegisterError::AlreadyExists(handler));
        }
        let entry = StreamEntry {
            capacities,
            handler: Arc::new(move |c| Box::pin(f(c))),
            subroute: subroute.map(Arc::from),
        };
        if subroute.is_some() {
            // Go's zero alias: reachable on the wire, and the key a caller uses
            // to find the capacities of a subroute handler.
            t.streams
                .insert(Route::Sub(SubrouteId::zero(handler)), entry.clone());
        }
        t.streams.insert(route, entry);
        drop(t);
        // Calls to this handler from here use the local registration's
        // capacities, as Go does.
        let mut caps = self.capacities.write().unwrap_or_else(|e| e.into_inner());
        match sub {
            Some(id) => {
                caps.set_subroute(id, capacities);
                caps.set_subroute(SubrouteId::zero(handler), capacities);
            }
            None => caps.set(handler, capacities),
        }
        Ok(())
    }

    pub(crate) fn single(&self, route: Route) -> Option<SingleFn> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        t.singles.get(&route).cloned()
    }

    pub(crate) fn stream(&self, route: Route) -> Option<StreamEntry> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        t.streams.get(&route).cloned()
    }

    /// The callee capacities to assume when calling `handler` on `sub`.
    pub(crate) fn capacities(
        &self,
        handler: HandlerId,
        sub: Option<&SubrouteId>,
    ) -> Option<Capacities> {
        let caps = self.capacities.read().unwrap_or_else(|e| e.into_inner());
        caps.get(handler, sub)
            .or_else(|| sub.and_then(|_| caps.get(handler, Some(&SubrouteId::zero(handler)))))
    }

    pub(crate) fn set_capacities(
        &self,
        handler: HandlerId,
        subroute: Option<&str>,
        capacities: Capacities,
    ) {
        let mut caps = self.capacities.write().unwrap_or_else(|e| e.into_inner());
        match subroute {
            Some(s) => caps.set_subroute(SubrouteId::new(handler, s), capacities),
            None => caps.set(handler, capacities),
        }
    }
}
