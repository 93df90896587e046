//! Chains: the sequences within which message order is fixed.
//!
//! Messages of one mux keep their order on the wire, but messages of
//! different muxes interleave as the peers' goroutines (or tasks) happen to
//! run. So each message belongs to a chain, named by who made the call and
//! the mux id *as recorded*; on the connection itself, the handshake and
//! each side's pings (with the pongs answering them) form chains of their own.

use std::fmt;

use grid_proto::Op;

/// One of the two peers of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The implementation under test.
    Subject,
    /// The peer the replay plays from the recording.
    Peer,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Subject => Side::Peer,
            Side::Peer => Side::Subject,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Subject => "subject",
            Side::Peer => "peer",
        })
    }
}

/// A sequence of messages whose order must be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// `Connect` and `ConnectResponse`.
    Handshake,
    /// Connection pings sent by `initiator` and the pongs answering them.
    Pings {
        /// Who pings.
        initiator: Side,
    },
    /// A request or stream made by `caller`, by its recorded mux id.
    Call {
        /// Who made the call (and so chose the mux id).
        caller: Side,
        /// The mux id in the recording.
        mux: u64,
    },
    /// Any other connection-level message (Go sends none).
    Connection(Op),
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chain::Handshake => f.write_str("the handshake"),
            Chain::Pings { initiator } => write!(f, "the {initiator}'s connection pings"),
            Chain::Call { caller, mux } => write!(f, "the {caller}'s call on recorded mux {mux}"),
            Chain::Connection(op) => write!(f, "connection-level {op}"),
        }
    }
}

/// Who made the call a message with mux id ≠ 0 belongs to, given who sent
/// it: caller ops are sent by the caller, callee ops by the callee. `None`
/// for ops that belong to no call.
pub fn caller_of(op: Op, sender: Side) -> Option<Side> {
    match op {
        Op::Request
        | Op::ConnectMux
        | Op::MuxClientMsg
        | Op::UnblockSrvMux
        | Op::DisconnectServerMux
        | Op::Ping => Some(sender),
        Op::Response
        | Op::MuxConnectError
        | Op::AckMux
        | Op::MuxServerMsg
        | Op::UnblockClMux
        | Op::DisconnectClientMux
        | Op::Pong => Some(sender.other()),
        Op::Connect | Op::ConnectResponse | Op::Disconnect | Op::Merged => None,
    }
}

/// The chain of a message sent by `sender`, whose mux id in the recording
/// is `recorded_mux`.
pub fn chain_of(op: Op, sender: Side, recorded_mux: u64) -> Chain {
    if recorded_mux == 0 {
        return match op {
            Op::Connect | Op::ConnectResponse => Chain::Handshake,
            Op::Ping => Chain::Pings { initiator: sender },
            Op::Pong => Chain::Pings {
                initiator: sender.other(),
            },
            op => Chain::Connection(op),
        };
    }
    match caller_of(op, sender) {
        Some(caller) => Chain::Call {
            caller,
            mux: recorded_mux,
        },
        None => Chain::Connection(op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_share_the_chain_of_their_call() {
        let req = chain_of(Op::Request, Side::Peer, 3);
        assert_eq!(req, chain_of(Op::Response, Side::Subject, 3));
        assert_ne!(req, chain_of(Op::Request, Side::Subject, 3));
        let ping = chain_of(Op::Ping, Side::Subject, 0);
        assert_eq!(ping, chain_of(Op::Pong, Side::Peer, 0));
        assert_ne!(ping, chain_of(Op::Pong, Side::Subject, 0));
    }
}
