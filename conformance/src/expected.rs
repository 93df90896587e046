//! The messages the subject must send, and which recorded message each one
//! it does send stands for.
//!
//! Two Go peers never produce the same bytes twice. What may vary, and why:
//! - **Grouping into `OpMerged` frames**: Go's writer merges whatever is
//!   queued when it gets to run (PROTOCOL.md §3.2). Frames are flattened
//!   before anything is compared ([`crate::frame`]).
//! - **Order across muxes**: each request and stream is served and
//!   consumed by goroutines of its own, so messages of different muxes
//!   interleave as they happen to run. Order is kept per [`Chain`] (one
//!   sender's messages of one mux), not across chains.
//! - **Credit and data within one mux**: one sender's credits and data
//!   messages come from different goroutines. A Go callee sends
//!   `UnblockClMux` from the goroutine that moves the caller's messages
//!   from the stream's inbound buffer to the handler, and `MuxServerMsg`
//!   from the goroutine that forwards the handler's output; a Go caller
//!   sends `UnblockSrvMux` from the goroutine that hands responses to the
//!   application, and `MuxClientMsg` from the one that forwards the
//!   application's requests. Each takes the stream's next `Seq` when it
//!   sends (under the mux's lock, §7.3), so both the order and the numbers
//!   depend on which goroutine ran first. So a credit may be sent before
//!   or after any data message of the same sender and mux (and the other
//!   way round), and `Seq` is compared renumbered in the order the subject
//!   sent: its k-th sequenced message on a chain must carry the recorded
//!   chain's k-th sequence number. Data messages keep their order among
//!   themselves, credits among themselves, and nothing moves across any
//!   other message (an ack, a ping, a cancellation, a cleanup).
//! - **Racing deadlines**: caller and callee both enforce a stream's
//!   `DeadlineMS`, each on its own timer. Where the recorded callee ended
//!   the stream at its deadline (`DisconnectClientMux`) before the recorded
//!   caller cancelled, the caller's timer may as well have fired first: the
//!   subject as that caller may send its cancellation (the sequenced
//!   `DisconnectServerMux` and the cleanup after it) although the recording
//!   has none ([`crate::replay`](mod@crate::replay)).
//! - **Mux ids** a caller picks (Go counts from 1, another peer may not):
//!   the replay maps recorded ids to the subject's.
//! - **Instance ids and timestamps** (`Connect`, connection ping and pong):
//!   compared by form only ([`crate::compare`]).
//!
//! Everything else must match: ops, flags, deadlines, handlers, subroutes,
//! payloads and error texts.

use std::collections::{HashMap, VecDeque};

use grid_proto::{Message, Op};

use crate::chain::Chain;

/// A message the subject must send.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// The record it is in.
    pub(crate) line: usize,
    /// Position in its frame (0-based) and the frame's message count.
    pub(crate) index: usize,
    pub(crate) count: usize,
    pub(crate) msg: Message,
    pub(crate) chain: Chain,
}

impl Expected {
    /// Where in its frame the message is, for failure texts.
    pub(crate) fn place(&self) -> String {
        if self.count > 1 {
            format!(
                " (message {} of {} in the frame)",
                self.index + 1,
                self.count
            )
        } else {
            String::new()
        }
    }
}

/// Whether a stream message hands back credit, carries data, or neither:
/// only credit and data may change places (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Credit,
    Data,
    Other,
}

fn kind(op: Op) -> Kind {
    match op {
        Op::UnblockClMux | Op::UnblockSrvMux => Kind::Credit,
        Op::MuxClientMsg | Op::MuxServerMsg => Kind::Data,
        _ => Kind::Other,
    }
}

/// Whether a message takes its sender's next per-mux sequence number
/// (PROTOCOL.md §7.3); the others carry 0 or echo the message they answer.
pub(crate) fn is_sequenced(msg: &Message) -> bool {
    match msg.op {
        Op::ConnectMux
        | Op::MuxClientMsg
        | Op::UnblockSrvMux
        | Op::AckMux
        | Op::UnblockClMux
        | Op::MuxServerMsg => true,
        Op::Ping => msg.mux_id != 0,
        // The cancellation is sequenced; the cleanup after it is not.
        Op::DisconnectServerMux => msg.seq != 0,
        _ => false,
    }
}

/// The recorded messages of the subject's side, by chain, and which of
/// them the subject has sent.
#[derive(Debug, Default)]
pub(crate) struct ExpectedSet {
    list: Vec<Expected>,
    matched: Vec<bool>,
    /// Per chain, the indices in `list` not yet matched, in recorded order.
    chains: HashMap<Chain, VecDeque<usize>>,
    /// Per chain, the sequence numbers of its sequenced messages not yet
    /// given out, in recorded order.
    seqs: HashMap<Chain, VecDeque<u32>>,
    /// Every message before this index has been matched.
    cursor: usize,
}

impl ExpectedSet {
    /// Adds the next recorded message of the subject's side.
    pub(crate) fn push(&mut self, expected: Expected) {
        let i = self.list.len();
        self.chains.entry(expected.chain).or_default().push_back(i);
        if is_sequenced(&expected.msg) {
            self.seqs
                .entry(expected.chain)
                .or_default()
                .push_back(expected.msg.seq);
        }
        self.list.push(expected);
        self.matched.push(false);
    }

    /// The recorded message `i`.
    pub(crate) fn get(&self, i: usize) -> &Expected {
        &self.list[i]
    }

    /// Whether `chain` has nothing left to match.
    pub(crate) fn chain_done(&self, chain: &Chain) -> bool {
        self.chains.get(chain).is_none_or(VecDeque::is_empty)
    }

    /// The recorded message a message of `op` the subject sent on `chain`
    /// stands for, with the sequence number it must carry (renumbered in
    /// the order the subject sends); `None` if the chain has nothing left.
    /// The message is taken: it counts as sent whether or not it matches.
    pub(crate) fn take(&mut self, chain: &Chain, op: Op) -> Option<(usize, Message)> {
        let queue = self.chains.get_mut(chain)?;
        let pos = choose(&self.list, queue, op);
        let i = queue.remove(pos)?;
        let mut want = self.list[i].msg.clone();
        if is_sequenced(&want)
            && let Some(seq) = self.seqs.get_mut(chain).and_then(VecDeque::pop_front)
        {
            want.seq = seq;
        }
        self.matched[i] = true;
        Some((i, want))
    }

    /// Whether the recorded message `i` has been sent.
    pub(crate) fn is_sent(&self, i: usize) -> bool {
        self.matched.get(i).copied().unwrap_or(true)
    }

    /// Every recorded message with its index, in recorded order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Expected)> {
        self.list.iter().enumerate()
    }

    /// The first recorded message not sent yet, if any.
    pub(crate) fn first_unsent(&mut self) -> Option<&Expected> {
        while self.cursor < self.list.len() && self.matched[self.cursor] {
            self.cursor += 1;
        }
        self.list.get(self.cursor)
    }
}

/// Where in a chain's unsent messages one of `op` belongs: the first of the
/// same kind, passing over messages of the other reorderable kind only.
fn choose(list: &[Expected], queue: &VecDeque<usize>, op: Op) -> usize {
    let k = kind(op);
    if k == Kind::Other {
        return 0;
    }
    for (pos, &i) in queue.iter().enumerate() {
        match kind(list[i].msg.op) {
            same if same == k => return pos,
            Kind::Other => return 0,
            _ => {}
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use grid_proto::Flags;

    use super::*;
    use crate::chain::Side;

    fn msg(op: Op, seq: u32) -> Message {
        let mut m = Message::new(op, 1);
        m.seq = seq;
        m.flags = Flags::CRC;
        m
    }

    fn set(msgs: &[Message]) -> ExpectedSet {
        let chain = Chain::Call {
            caller: Side::Peer,
            mux: 1,
        };
        let mut s = ExpectedSet::default();
        for (line, m) in msgs.iter().enumerate() {
            s.push(Expected {
                line,
                index: 0,
                count: 1,
                msg: m.clone(),
                chain,
            });
        }
        s
    }

    const CHAIN: Chain = Chain::Call {
        caller: Side::Peer,
        mux: 1,
    };

    #[test]
    fn credit_and_data_trade_places_and_seq_follows_the_send_order() {
        // Recorded: data (seq 2) then credit (seq 3); sent the other way.
        let mut s = set(&[msg(Op::MuxServerMsg, 2), msg(Op::UnblockClMux, 3)]);
        let (i, want) = s.take(&CHAIN, Op::UnblockClMux).unwrap();
        assert_eq!((i, want.op, want.seq), (1, Op::UnblockClMux, 2));
        let (i, want) = s.take(&CHAIN, Op::MuxServerMsg).unwrap();
        assert_eq!((i, want.op, want.seq), (0, Op::MuxServerMsg, 3));
        assert!(s.chain_done(&CHAIN));
    }

    #[test]
    fn nothing_passes_over_other_messages() {
        // The final message and the cleanup after it stay where they are.
        let mut s = set(&[msg(Op::AckMux, 0), msg(Op::UnblockClMux, 1)]);
        let (i, _) = s.take(&CHAIN, Op::UnblockClMux).unwrap();
        assert_eq!(i, 0, "matched against the ack (and so reported)");
        let mut s = set(&[msg(Op::DisconnectClientMux, 0), msg(Op::MuxServerMsg, 4)]);
        assert_eq!(s.take(&CHAIN, Op::MuxServerMsg).unwrap().0, 0);
    }

    #[test]
    fn data_keeps_its_order_among_data() {
        let mut s = set(&[
            msg(Op::UnblockClMux, 1),
            msg(Op::MuxServerMsg, 2),
            msg(Op::MuxServerMsg, 3),
        ]);
        let (i, want) = s.take(&CHAIN, Op::MuxServerMsg).unwrap();
        assert_eq!((i, want.seq), (1, 1));
        let (i, want) = s.take(&CHAIN, Op::MuxServerMsg).unwrap();
        assert_eq!((i, want.seq), (2, 2));
        let (i, want) = s.take(&CHAIN, Op::UnblockClMux).unwrap();
        assert_eq!((i, want.seq), (0, 3));
    }
}
