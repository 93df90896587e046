//! What the connection tells the application ([`crate::Connection::poll_event`]).

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use crate::error::{CallError, CancelReason, DisconnectReason};
use crate::handler::HandlerId;
use crate::payload::InstanceId;
use crate::subroute::SubrouteId;

/// A call this side started (a single request or a stream): the caller's
/// mux id. Only meaningful on the connection that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// A call the peer started and this side serves: the peer's mux id. A
/// separate space from [`CallId`]: the same number may name both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingId(pub u64);

/// A call of either side: what the getters that apply to both take
/// ([`crate::Connection::is_live`], [`crate::Connection::credit`]). Made
/// from a [`CallId`] or an [`IncomingId`] by `into()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MuxId {
    /// A call this side started.
    Call(CallId),
    /// A call the peer started.
    Incoming(IncomingId),
}

impl From<CallId> for MuxId {
    fn from(id: CallId) -> MuxId {
        MuxId::Call(id)
    }
}

impl From<IncomingId> for MuxId {
    fn from(id: IncomingId) -> MuxId {
        MuxId::Incoming(id)
    }
}

impl fmt::Display for MuxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MuxId::Call(id) => id.fmt(f),
            MuxId::Incoming(id) => id.fmt(f),
        }
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call {}", self.0)
    }
}

impl fmt::Display for IncomingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "incoming {}", self.0)
    }
}

/// An application event. Every call ends with exactly one of
/// [`Event::Response`] / [`Event::StreamEnd`] (unless the application
/// cancelled it itself), and every incoming call with exactly one of a
/// response/finish command or [`Event::IncomingCancelled`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed; calls may be made.
    Connected {
        /// The peer's instance id.
        remote_id: InstanceId,
        /// The peer's instance id differs from the previous session's: it
        /// restarted. (Nothing changes on the wire; every call of the old
        /// session has already ended.)
        peer_restarted: bool,
    },
    /// The session ended (or a handshake failed). The driver closes the
    /// transport. Every call of the session has already ended.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The dialer should open a new transport now and call
    /// [`crate::Connection::start_handshake`] (or
    /// [`crate::Connection::handle_dial_failed`]).
    Dial,

    /// A single request finished.
    Response {
        /// The request.
        id: CallId,
        /// The payload (`None` when the callee sent none) or why it failed.
        result: Result<Option<Bytes>, CallError>,
    },
    /// A message from the callee of a stream. Call
    /// [`crate::OutgoingCall::consumed`] once the application has taken
    /// it, to give the callee its credit back.
    StreamMessage {
        /// The stream.
        id: CallId,
        /// The message.
        payload: Bytes,
    },
    /// A stream that ran out of send credit may send again.
    StreamCredit {
        /// The stream.
        id: CallId,
    },
    /// A stream ended: the callee finished (`Ok`) or it failed.
    StreamEnd {
        /// The stream.
        id: CallId,
        /// How it ended.
        result: Result<(), CallError>,
    },

    /// The peer made a single request. Answer with
    /// [`crate::IncomingCall::respond`] or
    /// [`crate::IncomingCall::reject`].
    IncomingRequest {
        /// The request.
        id: IncomingId,
        /// The handler addressed.
        handler: HandlerId,
        /// The subroute addressed, if any.
        subroute: Option<SubrouteId>,
        /// The payload (`None` when absent, which Go sends for empty too).
        payload: Option<Bytes>,
        /// When the caller gives up; a response after it is not sent.
        deadline: Option<Instant>,
    },
    /// The peer opened a stream. Answer with
    /// [`crate::IncomingCall::accept`] or
    /// [`crate::IncomingCall::reject`].
    IncomingStream {
        /// The stream.
        id: IncomingId,
        /// The handler addressed.
        handler: HandlerId,
        /// The subroute addressed, if any.
        subroute: Option<SubrouteId>,
        /// The initial payload.
        payload: Option<Bytes>,
        /// When the stream's deadline expires.
        deadline: Option<Instant>,
    },
    /// A message from the caller of an incoming stream. Call
    /// [`crate::IncomingCall::consumed`] once the handler took it.
    IncomingMessage {
        /// The stream.
        id: IncomingId,
        /// The message (`None` when absent).
        payload: Option<Bytes>,
    },
    /// The caller of an incoming stream will send no more messages.
    IncomingInputEnd {
        /// The stream.
        id: IncomingId,
    },
    /// An incoming stream that ran out of output credit may send again.
    /// Reported even after the caller's EOF (the output still waits); one
    /// queued before [`crate::IncomingCall::finish`] may be read after
    /// it and is then to be ignored.
    IncomingCredit {
        /// The stream.
        id: IncomingId,
    },
    /// An incoming request or stream was ended from outside the handler;
    /// the handler should stop. Any later answer for it is dropped.
    IncomingCancelled {
        /// The request or stream.
        id: IncomingId,
        /// Why.
        reason: CancelReason,
    },

    /// Beyond Go: a two-way stream this side called may be deadlocked: the
    /// application waits to send without credit while the callee is out of
    /// credit too (this side holds all its unconsumed messages).
    StreamStalled {
        /// The stream.
        id: CallId,
    },
    /// Beyond Go: the same for a stream this side serves.
    IncomingStalled {
        /// The stream.
        id: IncomingId,
    },
}
