//! The order the subject saw: where the other side's messages must reach
//! the subject later than the recording has them.
//!
//! A recording orders the two directions as one observer saw them: one of
//! the peers (Go's recorder), or a tap between them. A message from the
//! other side is recorded before it reaches the subject, so where messages
//! crossed on the wire the subject sent its own first, and what it sent
//! shows it:
//! - **After a call's end.** After a cancellation a callee sends nothing
//!   more on the call but its `DisconnectClientMux`; after the callee's last
//!   word (its end, a refusal, a disconnect, a response) a caller sends
//!   nothing more but a cleanup. So when the subject's side has more on the
//!   call after such a message, the message crossed them: it is delivered
//!   once the subject has sent the last of them.
//! - **Before a caller's cancel.** A caller answers an ack, a data message
//!   or a pong for a call it no longer has with a `Seq 0`
//!   `DisconnectServerMux`. Each such answer the subject's side sent after
//!   cancelling, beyond the answers to what the recording has after the
//!   cancel, shows that one more of them crossed the cancel: the last ones
//!   recorded before it are delivered after it.
//! - **A stream refused by its cancel.** A callee that neither acked nor
//!   refused a stream its caller cancelled had both in hand before it acted
//!   (its manager read them in one batch): the opening, and anything else
//!   of that call, is delivered in the one frame with the cancel.

use std::collections::HashMap;

use grid_proto::{Flags, Message, Op};

use crate::chain::{Chain, Side, chain_of};
use crate::expected::ExpectedSet;
use crate::frame::flatten;
use crate::script::{Answer, Script};
use crate::transcript::{Dir, RecordKind, Transcript, WsKind};

/// A message's place in a recording: record line, index in the frame.
pub(crate) type Place = (usize, usize);

/// How the other side's messages are to be delivered, where not as
/// recorded.
#[derive(Debug, Default)]
pub(crate) struct Crossings {
    /// Deliver only once the subject has sent this expected message.
    pub(crate) holds: HashMap<Place, usize>,
    /// Deliver in the frame of the message at this place, before it.
    pub(crate) bundles: HashMap<Place, Place>,
}

/// A message of the other side, where the recording has it.
struct PeerMessage {
    place: Place,
    msg: Message,
    chain: Chain,
}

impl Crossings {
    /// The crossings of `t` for a subject on the `subject_dir` side.
    pub(crate) fn find(
        t: &Transcript,
        subject_dir: Dir,
        expected: &ExpectedSet,
        script: &Script,
    ) -> Crossings {
        let peer = peer_messages(t, subject_dir);
        let mut c = Crossings::default();
        c.after_ends(&peer, expected);
        c.before_cancels(&peer, expected, script, subject_dir);
        c.refused_by_cancel(&peer, script, subject_dir);
        c
    }

    fn after_ends(&mut self, peer: &[PeerMessage], expected: &ExpectedSet) {
        for p in peer.iter().filter(|p| ends_call(&p.msg)) {
            let last = expected
                .iter()
                .skip_while(|(_, e)| e.line <= p.place.0)
                .take_while(|(_, e)| !(e.chain == p.chain && is_opening(&e.msg)))
                .filter(|(_, e)| e.chain == p.chain && !answers(&e.msg, &p.msg))
                .map(|(i, _)| i)
                .last();
            if let Some(i) = last {
                self.holds.insert(p.place, i);
            }
        }
    }

    fn before_cancels(
        &mut self,
        peer: &[PeerMessage],
        expected: &ExpectedSet,
        script: &Script,
        subject_dir: Dir,
    ) {
        for call in script.calls.iter().filter(|c| c.caller == subject_dir) {
            let Some(cancel) = call.cancel else {
                continue;
            };
            let chain = Chain::Call {
                caller: Side::Subject,
                mux: call.mux,
            };
            // The subject's side from the cancel to the call's end.
            let after: Vec<(usize, &Message)> = expected
                .iter()
                .skip_while(|(_, e)| e.line < cancel.line)
                .filter(|(_, e)| e.chain == chain)
                .take_while(|(_, e)| !is_opening(&e.msg))
                .map(|(i, e)| (i, &e.msg))
                .collect();
            let Some(&(at, _)) = after
                .iter()
                .find(|(_, m)| m.op == Op::DisconnectServerMux && m.seq == cancel.seq)
            else {
                continue;
            };
            let zeros = after
                .iter()
                .filter(|(i, m)| *i != at && m.op == Op::DisconnectServerMux && m.seq == 0)
                .count();
            // A stream's cancel is followed by one cleanup of its own.
            let cleanup = usize::from(call.opening.op == Op::ConnectMux);
            let answered = zeros.saturating_sub(cleanup);
            let of_call = |p: &&PeerMessage| {
                p.chain == chain && p.place.0 > call.line && answered_when_unknown(&p.msg)
            };
            let later = peer
                .iter()
                .filter(of_call)
                .filter(|p| p.place.0 > cancel.line)
                .take_while(|p| !is_opening(&p.msg))
                .count();
            let crossed = answered.saturating_sub(later);
            let before: Vec<&PeerMessage> = peer
                .iter()
                .filter(of_call)
                .filter(|p| p.place.0 < cancel.line)
                .collect();
            for p in before.iter().rev().take(crossed) {
                self.holds.insert(p.place, at);
            }
        }
    }

    fn refused_by_cancel(&mut self, peer: &[PeerMessage], script: &Script, subject_dir: Dir) {
        for call in script.calls.iter().filter(|c| c.caller != subject_dir) {
            let (Some(cancel), Answer::Nothing, Op::ConnectMux) =
                (call.cancel, &call.answer, call.opening.op)
            else {
                continue;
            };
            let chain = Chain::Call {
                caller: Side::Peer,
                mux: call.mux,
            };
            let of_call: Vec<&PeerMessage> = peer
                .iter()
                .filter(|p| p.chain == chain && p.place.0 >= call.line && p.place.0 <= cancel.line)
                .collect();
            let Some(target) = of_call.iter().find(|p| {
                p.place.0 == cancel.line
                    && p.msg.op == Op::DisconnectServerMux
                    && p.msg.seq == cancel.seq
            }) else {
                continue;
            };
            for p in of_call.iter().take_while(|p| p.place != target.place) {
                self.bundles.insert(p.place, target.place);
            }
        }
    }
}

/// Every message of the other side (mux ≠ 0), in recorded order.
fn peer_messages(t: &Transcript, subject_dir: Dir) -> Vec<PeerMessage> {
    let mut out = Vec::new();
    for record in &t.records {
        let RecordKind::Ws {
            dir,
            kind: WsKind::Binary,
            payload,
            ..
        } = &record.kind
        else {
            continue;
        };
        if *dir == subject_dir {
            continue;
        }
        let Ok(flat) = flatten(payload) else {
            continue;
        };
        for (index, msg) in flat.messages.into_iter().enumerate() {
            if msg.mux_id == 0 {
                continue;
            }
            let chain = chain_of(msg.op, Side::Peer, msg.mux_id);
            out.push(PeerMessage {
                place: (record.line, index),
                msg,
                chain,
            });
        }
    }
    out
}

/// Whether a message from the other side ends its call for the subject.
fn ends_call(m: &Message) -> bool {
    match m.op {
        // The caller's cancellation (sequenced for a stream, Seq 0 for a
        // request or a cleanup).
        Op::DisconnectServerMux => true,
        Op::DisconnectClientMux | Op::MuxConnectError | Op::Response => true,
        Op::MuxServerMsg => m.flags.contains(Flags::EOF) || m.flags.contains(Flags::PAYLOAD_IS_ERR),
        _ => false,
    }
}

/// What a caller answers with a `Seq 0` `DisconnectServerMux` when the call
/// is gone (PROTOCOL.md §2.7, [Q2]).
fn answered_when_unknown(m: &Message) -> bool {
    let eof = m.flags.contains(Flags::EOF);
    match m.op {
        Op::MuxServerMsg | Op::AckMux => !eof,
        Op::Pong => true,
        _ => false,
    }
}

fn is_opening(m: &Message) -> bool {
    matches!(m.op, Op::Request | Op::ConnectMux)
}

/// Whether the subject's `e` answers the other side's `p` (and so comes
/// after it in any view): a callee's disconnect after a cancellation, a
/// caller's cleanup after a refusal.
fn answers(e: &Message, p: &Message) -> bool {
    match p.op {
        Op::DisconnectServerMux => e.op == Op::DisconnectClientMux,
        Op::MuxConnectError => e.op == Op::DisconnectServerMux && e.seq == 0,
        _ => false,
    }
}
