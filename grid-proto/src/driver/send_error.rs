//! Why a stream message could not be sent, as the application sees it.

use std::fmt;

use crate::error::{CallError, CancelReason};

/// Why [`StreamSender::send`](crate::driver::StreamSender::send) (or a typed
/// sender) did not take a message. Nothing was sent, and nothing more will
/// be: every variant is final for the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamSendError {
    /// This side ended its direction: the sender was closed, or the
    /// handler whose output this is has returned.
    Closed,
    /// The stream has no input: the handler takes none (`InCapacity` 0), so
    /// the caller's sender never sends.
    NoInput,
    /// The other side ended the stream normally (the handler returned, or
    /// the caller ended its input and the handler its output): nobody reads
    /// any more.
    Ended,
    /// The stream failed, as [`StreamReceiver`](crate::driver::StreamReceiver)
    /// also reports: the remote handler's error, the deadline, the
    /// connection's loss or shutdown, a protocol error (the [`CallError`]
    /// says which).
    Failed(CallError),
    /// The caller of this served stream cancelled it, its deadline passed,
    /// or the connection was lost (the [`CancelReason`] says which).
    Cancelled(CancelReason),
    /// An earlier message was larger than the connection's maximum message
    /// size; the stream cannot go on without it.
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for StreamSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamSendError::Closed => f.write_str("this side of the stream is closed"),
            StreamSendError::NoInput => f.write_str("the stream's handler takes no input"),
            StreamSendError::Ended => f.write_str("the stream has ended"),
            StreamSendError::Failed(e) => write!(f, "the stream failed: {e}"),
            StreamSendError::Cancelled(reason) => write!(f, "the stream was cancelled: {reason}"),
            StreamSendError::TooLarge { size, max } => write!(
                f,
                "a message of {size} bytes exceeds the limit of {max} bytes"
            ),
        }
    }
}

impl std::error::Error for StreamSendError {}
