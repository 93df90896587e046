//! The manager's errors: building one, and taking an incoming connection.

use std::fmt;

use crate::handshake::HandshakeError;

/// Why a manager could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The local host is not in the host list, or appears twice.
    LocalHost(String),
    /// A host appears twice.
    DuplicateHost(String),
    /// A host string is not an `http://`, `https://`, `ws://` or `wss://` URL.
    BadHost(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::LocalHost(h) => write!(
                f,
                "local host {h} must appear exactly once in the host list"
            ),
            ConfigError::DuplicateHost(h) => write!(f, "host {h} appears twice"),
            ConfigError::BadHost(h) => write!(f, "host {h} is not an http(s):// or ws(s):// URL"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why an incoming connection was not taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptError {
    /// The handshake was refused (the peer was told why).
    Handshake(HandshakeError),
    /// The peer did not finish the upgrade, or send `Connect`, in time
    /// ([`Options::connection`](crate::driver::Options::connection)`.handshake_timeout` each).
    Timeout,
    /// The transport failed or closed during the handshake.
    Transport(String),
    /// The manager is shut down.
    Shutdown,
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Handshake(e) => write!(f, "handshake refused: {e}"),
            AcceptError::Timeout => f.write_str("handshake timed out"),
            AcceptError::Transport(e) => write!(f, "transport: {e}"),
            AcceptError::Shutdown => f.write_str("manager shut down"),
        }
    }
}

impl std::error::Error for AcceptError {}
