//! Op codes: what a message is (docs/protocol.md#envelope-ops).

use std::fmt;

/// The operation of a message. The numeric values are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// First message of a connection (dialer → acceptor); payload `ConnectRequest`.
    Connect = 1,
    /// Answer to `Connect`; payload `ConnectResponse`.
    ConnectResponse = 2,
    /// Connection ping (mux id 0) or a caller's stream ping.
    Ping = 3,
    /// Answer to `Ping`; payload `Pong`.
    Pong = 4,
    /// Caller opens a stream; payload = initial payload.
    ConnectMux = 5,
    /// Callee could not start a request or stream; payload `MuxConnectError`.
    MuxConnectError = 6,
    /// Callee: "your mux is gone on my side". Addresses the caller's table.
    DisconnectClientMux = 7,
    /// Caller: "cancel your stream". Addresses the callee's table.
    DisconnectServerMux = 8,
    /// Stream data (or EOF) from the caller.
    MuxClientMsg = 9,
    /// Stream data, final EOF or final error from the callee.
    MuxServerMsg = 10,
    /// One credit back to the callee.
    UnblockSrvMux = 11,
    /// One credit back to the caller.
    UnblockClMux = 12,
    /// Callee accepted a stream.
    AckMux = 13,
    /// A single request.
    Request = 14,
    /// The answer to a single request.
    Response = 15,
    /// Defined but never sent by Go; ignored on receipt.
    Disconnect = 16,
    /// A container of several messages (docs/protocol.md#merged).
    Merged = 17,
}

impl Op {
    /// Every op, in wire order.
    pub const ALL: [Op; 17] = [
        Op::Connect,
        Op::ConnectResponse,
        Op::Ping,
        Op::Pong,
        Op::ConnectMux,
        Op::MuxConnectError,
        Op::DisconnectClientMux,
        Op::DisconnectServerMux,
        Op::MuxClientMsg,
        Op::MuxServerMsg,
        Op::UnblockSrvMux,
        Op::UnblockClMux,
        Op::AckMux,
        Op::Request,
        Op::Response,
        Op::Disconnect,
        Op::Merged,
    ];

    /// The op for a wire value, if it is one.
    pub fn from_u8(v: u8) -> Option<Op> {
        match v {
            1..=17 => Some(Op::ALL[usize::from(v) - 1]),
            _ => None,
        }
    }

    /// Go's name for the op (as in its logs).
    pub fn name(self) -> &'static str {
        match self {
            Op::Connect => "Connect",
            Op::ConnectResponse => "ConnectResponse",
            Op::Ping => "Ping",
            Op::Pong => "Pong",
            Op::ConnectMux => "ConnectMux",
            Op::MuxConnectError => "MuxConnectError",
            Op::DisconnectClientMux => "DisconnectClientMux",
            Op::DisconnectServerMux => "DisconnectServerMux",
            Op::MuxClientMsg => "MuxClientMsg",
            Op::MuxServerMsg => "MuxServerMsg",
            Op::UnblockSrvMux => "UnblockSrvMux",
            Op::UnblockClMux => "UnblockClMux",
            Op::AckMux => "AckMux",
            Op::Request => "Request",
            Op::Response => "Response",
            Op::Disconnect => "Disconnect",
            Op::Merged => "Merged",
        }
    }
}

impl From<Op> for u8 {
    fn from(op: Op) -> u8 {
        op as u8
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_match_the_spec() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(u8::from(*op), i as u8 + 1);
            assert_eq!(Op::from_u8(i as u8 + 1), Some(*op));
        }
        assert_eq!(Op::from_u8(0), None);
        assert_eq!(Op::from_u8(18), None);
        assert_eq!(Op::Request as u8, 14);
        assert_eq!(Op::Merged as u8, 17);
    }
}
