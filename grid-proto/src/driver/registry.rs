//! Handlers this node serves, and the stream capacities it assumes for the
//! handlers it calls.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use hashbrown::HashMap;

use crate::config::{Capacities, CapacityTable};
use crate::driver::manager::Manager;
use crate::driver::runtime::{BoxFuture, Runtime};
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

/// A single-request handler as the registry keeps it: the payload as it
/// came (`None`: absent) in, the response as it goes out (`None`: absent,
/// `Some` of an empty one: present and empty, PROTOCOL.md §2.6).
pub(crate) type SingleFn =
    Arc<dyn Fn(Option<Bytes>) -> BoxFuture<Result<Option<Bytes>, RemoteError>> + Send + Sync>;
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
        let sub = subroute.map(|s| SubrouteId::new(handler, s));
        let f: SingleFn = Arc::new(move |p: Option<Bytes>| {
            let response = f(p.unwrap_or_default());
            Box::pin(async move { response.await.map(Some) })
        });
        // Go's zero alias, as for streams.
        let alias = sub.map(|_| SubrouteId::zero(handler));
        self.insert_single(handler, sub, alias, f)
    }

    /// A single-request handler that sees and answers payloads as they
    /// travel (absent or present), on a subroute given by its wire id.
    pub(crate) fn add_single_raw<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Option<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Bytes>, RemoteError>> + Send + 'static,
    {
        let f: SingleFn = Arc::new(move |p| Box::pin(f(p)));
        self.insert_single(handler, subroute, None, f)
    }

    fn insert_single(
        &self,
        handler: HandlerId,
        sub: Option<SubrouteId>,
        alias: Option<SubrouteId>,
        f: SingleFn,
    ) -> Result<(), RegisterError> {
        Self::check(handler)?;
        let route = Route::of(handler, sub);
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if t.singles.contains_key(&route) {
            return Err(RegisterError::AlreadyExists(handler));
        }
        if let Some(alias) = alias {
            t.singles.insert(Route::Sub(alias), Arc::clone(&f));
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
        let entry = StreamEntry {
            capacities,
            handler: Arc::new(move |c| Box::pin(f(c))),
            subroute: subroute.map(Arc::from),
        };
        let sub = subroute.map(|s| SubrouteId::new(handler, s));
        self.insert_stream(handler, sub, sub.is_some(), entry)
    }

    /// A stream handler on a subroute given by its wire id (the handler's
    /// [`StreamCall::subroute`] is then `None`: the route's name is not
    /// known).
    pub(crate) fn add_stream_raw<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let entry = StreamEntry {
            capacities,
            handler: Arc::new(move |c| Box::pin(f(c))),
            subroute: None,
        };
        self.insert_stream(handler, subroute, false, entry)
    }

    fn insert_stream(
        &self,
        handler: HandlerId,
        sub: Option<SubrouteId>,
        alias: bool,
        entry: StreamEntry,
    ) -> Result<(), RegisterError> {
        Self::check(handler)?;
        let route = Route::of(handler, sub);
        let capacities = entry.capacities;
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if t.streams.contains_key(&route) {
            return Err(RegisterError::AlreadyExists(handler));
        }
        if alias {
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
                if alias {
                    caps.set_subroute(SubrouteId::zero(handler), capacities);
                }
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

/// Handlers registered from what travels on the wire, for applications
/// that must answer exactly as some other node did (a replay of a capture,
/// a proxy): any handler id, a subroute given by its 32-byte id (captures
/// carry only that hash), absent and empty payloads kept apart.
impl<R: Runtime> Manager<R> {
    /// Registers a single-request handler that gets the request payload as
    /// it came (`None`: absent; Go sends every empty request so) and answers
    /// `Ok(None)` for an absent response, `Ok(Some(empty))` for a present,
    /// empty one (`FlagPayloadIsZero`), or a remote error.
    pub fn register_single_raw<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Option<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Bytes>, RemoteError>> + Send + 'static,
    {
        self.registry().add_single_raw(handler, subroute, f)
    }

    /// Registers a stream handler on a subroute given by its wire id (or on
    /// none). Its capacities also apply to this node's own calls to that
    /// handler and subroute, as with [`Manager::register_stream`].
    pub fn register_stream_raw<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<SubrouteId>,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.registry()
            .add_stream_raw(handler, subroute, capacities, f)
    }
}
