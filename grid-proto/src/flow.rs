//! Flow control of one stream, the same whichever side this node is on
//! (docs/protocol.md#streams-sequence-numbers, docs/protocol.md#streams-flow-control):
//! the sequence numbers of each direction, the send credit bounded by the
//! peer's window, the receive buffer bounded by this side's capacity, and
//! the detection of a stream where both sides wait for credit.
//!
//! A caller's stream and a callee's stream each hold one [`Flow`]; what
//! differs between them (the ack, EOF handling, a pending finish, pings
//! and idle checks) stays in `outgoing.rs` and `incoming.rs`.

/// The flow-control state of one stream, seen from one side.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    /// Sequence number of the next message this side sends.
    send_seq: u32,
    /// Sequence number the next message received must carry.
    recv_seq: u32,
    /// Most send credit this side can hold: the peer's receive buffer.
    window: u32,
    /// Messages this side may send before the peer hands credit back.
    credits: u32,
    /// This side's receive buffer: messages the peer may send unconsumed.
    capacity: u32,
    /// Messages received and not yet consumed by the application.
    unconsumed: u32,
    /// A send found no credit: the application waits to be told of some.
    waiting: bool,
    /// The current stall was reported; cleared when either side makes room.
    stall_reported: bool,
}

impl Flow {
    /// A stream whose next outgoing message carries `send_seq` and whose
    /// next incoming one must carry `recv_seq`; no window yet.
    pub(crate) fn new(send_seq: u32, recv_seq: u32) -> Flow {
        Flow {
            send_seq,
            recv_seq,
            window: 0,
            credits: 0,
            capacity: 0,
            unconsumed: 0,
            waiting: false,
            stall_reported: false,
        }
    }

    /// Sets the peer's receive buffer (`window`, the most send credit) and
    /// this side's (`capacity`). Credit comes with [`open_window`](Self::open_window).
    pub(crate) fn set_limits(&mut self, window: u32, capacity: u32) {
        self.window = window;
        self.capacity = capacity;
    }

    /// The stream is accepted: this side may send a full window.
    pub(crate) fn open_window(&mut self) {
        self.credits = self.window;
    }

    /// Takes the sequence number for the next message this side sends
    /// (data or control). Wraps like Go's `uint32`.
    pub(crate) fn next_send_seq(&mut self) -> u32 {
        let seq = self.send_seq;
        self.send_seq = seq.wrapping_add(1);
        seq
    }

    /// Checks the sequence number of a received message; on a match the
    /// next one is expected. `Err` carries the number that was expected.
    pub(crate) fn check_recv_seq(&mut self, seq: u32) -> Result<(), u32> {
        if seq != self.recv_seq {
            return Err(self.recv_seq);
        }
        self.recv_seq = seq.wrapping_add(1);
        Ok(())
    }

    /// Jumps the receive sequence ahead, for tests far into a stream.
    #[cfg(test)]
    pub(crate) fn expect_recv_seq(&mut self, seq: u32) {
        self.recv_seq = seq;
    }

    /// Send credit left.
    pub(crate) fn credits(&self) -> u32 {
        self.credits
    }

    /// Whether a message may be sent now; if not, this side now waits for
    /// credit and [`credit_arrived`](Self::credit_arrived) will say when.
    pub(crate) fn has_credit_or_wait(&mut self) -> bool {
        if self.credits == 0 {
            self.waiting = true;
            return false;
        }
        true
    }

    /// Spends one credit on a data message and returns its sequence number.
    /// Only after [`has_credit_or_wait`](Self::has_credit_or_wait) said yes.
    pub(crate) fn spend_credit(&mut self) -> u32 {
        self.credits = self.credits.saturating_sub(1);
        self.next_send_seq()
    }

    /// The peer handed one credit back. More than the window is never held
    /// (Go logs and drops the excess).
    pub(crate) fn add_credit(&mut self) {
        self.credits = self.credits.saturating_add(1).min(self.window);
        self.stall_reported = false;
    }

    /// Whether the application waited for credit and now has some: it is
    /// to be told once.
    pub(crate) fn credit_arrived(&mut self) -> bool {
        if self.waiting && self.credits > 0 {
            self.waiting = false;
            return true;
        }
        false
    }

    /// The application no longer waits to send (it ended its output).
    pub(crate) fn stop_waiting(&mut self) {
        self.waiting = false;
    }

    /// A data message arrived: buffers it until consumed. `false` when the
    /// peer sent more than this side's capacity allows (it overran its
    /// window; the stream fails).
    pub(crate) fn receive(&mut self) -> bool {
        if self.unconsumed >= self.capacity {
            return false;
        }
        self.unconsumed += 1;
        true
    }

    /// The application consumed a received message: returns whether there
    /// was one, in which case the peer is owed one credit (an unblock
    /// message carrying [`next_send_seq`](Self::next_send_seq)).
    pub(crate) fn consume(&mut self) -> bool {
        if self.unconsumed == 0 {
            return false;
        }
        self.unconsumed -= 1;
        self.stall_reported = false;
        true
    }

    /// Whether a new stall is to be reported: this side waits for credit
    /// while the peer cannot send either, because this side holds a full
    /// buffer of its messages unconsumed. Reported once per episode: again
    /// only after either side made room. `both_open`: both directions of
    /// the stream are still open (the side-specific part of the test).
    pub(crate) fn check_stall(&mut self, both_open: bool) -> bool {
        let stalled = self.waiting
            && both_open
            && self.credits == 0
            && self.capacity > 0
            && self.unconsumed >= self.capacity;
        if stalled && !self.stall_reported {
            self.stall_reported = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accepted stream: the peer takes `window` messages, this side
    /// buffers `capacity`.
    fn open(window: u32, capacity: u32) -> Flow {
        let mut f = Flow::new(1, 0);
        f.set_limits(window, capacity);
        f.open_window();
        f
    }

    #[test]
    fn sequence_numbers_count_each_direction_and_wrap() {
        let mut f = Flow::new(u32::MAX, u32::MAX);
        assert_eq!(f.next_send_seq(), u32::MAX);
        assert_eq!(f.next_send_seq(), 0);
        assert_eq!(f.check_recv_seq(u32::MAX), Ok(()));
        assert_eq!(f.check_recv_seq(0), Ok(()));
        // A gap is refused with what was expected, and expects it still.
        assert_eq!(f.check_recv_seq(2), Err(1));
        assert_eq!(f.check_recv_seq(1), Ok(()));
    }

    #[test]
    fn no_credit_before_the_window_opens() {
        let mut f = Flow::new(1, 0);
        f.set_limits(2, 1);
        assert_eq!(f.credits(), 0);
        assert!(!f.has_credit_or_wait());
        f.open_window();
        assert_eq!(f.credits(), 2);
        // The waiter is told once.
        assert!(f.credit_arrived());
        assert!(!f.credit_arrived());
    }

    #[test]
    fn credit_is_spent_per_message_and_returned_up_to_the_window() {
        let mut f = open(2, 1);
        assert!(f.has_credit_or_wait());
        assert_eq!(f.spend_credit(), 1);
        assert_eq!(f.spend_credit(), 2);
        assert!(!f.has_credit_or_wait());
        f.add_credit();
        assert!(f.credit_arrived());
        f.add_credit();
        f.add_credit();
        assert_eq!(f.credits(), 2, "never above the window");
        // Control messages share the sequence.
        assert_eq!(f.next_send_seq(), 3);
    }

    #[test]
    fn a_full_window_saturates_instead_of_wrapping() {
        let mut f = open(u32::MAX, 1);
        f.add_credit();
        assert_eq!(f.credits(), u32::MAX);
    }

    #[test]
    fn the_receive_buffer_refuses_an_overrun() {
        let mut f = open(1, 2);
        assert!(f.receive());
        assert!(f.receive());
        assert!(!f.receive(), "a third message overruns a buffer of two");
        assert!(f.consume());
        assert!(f.receive());
        assert!(f.consume());
        assert!(f.consume());
        assert!(!f.consume(), "nothing left to consume");
    }

    #[test]
    fn a_stall_is_reported_once_per_episode() {
        let mut f = open(1, 1);
        f.spend_credit();
        assert!(f.receive());
        // Not waiting to send yet: no stall.
        assert!(!f.check_stall(true));
        assert!(!f.has_credit_or_wait());
        assert!(!f.check_stall(false), "a closed direction cannot deadlock");
        assert!(f.check_stall(true));
        assert!(!f.check_stall(true), "once per episode");
        // This side makes room: a later stall is a new episode.
        assert!(f.consume());
        assert!(!f.check_stall(true));
        assert!(f.receive());
        assert!(f.check_stall(true));
        // The peer makes room: the waiter gets its credit.
        f.add_credit();
        assert!(!f.check_stall(true));
        assert!(f.credit_arrived());
    }

    #[test]
    fn a_zero_capacity_never_stalls() {
        let mut f = open(1, 0);
        f.spend_credit();
        assert!(!f.has_credit_or_wait());
        assert!(!f.check_stall(true));
        assert!(!f.receive());
    }
}
