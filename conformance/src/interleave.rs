//! Go-shaped interleavings: a recording rewritten as Go might just as well
//! have produced it, to show the replay accepts what Go's timing varies
//! (see [`crate::expected`]).
//!
//! Within one mux, one sender's credit (`UnblockClMux`, `UnblockSrvMux`)
//! and data (`MuxServerMsg`, `MuxClientMsg`) come from different
//! goroutines, and each takes the next `Seq` as it is sent. So where a
//! recording has a credit and a data message of one sender next to each
//! other (nothing of the other side of that mux in between), Go could have
//! sent them the other way round, numbered in that order.

use std::collections::HashMap;

use grid_proto::{Flags, Message, Op};

use crate::chain::{Side, caller_of};
use crate::frame::{flatten, pack};
use crate::transcript::{Dir, RecordKind, Transcript, WsKind};

fn is_credit(op: Op) -> bool {
    matches!(op, Op::UnblockClMux | Op::UnblockSrvMux)
}

/// Data that may trade places with a credit: not the sender's last word.
fn is_plain_data(m: &Message) -> bool {
    matches!(m.op, Op::MuxClientMsg | Op::MuxServerMsg) && !m.flags.contains(Flags::EOF)
}

/// Where a message sits: record index, index in the frame.
type At = (usize, usize);

/// `t` with every adjacent credit/data pair of one sender and mux swapped
/// (pairs taken greedily from the start, each message at most once), and
/// the number of pairs swapped.
pub fn swap_credit_and_data(t: &Transcript) -> (Transcript, usize) {
    let mut frames: Vec<Option<(Dir, Vec<Message>)>> = t
        .records
        .iter()
        .map(|r| match &r.kind {
            RecordKind::Ws {
                dir,
                kind: WsKind::Binary,
                payload,
                ..
            } => flatten(payload).ok().map(|f| (*dir, f.messages)),
            _ => None,
        })
        .collect();

    // Per mux (named by who called and its id), its messages in order.
    let mut muxes: HashMap<(Dir, u64), Vec<(At, Dir)>> = HashMap::new();
    for (ri, frame) in frames.iter().enumerate() {
        let Some((dir, messages)) = frame else {
            continue;
        };
        for (mi, m) in messages.iter().enumerate() {
            if m.mux_id == 0 {
                continue;
            }
            // Sides stand for directions here: Subject sends `out`.
            let sender = if *dir == Dir::Out {
                Side::Subject
            } else {
                Side::Peer
            };
            let opener = match caller_of(m.op, sender) {
                Some(Side::Subject) => Dir::Out,
                Some(Side::Peer) => Dir::In,
                None => continue,
            };
            muxes
                .entry((opener, m.mux_id))
                .or_default()
                .push(((ri, mi), *dir));
        }
    }

    let mut swaps = Vec::new();
    for seq in muxes.values() {
        let mut used = vec![false; seq.len()];
        for i in 0..seq.len() {
            if used[i] {
                continue;
            }
            let (a, sender) = seq[i];
            // The next message on this mux, from the same sender (so nothing
            // of the other side lies in between).
            let j = i + 1;
            if j >= seq.len() || seq[j].1 != sender || used[j] {
                continue;
            }
            let (b, _) = seq[j];
            let (ma, mb) = (message(&frames, a), message(&frames, b));
            let pair =
                (is_credit(ma.op) && is_plain_data(mb)) || (is_plain_data(ma) && is_credit(mb.op));
            if pair {
                used[i] = true;
                used[j] = true;
                swaps.push((a, b));
            }
        }
    }

    let mut changed = vec![false; frames.len()];
    for &(a, b) in &swaps {
        changed[a.0] = true;
        changed[b.0] = true;
        let (mut ma, mut mb) = (message(&frames, a).clone(), message(&frames, b).clone());
        std::mem::swap(&mut ma.seq, &mut mb.seq);
        *message_mut(&mut frames, a) = mb;
        *message_mut(&mut frames, b) = ma;
    }

    let mut out = t.clone();
    for ((record, frame), changed) in out.records.iter_mut().zip(frames).zip(changed) {
        if let (true, RecordKind::Ws { payload, .. }, Some((_, messages))) =
            (changed, &mut record.kind, frame)
            && let Some(packed) = pack(&messages)
        {
            *payload = packed;
        }
    }
    (out, swaps.len())
}

fn message(frames: &[Option<(Dir, Vec<Message>)>], (r, m): At) -> &Message {
    &frames[r].as_ref().expect("indexed from a frame").1[m]
}

fn message_mut(frames: &mut [Option<(Dir, Vec<Message>)>], (r, m): At) -> &mut Message {
    &mut frames[r].as_mut().expect("indexed from a frame").1[m]
}
