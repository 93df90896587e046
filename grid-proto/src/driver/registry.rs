//! Handlers this node serves, and the stream capacities it assumes for the
//! handlers it calls.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use hashbrown::HashMap;

use crate::capacities::Capacities;
use crate::config::CapacityTable;
use crate::driver::context::HandlerContext;
use crate::driver::runtime::BoxFuture;
use crate::driver::stream::{StreamReceiver, StreamSender};
use crate::handler::HandlerId;
use crate::subroute::{Subroute, SubrouteId};

/// An error a handler returns; the caller receives exactly this text as a
/// remote error ([`crate::CallError::Remote`]).
///
/// Any error converts into one with `?` (its `Display` text becomes the
/// remote error's), so handlers can use `?` on I/O, decoding or call
/// errors alike:
///
/// ```
/// use grid_proto::driver::RemoteError;
///
/// fn read_config(path: &str) -> Result<String, RemoteError> {
///     let text = std::fs::read_to_string(path)?; // io::Error -> RemoteError
///     let n: u32 = text.trim().parse()?; // ParseIntError -> RemoteError
///     if n == 0 {
///         return Err(RemoteError::new("refpeer: zero"));
///     }
///     Ok(text)
/// }
/// assert!(read_config("/nonexistent/grid").is_err());
/// ```
///
/// The price of that conversion is that `RemoteError` is not a
/// [`std::error::Error`] itself (like `anyhow::Error`, it would otherwise
/// convert into itself twice), and that texts convert with
/// [`RemoteError::new`] rather than `From<String>` (the standard library may
/// one day make `String` an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError(pub String);

impl RemoteError {
    /// A remote error with this text.
    pub fn new(text: impl Into<String>) -> RemoteError {
        RemoteError(text.into())
    }

    /// A remote error with the `Display` text of `error` (for error types
    /// that are not [`std::error::Error`]s).
    pub fn from_display(error: impl fmt::Display) -> RemoteError {
        RemoteError(error.to_string())
    }

    /// The text the caller receives.
    pub fn text(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for RemoteError {
    fn from(error: E) -> Self {
        RemoteError(error.to_string())
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
    /// Who called, on which subroute, until when, and its cancellation.
    pub context: HandlerContext,
}

/// A single-request handler as the registry keeps it: the payload as it
/// came (`None`: absent) in, the response as it goes out (`None`: absent,
/// `Some` of an empty one: present and empty, PROTOCOL.md §2.6).
pub(crate) type SingleFn = Arc<
    dyn Fn(HandlerContext, Option<Bytes>) -> BoxFuture<Result<Option<Bytes>, RemoteError>>
        + Send
        + Sync,
>;
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

/// A registered handler with the subroute it was registered on (what its
/// context reports, whichever alias reached it).
#[derive(Clone)]
pub(crate) struct Entry<F> {
    pub(crate) handler: F,
    pub(crate) subroute: Option<Subroute>,
}

pub(crate) type SingleEntry = Entry<SingleFn>;

#[derive(Clone)]
pub(crate) struct StreamEntry {
    pub(crate) capacities: Capacities,
    pub(crate) handler: StreamFn,
    pub(crate) subroute: Option<Subroute>,
}

/// A handler on its way into the registry.
enum Handler {
    Single(SingleFn),
    Stream(Capacities, StreamFn),
}

/// Adds `entry` at `route` (and `alias`) unless a handler holds `route`.
fn insert<E: Clone>(
    table: &mut HashMap<Route, E>,
    handler: HandlerId,
    route: Route,
    alias: Option<Route>,
    entry: E,
) -> Result<(), RegisterError> {
    if table.contains_key(&route) {
        return Err(RegisterError::AlreadyExists(handler));
    }
    if let Some(alias) = alias {
        table.insert(alias, entry.clone());
    }
    table.insert(route, entry);
    Ok(())
}

#[derive(Default)]
struct Tables {
    singles: HashMap<Route, SingleEntry>,
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

    /// A single-request handler that sees its context; an absent request
    /// payload reaches it as an empty one, and its response is always
    /// present (empty: `FlagPayloadIsZero`, as Go answers).
    pub(crate) fn add_single<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(HandlerContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let f: SingleFn = Arc::new(move |ctx, p: Option<Bytes>| {
            let response = f(ctx, p.unwrap_or_default());
            Box::pin(async move { response.await.map(Some) })
        });
        self.add(handler, subroute, Handler::Single(f))
    }

    /// A single-request handler that sees and answers payloads as they
    /// travel (absent or present).
    pub(crate) fn add_single_raw<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Option<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Bytes>, RemoteError>> + Send + 'static,
    {
        let f: SingleFn = Arc::new(move |_, p| Box::pin(f(p)));
        self.add(handler, subroute, Handler::Single(f))
    }

    /// A stream handler with its capacities.
    pub(crate) fn add_stream<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let f: StreamFn = Arc::new(move |c| Box::pin(f(c)));
        self.add(handler, subroute, Handler::Stream(capacities, f))
    }

    /// Where a handler registered on `subroute` is reached: its route, and
    /// Go's zero alias `[handler, 0 × 31]` that Go also registers for every
    /// subroute given by name (a wire id is taken as it is, alone).
    fn routes(handler: HandlerId, subroute: Option<&Subroute>) -> (Route, Option<Route>) {
        match subroute {
            None => (Route::Id(handler), None),
            Some(Subroute::Id(id)) => (Route::Sub(*id), None),
            Some(named) => (
                Route::Sub(named.id(handler)),
                Some(Route::Sub(SubrouteId::zero(handler))),
            ),
        }
    }

    /// The one way in, whatever the kind of handler: checks the id,
    /// refuses a second handler of the same kind on the same route, and
    /// adds the zero alias of a named subroute. A stream handler's
    /// capacities also become those of this node's own calls to it, as in
    /// Go.
    fn add(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        new: Handler,
    ) -> Result<(), RegisterError> {
        Self::check(handler)?;
        let (route, alias) = Self::routes(handler, subroute.as_ref());
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        match new {
            Handler::Single(f) => {
                let entry = Entry {
                    handler: f,
                    subroute,
                };
                insert(&mut t.singles, handler, route, alias, entry)
            }
            Handler::Stream(capacities, f) => {
                let entry = StreamEntry {
                    capacities,
                    handler: f,
                    subroute,
                };
                // The zero alias is also the key a caller uses to find the
                // capacities of a subroute handler.
                insert(&mut t.streams, handler, route, alias, entry)?;
                drop(t);
                let mut caps = self.capacities.write().unwrap_or_else(|e| e.into_inner());
                for route in std::iter::once(route).chain(alias) {
                    match route {
                        Route::Sub(id) => caps.set_subroute(id, capacities),
                        Route::Id(h) => caps.set(h, capacities),
                    }
                }
                Ok(())
            }
        }
    }

    pub(crate) fn single(&self, route: Route) -> Option<SingleEntry> {
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
        subroute: Option<&Subroute>,
        capacities: Capacities,
    ) {
        let mut caps = self.capacities.write().unwrap_or_else(|e| e.into_inner());
        match subroute {
            Some(s) => caps.set_subroute(s.id(handler), capacities),
            None => caps.set(handler, capacities),
        }
    }
}
