//! Where a connection is in its life.

/// Where a connection is in its life (Go's states,
/// docs/protocol.md#lifecycle-states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Never connected; an acceptor waits here for its peer.
    Unconnected,
    /// A transport is up and the handshake is under way.
    Connecting,
    /// Handshake done: calls may be made.
    Connected,
    /// An attempt failed or the session was lost; the dialer will retry.
    ConnectionError,
    /// Shut down for good.
    Shutdown,
}
