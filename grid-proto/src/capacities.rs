//! The window sizes of a stream handler.

/// The two window sizes of a stream handler
/// (docs/protocol.md#streams-capacities). They are not on the wire: caller
/// and callee must agree out of band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    /// Caller → callee messages in flight; 0 means the stream has no input.
    pub in_capacity: u32,
    /// Callee → caller messages in flight (0 is treated as 1).
    pub out_capacity: u32,
}

impl Capacities {
    /// Go's defaults for typed stream handlers: one each way.
    pub const DEFAULT: Capacities = Capacities {
        in_capacity: 1,
        out_capacity: 1,
    };

    /// `OutCapacity` as Go uses it (at least 1).
    pub fn effective_out(&self) -> u32 {
        self.out_capacity.max(1)
    }
}
