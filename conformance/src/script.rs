//! What the recorded applications did, inferred from a transcript, so that
//! any capture replays whatever its handlers: for every call, what the
//! caller's application asked for (handler, raw subroute id, payload,
//! deadline, the capacities its windows needed, whether and how it
//! cancelled), and how the callee's application answered (a response, a
//! remote error, a refusal, or a stream's outputs, credits and end, each
//! with the input it waited for).
//!
//! The replay drives the subject's application from this instead of from a
//! handler table: as a caller it makes the recorded calls
//! ([`crate::replay`](mod@crate::replay)), as a callee it answers as recorded
//! ([`Answers`], played by the subjects).
//!
//! Everything is read in recorded order, which is the order the replay
//! delivers in; capacities are the smallest that let the recorded traffic
//! through in that order, so the subject never waits for credit the
//! recorded peer did not wait for.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use grid_proto::{Capacities, Flags, HandlerId, Message, MuxConnectError, Op, SubrouteId};

use crate::chain::{Side, caller_of};
use crate::frame::flatten;
use crate::transcript::{Dir, RecordKind, Transcript, WsKind};

/// Every call of a recording, in the order they were opened.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// The calls.
    pub calls: Vec<RecordedCall>,
}

/// One request or stream of the recording.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// The side that made the call: the direction of its opening message.
    pub caller: Dir,
    /// Its mux id as recorded.
    pub mux: u64,
    /// The record of its opening message.
    pub line: usize,
    /// The record of its last message.
    pub last_line: usize,
    /// The time of that record.
    pub t_us: u64,
    /// The `Request` or `ConnectMux` as recorded.
    pub opening: Message,
    /// How the callee's application answered.
    pub answer: Answer,
    /// Streams: the capacities the caller's windows needed (its send window
    /// is the callee's `InCapacity`, its receive buffer the callee's
    /// `OutCapacity`).
    pub caller_capacities: Capacities,
    /// Whether, when and why the caller cancelled.
    pub cancel: Option<Cancel>,
    /// A stream the callee ended at its deadline (`DisconnectClientMux` no
    /// earlier than the opening plus `DeadlineMS`, less 1 ms) before the
    /// caller cancelled: the caller's own deadline raced it.
    pub deadline_race: bool,
}

/// A caller's cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancel {
    /// The record of the (first) cancelling message.
    pub line: usize,
    /// Its time.
    pub t_us: u64,
    /// Its sequence number (a stream's cancel is sequenced; a request's, and
    /// the cleanups after either, are 0).
    pub seq: u32,
    /// The call's deadline passed (the caller's timer did it, not its
    /// application): a recorded stream cancel no earlier than the opening
    /// plus `DeadlineMS`, less 1 ms of recording skew.
    pub by_deadline: bool,
}

/// How a callee's application answered a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Nothing was recorded: the call ended otherwise (a deadline, a
    /// cancellation, the connection), or the recording ends first.
    Nothing,
    /// Refused with `MuxConnectError` and this text (no handler).
    Refused(String),
    /// A single request's response (`None`: absent) or remote error.
    Response(Result<Option<Bytes>, String>),
    /// An accepted stream.
    Stream(StreamAnswer),
}

/// What a stream's handler did, in recorded order.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAnswer {
    /// The capacities the callee's windows needed.
    pub capacities: Capacities,
    /// Its actions.
    pub steps: Vec<Step>,
}

/// One action of a stream handler and what it had received before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Caller messages (data) recorded before it.
    pub after_inputs: u32,
    /// Whether the caller's end of input was recorded before it.
    pub after_eof: bool,
    /// The action.
    pub action: Action,
}

/// A stream handler's action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Took the next input (the callee's `UnblockClMux`).
    Consume,
    /// Sent a message (`None`: absent).
    Send(Option<Bytes>),
    /// Returned: EOF, or the error text.
    Finish(Result<(), String>),
}

/// Where a callee's application is looked up: single or stream handlers,
/// by handler id without a subroute, or by the 32-byte subroute id alone
/// (PROTOCOL.md §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// Stream handlers (`ConnectMux`), else single ones (`Request`).
    pub stream: bool,
    /// The handler id, when there is no subroute.
    pub handler: Option<HandlerId>,
    /// The subroute id.
    pub subroute: Option<SubrouteId>,
}

impl RouteKey {
    /// The route an opening message addresses.
    pub fn of(stream: bool, handler: HandlerId, subroute: Option<SubrouteId>) -> RouteKey {
        RouteKey {
            stream,
            handler: subroute.is_none().then_some(handler),
            subroute,
        }
    }
}

/// Whether an opening message reaches the callee's application at all (the
/// connection refuses invalid handler ids and stateless streams itself).
fn reaches_application(m: &Message) -> bool {
    match m.op {
        Op::Request => m.handler.is_valid(),
        Op::ConnectMux => {
            !m.flags.contains(Flags::STATELESS) && (m.subroute.is_some() || m.handler.is_valid())
        }
        _ => false,
    }
}

/// A call being read, with the counts its inferences need.
#[derive(Debug)]
struct Reading {
    call: RecordedCall,
    stream: Option<StreamAnswer>,
    /// Caller data messages, and whether its EOF came.
    inputs: u32,
    eof: bool,
    /// Caller data not yet credited back by the callee, and the most ever.
    in_flight_in: u32,
    max_in: u32,
    /// Callee messages (data and final) not yet credited back by the
    /// caller, and the most ever.
    in_flight_out: u32,
    max_out: u32,
    /// Credits the callee gave (its consumed inputs).
    credits_given: u32,
    answered: bool,
}

impl Script {
    /// Reads the calls of `t`. Frames that do not decode are skipped (the
    /// replay reports them).
    pub fn infer(t: &Transcript) -> Script {
        let mut calls: Vec<Reading> = Vec::new();
        let mut live: HashMap<(Dir, u64), usize> = HashMap::new();
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
            let Ok(flat) = flatten(payload) else {
                continue;
            };
            for m in flat.messages {
                if m.mux_id == 0 {
                    continue;
                }
                // Sides stand for directions: `Subject` sends `out`.
                let sender = if *dir == Dir::Out {
                    Side::Subject
                } else {
                    Side::Peer
                };
                let caller = match caller_of(m.op, sender) {
                    Some(Side::Subject) => Dir::Out,
                    Some(Side::Peer) => Dir::In,
                    None => continue,
                };
                let key = (caller, m.mux_id);
                if matches!(m.op, Op::Request | Op::ConnectMux) && *dir == caller {
                    live.insert(key, calls.len());
                    calls.push(Reading::open(caller, record.line, record.t_us, m));
                    continue;
                }
                let Some(&i) = live.get(&key) else {
                    continue; // no opening recorded (a stale message)
                };
                let r = &mut calls[i];
                r.call.last_line = record.line;
                if *dir == caller {
                    r.caller_message(&m, record.line, record.t_us);
                } else {
                    r.callee_message(&m, record.t_us);
                }
            }
        }
        Script {
            calls: calls.into_iter().map(Reading::finish).collect(),
        }
    }

    /// The latest call `caller` opened on recorded mux `mux` at or before
    /// record `line`.
    pub fn call_at(&self, caller: Dir, mux: u64, line: usize) -> Option<&RecordedCall> {
        self.calls
            .iter()
            .rev()
            .find(|c| c.caller == caller && c.mux == mux && c.line <= line)
    }
}

impl Reading {
    fn open(caller: Dir, line: usize, t_us: u64, opening: Message) -> Reading {
        Reading {
            call: RecordedCall {
                caller,
                mux: opening.mux_id,
                line,
                last_line: line,
                t_us,
                opening,
                answer: Answer::Nothing,
                caller_capacities: Capacities::DEFAULT,
                cancel: None,
                deadline_race: false,
            },
            stream: None,
            inputs: 0,
            eof: false,
            in_flight_in: 0,
            max_in: 0,
            in_flight_out: 0,
            max_out: 0,
            credits_given: 0,
            answered: false,
        }
    }

    fn is_stream(&self) -> bool {
        self.call.opening.op == Op::ConnectMux
    }

    fn caller_message(&mut self, m: &Message, line: usize, t_us: u64) {
        match m.op {
            Op::MuxClientMsg if m.flags.contains(Flags::EOF) => self.eof = true,
            Op::MuxClientMsg => {
                self.inputs += 1;
                self.in_flight_in += 1;
                self.max_in = self.max_in.max(self.in_flight_in);
            }
            Op::UnblockSrvMux => self.in_flight_out = self.in_flight_out.saturating_sub(1),
            // A stream is cancelled by its sequenced disconnect; a request
            // (beyond Go) by a Seq 0 one before its answer.
            Op::DisconnectServerMux
                if self.call.cancel.is_none()
                    && ((self.is_stream() && m.seq != 0)
                        || (!self.is_stream() && !self.answered)) =>
            {
                let o = &self.call.opening;
                let due = self.call.t_us + u64::from(o.deadline_ms) * 1000;
                self.call.deadline_race = false;
                let by_deadline = self.is_stream() && o.deadline_ms != 0 && t_us + 1000 >= due;
                self.call.cancel = Some(Cancel {
                    line,
                    t_us,
                    seq: m.seq,
                    by_deadline,
                });
            }
            _ => {}
        }
    }

    fn step(&mut self, action: Action) {
        let step = Step {
            after_inputs: self.inputs,
            after_eof: self.eof,
            action,
        };
        if let Some(s) = self.stream.as_mut() {
            s.steps.push(step);
        }
    }

    fn callee_message(&mut self, m: &Message, t_us: u64) {
        match m.op {
            Op::DisconnectClientMux if self.is_stream() && self.call.cancel.is_none() => {
                let d = u64::from(self.call.opening.deadline_ms) * 1000;
                self.call.deadline_race |= d != 0 && t_us + 1000 >= self.call.t_us + d;
            }
            Op::Response if !self.answered => {
                self.answered = true;
                self.call.answer = Answer::Response(if m.flags.contains(Flags::PAYLOAD_IS_ERR) {
                    Err(String::from_utf8_lossy(&m.payload).into_owned())
                } else {
                    Ok(m.payload().cloned())
                });
            }
            Op::MuxConnectError if !self.answered => {
                self.answered = true;
                let text = MuxConnectError::decode(&m.payload).map_or_else(
                    |_| String::from_utf8_lossy(&m.payload).into_owned(),
                    |e| e.error,
                );
                self.call.answer = Answer::Refused(text);
            }
            Op::AckMux if !self.answered => {
                self.answered = true;
                self.stream = Some(StreamAnswer {
                    capacities: Capacities::DEFAULT,
                    steps: Vec::new(),
                });
            }
            Op::UnblockClMux => {
                self.in_flight_in = self.in_flight_in.saturating_sub(1);
                self.credits_given += 1;
                self.step(Action::Consume);
            }
            Op::MuxServerMsg => {
                self.in_flight_out += 1;
                self.max_out = self.max_out.max(self.in_flight_out);
                let action = if m.flags.contains(Flags::PAYLOAD_IS_ERR) {
                    Action::Finish(Err(String::from_utf8_lossy(&m.payload).into_owned()))
                } else if m.flags.contains(Flags::EOF) {
                    Action::Finish(Ok(()))
                } else {
                    Action::Send(m.payload().cloned())
                };
                self.step(action);
            }
            _ => {}
        }
    }

    fn finish(mut self) -> RecordedCall {
        let o = &self.call.opening;
        // The caller's send window: what it had in flight, and none at all
        // when it said so on opening.
        let eof_on_open = o.flags.contains(Flags::EOF);
        let window = if eof_on_open { 0 } else { self.max_in.max(1) };
        let out = self.max_out.max(1);
        self.call.caller_capacities = Capacities {
            in_capacity: window,
            out_capacity: out,
        };
        if let Some(mut s) = self.stream.take() {
            // The callee's input buffer must hold what it left unconsumed.
            let unconsumed = self.inputs.saturating_sub(self.credits_given);
            let any_input = self.inputs > 0 || self.eof;
            let in_capacity = if any_input || !eof_on_open {
                self.max_in.max(unconsumed).max(1)
            } else {
                0
            };
            s.capacities = Capacities {
                in_capacity,
                out_capacity: out,
            };
            self.call.answer = Answer::Stream(s);
        }
        self.call
    }
}

/// The answers of the calls one side made, for the other side's handlers
/// to give: per route, in the order the calls were made (which is the
/// order they reach the handlers).
#[derive(Debug, Default)]
pub struct Answers {
    queues: Mutex<HashMap<RouteKey, VecDeque<Answer>>>,
    /// Per route: a valid handler id to register it under, and whether any
    /// call on it was served (not refused).
    routes: Vec<(RouteKey, HandlerId, bool)>,
}

impl Answers {
    /// The answers to the calls `caller` made in `script`.
    pub fn to_calls_by(script: &Script, caller: Dir) -> Answers {
        let mut queues: HashMap<RouteKey, VecDeque<Answer>> = HashMap::new();
        let mut routes: Vec<(RouteKey, HandlerId, bool)> = Vec::new();
        for c in script.calls.iter().filter(|c| c.caller == caller) {
            let o = &c.opening;
            // A stream cancelled before it was accepted never reaches a
            // handler (the replay hands the callee both at once).
            let cancelled_first =
                o.op == Op::ConnectMux && c.cancel.is_some() && matches!(c.answer, Answer::Nothing);
            if !reaches_application(o) || cancelled_first {
                continue;
            }
            let key = RouteKey::of(o.op == Op::ConnectMux, o.handler, o.subroute);
            queues.entry(key).or_default().push_back(c.answer.clone());
            let served = !matches!(c.answer, Answer::Refused(_));
            match routes.iter_mut().find(|(k, ..)| *k == key) {
                Some(route) => route.2 |= served,
                None => routes.push((key, o.handler, served)),
            }
        }
        Answers {
            queues: Mutex::new(queues),
            routes,
        }
    }

    /// The answer to the next call on `key`, if the recording has one.
    pub fn next(&self, key: RouteKey) -> Option<Answer> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
    }

    /// The routes with at least one served call, each with the handler id
    /// to register it under.
    pub fn served_routes(&self) -> impl Iterator<Item = (RouteKey, HandlerId)> + '_ {
        self.routes
            .iter()
            .filter(|(_, h, served)| *served && h.is_valid())
            .map(|(k, h, _)| (*k, *h))
    }

    /// The capacities a stream handler on `key` needs for every recorded
    /// call on it (the largest of each).
    pub fn stream_capacities(&self, key: RouteKey) -> Capacities {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut caps = Capacities {
            in_capacity: 0,
            out_capacity: 1,
        };
        for a in queues.get(&key).into_iter().flatten() {
            if let Answer::Stream(s) = a {
                caps.in_capacity = caps.in_capacity.max(s.capacities.in_capacity);
                caps.out_capacity = caps.out_capacity.max(s.capacities.out_capacity);
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(name: &str) -> Transcript {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("transcripts");
        Transcript::load(&dir.join(format!("{name}.jsonl"))).unwrap()
    }

    #[test]
    fn single_answers_keep_nil_and_empty_apart() {
        let s = Script::infer(&load("echo-nil"));
        assert_eq!(s.calls.len(), 1);
        assert_eq!(s.calls[0].answer, Answer::Response(Ok(Some(Bytes::new()))));
        let s = Script::infer(&load("remote-err"));
        assert!(matches!(&s.calls[0].answer, Answer::Response(Err(t)) if !t.is_empty()));
        let s = Script::infer(&load("unknown-handler"));
        assert_eq!(
            s.calls[0].answer,
            Answer::Refused("Invalid Handler for type: CheckParts3".into())
        );
    }

    #[test]
    fn a_stream_answer_lists_consumes_sends_and_the_end() {
        let s = Script::infer(&load("stream-echo"));
        let c = &s.calls[0];
        assert_eq!(c.caller, Dir::Out);
        let Answer::Stream(a) = &c.answer else {
            panic!("{:?}", c.answer);
        };
        assert_eq!(
            a.capacities,
            Capacities {
                in_capacity: 1,
                out_capacity: 1
            }
        );
        assert_eq!(a.steps[0].action, Action::Consume);
        assert_eq!(a.steps[0].after_inputs, 1);
        assert!(matches!(&a.steps[1].action, Action::Send(Some(p)) if p.ends_with(b"0")));
        let last = a.steps.last().unwrap();
        assert_eq!(last.action, Action::Finish(Ok(())));
        assert!(last.after_eof);
        assert_eq!(c.caller_capacities.in_capacity, 1);
        assert_eq!(c.cancel, None);
    }

    #[test]
    fn a_one_way_stream_needs_no_input_and_a_cancel_is_the_application_s() {
        let s = Script::infer(&load("stream-count"));
        assert_eq!(s.calls[0].caller_capacities.in_capacity, 0);
        let Answer::Stream(a) = &s.calls[0].answer else {
            panic!()
        };
        assert_eq!(a.capacities.in_capacity, 0);
        let s = Script::infer(&load("stream-cancel"));
        let cancel = s.calls[0].cancel.expect("a cancel");
        assert!(!cancel.by_deadline);
    }
}
