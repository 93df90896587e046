//! Registering handlers on a manager. Every kind (plain, with its
//! context, on a subroute, raw as it travels, typed through the
//! descriptors) ends in the registry's one way in.

use std::future::Future;

use bytes::Bytes;

use crate::capacities::Capacities;
use crate::driver::context::HandlerContext;
use crate::driver::manager::Manager;
use crate::driver::registry::{RegisterError, RemoteError, StreamCall};
use crate::driver::runtime::Runtime;
use crate::handler::HandlerId;
use crate::subroute::{Subroute, SubrouteId};

impl<R: Runtime> Manager<R> {
    /// Registers a single-request handler. Its response always travels as
    /// a present payload (an empty one with `FlagPayloadIsZero`), as Go
    /// answers. For a typed handler see
    /// [`SingleHandler`](crate::driver::SingleHandler); to see the caller,
    /// the deadline or the cancellation,
    /// [`register_single_with_context`](Self::register_single_with_context).
    ///
    /// The handler's future is first polled on the connection's task (an
    /// answer ready at once goes out in the same write); if it waits, it
    /// moves to a task of its own. Blocking a thread in it stalls every
    /// call on that connection until it returns.
    pub fn register_single<F, Fut>(&self, handler: HandlerId, f: F) -> Result<(), RegisterError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.registry().add_single(handler, None, move |_, p| f(p))
    }

    /// Registers a single-request handler on a subroute: a drive path such
    /// as `"/data1"` (Go also answers it on the handler's zero alias), or a
    /// [`SubrouteId`](crate::SubrouteId) as it travels.
    pub fn register_single_subroute<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: impl Into<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.registry()
            .add_single(handler, Some(subroute.into()), move |_, p| f(p))
    }

    /// Registers a single-request handler (on a subroute, if given) that
    /// also gets the call's [`HandlerContext`]: the caller's host, the
    /// subroute, the deadline and the cancellation.
    ///
    /// ```
    /// # fn demo<R: grid_proto::driver::Runtime>(manager: &grid_proto::driver::Manager<R>) {
    /// use bytes::Bytes;
    /// use grid_proto::HandlerId;
    ///
    /// manager
    ///     .register_single_with_context(HandlerId::TEST, None, |ctx, _payload| async move {
    ///         Ok(Bytes::from(format!("hello {}", ctx.caller())))
    ///     })
    ///     .unwrap();
    /// # }
    /// ```
    pub fn register_single_with_context<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(HandlerContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.registry().add_single(handler, subroute, f)
    }

    /// Registers a stream handler with its capacities (also used for this
    /// node's own calls to that handler, as in Go). The handler's
    /// [`StreamCall::context`] tells who called and when the call is
    /// cancelled. For a typed handler see
    /// [`StreamHandler`](crate::driver::StreamHandler).
    pub fn register_stream<F, Fut>(
        &self,
        handler: HandlerId,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.registry().add_stream(handler, None, capacities, f)
    }

    /// Registers a stream handler on a subroute (a route string, or a
    /// [`SubrouteId`](crate::SubrouteId) as it travels).
    pub fn register_stream_subroute<F, Fut>(
        &self,
        handler: HandlerId,
        subroute: impl Into<Subroute>,
        capacities: Capacities,
        f: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.registry()
            .add_stream(handler, Some(subroute.into()), capacities, f)
    }

    /// Declares the capacities of a remote stream handler this node calls
    /// but does not serve (docs/protocol.md#streams-capacities), on a
    /// subroute or on all of them.
    pub fn set_capacities(
        &self,
        handler: HandlerId,
        subroute: Option<Subroute>,
        capacities: Capacities,
    ) {
        self.registry()
            .set_capacities(handler, subroute.as_ref(), capacities);
    }

    /// The capacity table of this manager's calls, for inspection.
    pub fn capacities(&self, handler: HandlerId, subroute: Option<Subroute>) -> Option<Capacities> {
        let sub = subroute.map(|s| s.id(handler));
        self.registry().capacities(handler, sub.as_ref())
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
        self.registry()
            .add_single_raw(handler, subroute.map(Subroute::Id), f)
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
            .add_stream(handler, subroute.map(Subroute::Id), capacities, f)
    }
}
