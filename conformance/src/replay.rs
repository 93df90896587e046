//! Replaying a transcript against a [`Subject`] on a virtual clock.
//!
//! The subject takes one WebSocket side of the recorded connection (the
//! [`Role`]); the replay plays the other from the recording. Walking the
//! records in order, at each record's time (`start + t_us`):
//! - a frame the subject's side sent: if it starts or drives a call the
//!   subject made (a `Request`, `ConnectMux`, stream message, credit or
//!   cancellation by the application), the subject's application is told to
//!   make that call, with what the recording shows ([`crate::script`]: the
//!   raw handler and subroute, the deadline, the capacities the recorded
//!   windows needed); everything else (pings, pongs, cleanups, a deadline's
//!   cancel) the subject must send by itself, and its answers to the other
//!   side's calls come from its application playing the recorded ones
//!   ([`crate::scripted`]);
//! - a frame the other side sent: first, every message the subject's side
//!   sent before it must have been sent (the subject's timers may run up to
//!   [`ReplayOptions::grace`] past the record to get there), then the frame
//!   is delivered, mux ids mapped to the subject's; a message that in the
//!   subject's own view crossed what it sent later waits for that
//!   ([`crate::crossing`]).
//!
//! Every frame the subject sends is flattened and each message is compared
//! ([`crate::compare`]) with the recorded message it stands for
//! ([`crate::expected`]): the next one of its [`Chain`], except that one
//! sender's credit and data messages of a mux may trade places, as Go's
//! may; order is checked within a mux, not across muxes. Time only advances to
//! record times and subject timers: no sleeping, no wall clock.
//!
//! A real-time subject (a driver) keeps its own time: the replay does not
//! sleep through recorded gaps (except while a call with a deadline is
//! live: then it keeps to the recording's pace, so no deadline runs out
//! early), but waits (at most
//! [`ReplayOptions::wait`] per message) for what the subject must send,
//! and at the end listens [`ReplayOptions::settle`] more for messages the
//! recording does not have. If the subject must ping, its ping interval is
//! [`ReplayOptions::ping_interval`] instead of 10 s: its pings' `DeadlineMS`
//! (the interval) is expected to be that, and pings beyond the recorded
//! ones are not held against it.
//!
//! Not compared: the HTTP upgrade and WebSocket control frames (ping, pong,
//! close) of the subject's side, which the core does not produce (a driver
//! subject's peer checks the upgrade request itself). For a dialing subject
//! the recorded upgrade response opens the transport; for an accepting one
//! the recorded request is handed to it; a close frame from the other side
//! ends the transport.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_proto::{
    Capacities, ConnectRequest, Flags, Message, Op, PingPayload, PongPayload, Timestamp,
    should_dial,
};

use crate::chain::{Chain, Side, caller_of, chain_of};
use crate::compare::{Difference, compare, describe};
use crate::crossing::{Crossings, Place};
use crate::expected::{Expected, ExpectedSet};
use crate::failure::Failure;
use crate::frame::{flatten, pack};
use crate::script::{Answers, RecordedCall, Script};
use crate::subject::{AppCall, Subject, SubjectSetup, Target};
use crate::transcript::{Dir, Record, RecordKind, Transcript, WsKind, WsSide};

/// The WebSocket side the subject plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The subject dials (it is the upgrade's client).
    Client,
    /// The subject accepts.
    Server,
}

impl Role {
    /// Both roles.
    pub const BOTH: [Role; 2] = [Role::Client, Role::Server];

    /// The WebSocket side of this role.
    pub fn ws_side(self) -> WsSide {
        match self {
            Role::Client => WsSide::Client,
            Role::Server => WsSide::Server,
        }
    }

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "client" => Ok(Role::Client),
            "server" => Ok(Role::Server),
            _ => Err(format!("unknown role {s:?} (client, server, both)")),
        }
    }
}

/// Knobs of a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Added to the mux ids of the calls the replayed peer makes, to show
    /// the subject answers on whatever ids its caller picks (0: as recorded).
    pub peer_mux_offset: u64,
    /// How far past a record's time the subject's timers may run while the
    /// replay waits for a message the subject should have sent by then.
    pub grace: Duration,
    /// Real-time subjects: the longest wait (real time) for each message
    /// the subject should send, and for its dial or upgrade.
    pub wait: Duration,
    /// Real-time subjects: how long the replay listens after the last
    /// record for messages the recording does not have.
    pub settle: Duration,
    /// Real-time subjects: the connection ping interval, when the recording
    /// has the subject's connection pings (Go's is 10 s).
    pub ping_interval: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            peer_mux_offset: 0,
            grace: Duration::from_secs(2),
            wait: Duration::from_secs(5),
            settle: Duration::from_millis(50),
            ping_interval: Duration::from_millis(500),
        }
    }
}

/// Counts of what a passing replay checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages the subject sent, each matched with the recording.
    pub messages_matched: usize,
    /// Frames delivered to the subject.
    pub frames_delivered: usize,
    /// Calls the subject's application made.
    pub app_calls: usize,
}

/// The result of replaying one transcript against one target in one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The subject behaved as recorded.
    Pass(Stats),
    /// The target cannot be replayed against (the reason).
    Skip(String),
    /// The first difference.
    Fail(Failure),
}

/// Replays `transcript` against a fresh subject of `target` in `role`.
pub fn replay(
    transcript: &Transcript,
    target: Target,
    role: Role,
    options: &ReplayOptions,
) -> Outcome {
    let start = Instant::now();
    let mut setup = match setup(transcript, role, start) {
        Ok(s) => s,
        Err(f) => return Outcome::Fail(f),
    };
    if target.is_real_time() {
        let h = &transcript.header;
        if [&h.recorder_host, &h.peer_host].iter().any(|h| is_tls(h)) {
            return Outcome::Skip(
                "TLS host names: the drivers are replayed over plain loopback TCP".into(),
            );
        }
        setup.wait = options.wait;
        setup.real_time = true;
        if subject_pings(transcript, role) {
            setup.ping_interval = Some(options.ping_interval);
        }
    }
    let mut subject = match target.subject(&setup) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Fail(Failure::new(
                &transcript.file_name(),
                None,
                format!("cannot start the {target} subject: {e}"),
            ));
        }
    };
    let result = replay_subject(transcript, role, options, &setup, subject.as_mut());
    drop(subject);
    match result {
        Ok(stats) => Outcome::Pass(stats),
        Err(f) => Outcome::Fail(f),
    }
}

fn is_tls(host: &str) -> bool {
    host.starts_with("https://") || host.starts_with("wss://")
}

/// Whether the subject's side of the recording sends connection pings.
fn subject_pings(t: &Transcript, role: Role) -> bool {
    let dir = subject_dir(t, role);
    t.records.iter().any(|r| match &r.kind {
        RecordKind::Ws {
            dir: d,
            kind: WsKind::Binary,
            payload,
            ..
        } if *d == dir => flatten(payload)
            .is_ok_and(|f| f.messages.iter().any(|m| m.op == Op::Ping && m.mux_id == 0)),
        _ => false,
    })
}

/// The direction of the subject's side's records.
fn subject_dir(t: &Transcript, role: Role) -> Dir {
    if role.ws_side() == t.header.recorder_ws_side {
        Dir::Out
    } else {
        Dir::In
    }
}

/// How to create the subject for `role`: its hosts, token and clocks.
/// Fails if the header's hosts make the subject dial in the server role (or
/// accept in the client role).
pub fn setup(transcript: &Transcript, role: Role, start: Instant) -> Result<SubjectSetup, Failure> {
    let h = &transcript.header;
    let (local, remote) = if role.ws_side() == h.recorder_ws_side {
        (&h.recorder_host, &h.peer_host)
    } else {
        (&h.peer_host, &h.recorder_host)
    };
    let dials = should_dial(local, remote);
    if dials != (role == Role::Client) {
        let does = if dials { "dials" } else { "accepts" };
        return Err(Failure::new(
            &transcript.file_name(),
            Some(1),
            format!(
                "by the header's hosts {local} {does} (the other peer is {remote}), \
                 so it cannot play the WebSocket {role}"
            ),
        ));
    }
    let route = if h.route.is_empty() {
        grid_proto::driver::DEFAULT_ROUTE.to_owned()
    } else {
        h.route.clone()
    };
    let script = Script::infer(transcript);
    // The subject answers the calls of the side it does not play.
    let peer_dir = match subject_dir(transcript, role) {
        Dir::Out => Dir::In,
        Dir::In => Dir::Out,
    };
    let answers = Arc::new(Answers::to_calls_by(&script, peer_dir));
    Ok(SubjectSetup {
        local_host: local.clone(),
        remote_host: remote.clone(),
        token: h.token.clone(),
        start,
        wall: recorded_wall(transcript),
        route,
        ping_interval: None,
        wait: ReplayOptions::default().wait,
        real_time: false,
        script: Arc::new(script),
        answers,
    })
}

/// The wall clock at the first record, from the recorded `Connect` time (or
/// the upgrade's `X-Minio-Time`), so the acceptor's clock-skew check passes.
fn recorded_wall(t: &Transcript) -> Timestamp {
    let at = |wall: Timestamp, t_us: u64| wall - Duration::from_micros(t_us);
    for r in &t.records {
        match &r.kind {
            RecordKind::Ws {
                kind: WsKind::Binary,
                payload,
                ..
            } => {
                if let Ok(m) = Message::decode(payload)
                    && m.op == Op::Connect
                    && let Ok(req) = ConnectRequest::decode(&m.payload)
                {
                    return at(req.time, r.t_us);
                }
            }
            RecordKind::Http { text, .. } => {
                let ns = text.lines().find_map(|l| {
                    l.strip_prefix("X-Minio-Time:")
                        .and_then(|v| v.trim().parse::<i64>().ok())
                });
                if let Some(ns) = ns {
                    return at(Timestamp::from_unix_nanos(ns), r.t_us);
                }
            }
            _ => {}
        }
    }
    Timestamp {
        secs: 1_795_000_000,
        nanos: 0,
    }
}

/// Replays `transcript` against `subject`, created from `setup` (see
/// [`setup`]).
pub fn replay_subject(
    transcript: &Transcript,
    role: Role,
    options: &ReplayOptions,
    setup: &SubjectSetup,
    subject: &mut dyn Subject,
) -> Result<Stats, Failure> {
    let subject_dir = subject_dir(transcript, role);
    let mut r = Replay {
        file: transcript.file_name(),
        subject,
        role,
        subject_dir,
        options: options.clone(),
        start: setup.start,
        wall: setup.wall,
        now: setup.start,
        line: 1,
        script: Arc::clone(&setup.script),
        crossings: Crossings::default(),
        real_time: setup.real_time,
        paced: setup
            .script
            .calls
            .iter()
            .filter(|c| c.opening.deadline_ms != 0 && c.opening.deadline_ms < 60_000)
            .map(|c| (c.line, c.last_line))
            .collect(),
        pace_base: None,
        bundled: HashMap::new(),
        held: VecDeque::new(),
        expected: ExpectedSet::default(),
        calls: HashMap::new(),
        calls_back: HashMap::new(),
        unbound_calls: VecDeque::new(),
        subject_pings: Vec::new(),
        pongs_delivered: 0,
        peer_pings: Vec::new(),
        pongs_sent: 0,
        transport_open: role == Role::Server,
        ping_deadline_ms: setup
            .ping_interval
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        stats: Stats::default(),
    };
    r.load_expected(transcript)?;
    r.crossings = Crossings::find(transcript, subject_dir, &r.expected, &setup.script);
    for record in &transcript.records {
        r.record(record)?;
    }
    r.line = transcript.records.last().map_or(1, |rec| rec.line);
    r.require_sent_before(usize::MAX, r.now)?;
    r.settle()?;
    Ok(r.stats)
}

/// Most timer firings in one advance before the subject counts as spinning.
const MAX_TIMER_STEPS: usize = 100_000;

struct Replay<'a> {
    file: String,
    subject: &'a mut dyn Subject,
    role: Role,
    /// The direction of the subject's side's records.
    subject_dir: Dir,
    options: ReplayOptions,
    start: Instant,
    /// The wall clock at `start`.
    wall: Timestamp,
    now: Instant,
    /// The record being replayed (for messages).
    line: usize,
    /// What the recorded applications did.
    script: Arc<Script>,
    /// Where the other side's messages reach the subject later than
    /// recorded.
    crossings: Crossings,
    /// A real-time subject: see [`Replay::pace`].
    real_time: bool,
    /// The records (first and last line) during which a call with a
    /// deadline is live.
    paced: Vec<(usize, usize)>,
    /// While pacing: the instant that stands for the recording's start.
    pace_base: Option<Instant>,
    /// Messages waiting to be delivered in the frame of the message at the
    /// given place ([`Crossings::bundles`]).
    bundled: HashMap<Place, Vec<Message>>,
    /// Messages of the other side held back, in recorded order: the chain,
    /// the message (recorded mux id) and the expected message it waits for.
    held: VecDeque<(Chain, Message, Option<usize>)>,
    expected: ExpectedSet,
    /// Calls the subject made: recorded mux id → the subject's, and back.
    calls: HashMap<u64, u64>,
    calls_back: HashMap<u64, u64>,
    /// Calls made whose mux id the subject did not report: the opening op
    /// and recorded mux id, bound in order to the subject's next openings.
    unbound_calls: VecDeque<(Op, u64)>,
    /// Times of the subject's connection pings, in order.
    subject_pings: Vec<Timestamp>,
    pongs_delivered: usize,
    /// Times of the connection pings delivered to the subject, in order.
    peer_pings: Vec<Timestamp>,
    pongs_sent: usize,
    transport_open: bool,
    /// The `DeadlineMS` of the subject's connection pings when its ping
    /// interval is not the recorded one.
    ping_deadline_ms: Option<u32>,
    stats: Stats,
}

impl Replay<'_> {
    fn fail(&self, line: Option<usize>, what: impl Into<String>) -> Failure {
        Failure::new(&self.file, line, what)
    }

    fn t_ms(&self) -> String {
        format!(
            "{:.3} ms",
            self.now.saturating_duration_since(self.start).as_secs_f64() * 1000.0
        )
    }

    /// Replays one record at its time.
    fn record(&mut self, record: &Record) -> Result<(), Failure> {
        self.line = record.line;
        let at = self.start + Duration::from_micros(record.t_us);
        self.advance_to(at)?;
        self.pace(record)?;
        match &record.kind {
            RecordKind::Marker { .. } => Ok(()),
            RecordKind::Http { dir, text } => {
                if *dir == self.subject_dir {
                    return Ok(());
                }
                if self.role == Role::Client && text.starts_with("HTTP/") {
                    // For a dialer, the upgrade response opens the transport.
                    let up = text.split_whitespace().nth(1) == Some("101");
                    self.open_transport(up)?;
                } else if self.role == Role::Server && !text.starts_with("HTTP/") {
                    let now = self.now;
                    self.subject
                        .upgrade_requested(now, text)
                        .map_err(|e| self.fail(Some(self.line), e))?;
                }
                Ok(())
            }
            RecordKind::Ws {
                dir, kind, payload, ..
            } => {
                if *dir == self.subject_dir {
                    // The core speaks no WebSocket: only binary frames are
                    // the subject's to send.
                    if *kind == WsKind::Binary {
                        self.subject_frame(payload)?;
                    }
                    return Ok(());
                }
                self.require_sent_before(record.line, at)?;
                match kind {
                    WsKind::Binary => self.deliver(payload),
                    WsKind::Close => {
                        let now = self.now;
                        self.subject.transport_closed(now);
                        self.drain()
                    }
                    WsKind::Text | WsKind::Ping | WsKind::Pong => Ok(()),
                }
            }
        }
    }

    /// Flattens every frame of the subject's side into the expected list.
    fn load_expected(&mut self, t: &Transcript) -> Result<(), Failure> {
        let subject_dir = self.subject_dir;
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
            if *dir != subject_dir {
                continue;
            }
            let flat = flatten(payload).map_err(|e| {
                self.fail(
                    Some(record.line),
                    format!("recorded frame does not decode: {e}"),
                )
            })?;
            let count = flat.messages.len();
            for (index, msg) in flat.messages.into_iter().enumerate() {
                let chain = chain_of(msg.op, Side::Subject, msg.mux_id);
                self.expected.push(Expected {
                    line: record.line,
                    index,
                    count,
                    msg,
                    chain,
                });
            }
        }
        Ok(())
    }

    /// A real-time subject keeps its deadlines on its own clock: while a
    /// call with a deadline is live, the replay keeps to the recording's
    /// pace (never ahead of it), so no deadline runs out before the
    /// recorded call was over, however long the replay waited for something
    /// else in between. Elsewhere it runs as fast as the subject answers.
    fn pace(&mut self, record: &Record) -> Result<(), Failure> {
        if !self.real_time {
            return Ok(());
        }
        let live = self
            .paced
            .iter()
            .any(|&(a, b)| a <= record.line && record.line <= b);
        if !live {
            self.pace_base = None;
            return Ok(());
        }
        let t = Duration::from_micros(record.t_us);
        let base = *self.pace_base.get_or_insert_with(|| Instant::now() - t);
        let due = base + t;
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if self.subject.wait_sent(left) {
                self.drain()?;
            }
        }
    }

    /// Runs the subject's timers due up to `at` and moves the clock there.
    fn advance_to(&mut self, at: Instant) -> Result<(), Failure> {
        for _ in 0..MAX_TIMER_STEPS {
            match self.subject.poll_timeout() {
                Some(t) if t <= at => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.subject.handle_timeout(now);
                    self.drain()?;
                }
                _ => {
                    self.now = self.now.max(at);
                    return Ok(());
                }
            }
        }
        Err(self.fail(
            Some(self.line),
            format!("the subject's timers keep firing at {}", self.t_ms()),
        ))
    }

    /// Dialer: the upgrade response arrived.
    fn open_transport(&mut self, up: bool) -> Result<(), Failure> {
        let now = self.now;
        let wall = self.wall(now);
        self.transport_open = up;
        self.subject
            .transport_opened(now, up.then_some(wall))
            .map_err(|e| self.fail(Some(self.line), e))?;
        self.drain()
    }

    /// After the last record: a real-time subject may still send something
    /// the recording does not have.
    fn settle(&mut self) -> Result<(), Failure> {
        let end = Instant::now() + self.options.settle;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.subject.wait_sent(left) {
                return Ok(());
            }
            self.drain()?;
        }
    }

    fn wall(&self, now: Instant) -> Timestamp {
        self.wall + now.saturating_duration_since(self.start)
    }

    /// A recorded frame of the subject's side: make the calls it shows.
    fn subject_frame(&mut self, frame: &Bytes) -> Result<(), Failure> {
        let flat = flatten(frame).map_err(|e| self.fail(Some(self.line), e))?;
        for msg in &flat.messages {
            if msg.op == Op::Connect && !self.transport_open && self.role == Role::Client {
                // No upgrade response in the recording: the transport is up
                // by the time the dialer sends Connect.
                self.open_transport(true)?;
            }
            let Some(call) = self.app_call(msg)? else {
                continue;
            };
            let now = self.now;
            self.stats.app_calls += 1;
            match self.subject.call(now, &call) {
                Ok(Some(mux)) => self.bind(msg.mux_id, mux),
                Ok(None) if matches!(msg.op, Op::Request | Op::ConnectMux) => {
                    self.unbound_calls.push_back((msg.op, msg.mux_id));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(self
                        .fail(
                            Some(self.line),
                            format!(
                                "the subject's application could not make the recorded call: {e}"
                            ),
                        )
                        .expected(msg));
                }
            }
            self.drain()?;
        }
        Ok(())
    }

    /// The application call behind a message the subject's side sent, if
    /// it is one (answers, pings and cleanups are the subject's own doing).
    fn app_call(&self, msg: &Message) -> Result<Option<AppCall>, Failure> {
        if msg.mux_id == 0 || caller_of(msg.op, Side::Subject) != Some(Side::Subject) {
            return Ok(None);
        }
        let mux = || {
            self.calls.get(&msg.mux_id).copied().ok_or_else(|| {
                self.fail(
                    Some(self.line),
                    format!(
                        "{} on mux {} that the recording never opened",
                        msg.op, msg.mux_id
                    ),
                )
            })
        };
        let recorded = self.script.call_at(self.subject_dir, msg.mux_id, self.line);
        let call = match msg.op {
            Op::Request => AppCall::Request {
                handler: msg.handler,
                subroute: msg.subroute,
                payload: msg.payload.clone(),
                deadline_ms: (msg.deadline_ms != 60_000).then_some(msg.deadline_ms),
            },
            Op::ConnectMux => {
                let deadline_ms = (msg.deadline_ms != 0).then_some(msg.deadline_ms);
                AppCall::OpenStream {
                    handler: msg.handler,
                    subroute: msg.subroute,
                    payload: msg.payload().cloned(),
                    deadline_ms,
                    deadline_slack: recorded.map_or(Duration::ZERO, deadline_slack),
                    capacities: recorded.map_or(Capacities::DEFAULT, |c| c.caller_capacities),
                }
            }
            Op::MuxClientMsg if msg.flags.contains(Flags::EOF) => {
                AppCall::CloseInput { mux: mux()? }
            }
            Op::MuxClientMsg => AppCall::Send {
                mux: mux()?,
                payload: msg.payload.clone(),
            },
            Op::UnblockSrvMux => AppCall::Consume { mux: mux()? },
            // The application cancelled here; a deadline's cancel, and the
            // cleanups after either, are the subject's own doing.
            Op::DisconnectServerMux
                if recorded
                    .and_then(|c| c.cancel)
                    .is_some_and(|c| c.line == self.line && c.seq == msg.seq && !c.by_deadline) =>
            {
                AppCall::Cancel { mux: mux()? }
            }
            _ => return Ok(None),
        };
        Ok(Some(call))
    }

    /// Before a frame of the other side at `line`: everything the subject's
    /// side sent before it must have been sent.
    fn require_sent_before(&mut self, line: usize, at: Instant) -> Result<(), Failure> {
        let limit = at + self.options.grace;
        for _ in 0..MAX_TIMER_STEPS {
            let Some(missing) = self.expected.first_unsent() else {
                return Ok(());
            };
            if missing.line >= line {
                return Ok(());
            }
            let missing = missing.clone();
            match self.subject.poll_timeout() {
                Some(t) if t <= limit => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.subject.handle_timeout(now);
                    self.drain()?;
                }
                _ if self.subject.wait_sent(self.options.wait) => self.drain()?,
                _ => {
                    let when = if line == usize::MAX {
                        "by the end of the transcript".to_owned()
                    } else {
                        format!("before line {line}")
                    };
                    return Err(self
                        .fail(
                            Some(missing.line),
                            format!(
                                "the subject did not send this message{} ({}) {when} (virtual time {})",
                                missing.place(),
                                missing.chain,
                                self.t_ms()
                            ),
                        )
                        .expected(&missing.msg));
                }
            }
        }
        Err(self.fail(
            Some(self.line),
            format!("the subject's timers keep firing at {}", self.t_ms()),
        ))
    }

    /// Whether `msg` is the subject's cancellation of a stream whose
    /// recorded callee ended it at its deadline first: which of the two
    /// deadlines fires first is timing (see [`crate::expected`]).
    fn deadline_race(&self, chain: &Chain, msg: &Message) -> bool {
        let Chain::Call {
            caller: Side::Subject,
            mux,
        } = *chain
        else {
            return false;
        };
        msg.op == Op::DisconnectServerMux
            && self
                .script
                .call_at(self.subject_dir, mux, usize::MAX)
                .is_some_and(|c| c.deadline_race)
    }

    fn bind(&mut self, recorded: u64, mine: u64) {
        self.calls.insert(recorded, mine);
        self.calls_back.insert(mine, recorded);
    }

    /// The recorded mux id of a call the subject made; a call whose id the
    /// subject did not report is bound by its opening message.
    fn recorded_call(&mut self, msg: &Message) -> Option<u64> {
        if let Some(&recorded) = self.calls_back.get(&msg.mux_id) {
            return Some(recorded);
        }
        let &(op, recorded) = self.unbound_calls.front()?;
        if op != msg.op {
            return None;
        }
        self.unbound_calls.pop_front();
        self.bind(recorded, msg.mux_id);
        Some(recorded)
    }

    /// Delivers a frame of the other side, mux ids mapped to the subject's.
    fn deliver(&mut self, frame: &Bytes) -> Result<(), Failure> {
        let flat = flatten(frame).map_err(|e| {
            self.fail(
                Some(self.line),
                format!("recorded frame does not decode: {e}"),
            )
        })?;
        let mut now_due = Vec::with_capacity(flat.messages.len());
        let mut changed = false;
        for (index, msg) in flat.messages.into_iter().enumerate() {
            let place = (self.line, index);
            if let Some(target) = self.crossings.bundles.get(&place) {
                self.bundled.entry(*target).or_default().push(msg);
                changed = true;
                continue;
            }
            let mut batch = self.bundled.remove(&place).unwrap_or_default();
            changed |= !batch.is_empty();
            let until = self.crossings.holds.get(&place).copied();
            batch.push(msg);
            for msg in batch {
                let chain = chain_of(msg.op, Side::Peer, msg.mux_id);
                let behind = self.held.iter().any(|(c, ..)| *c == chain);
                if behind || until.is_some_and(|i| !self.expected.is_sent(i)) {
                    self.held.push_back((chain, msg, until));
                    changed = true;
                } else {
                    now_due.push(msg);
                }
            }
        }
        if now_due.is_empty() {
            return Ok(());
        }
        for msg in &mut now_due {
            changed |= self.map_to_subject(msg);
        }
        let frame = if changed {
            pack(&now_due).unwrap_or_default()
        } else {
            frame.clone()
        };
        self.receive(frame)?;
        self.drain()
    }

    fn receive(&mut self, frame: Bytes) -> Result<(), Failure> {
        let now = self.now;
        self.stats.frames_delivered += 1;
        self.subject
            .receive(now, frame)
            .map_err(|e| self.fail(Some(self.line), e))
    }

    /// Delivers the first held message whose wait is over (and that no
    /// earlier held message of its chain is ahead of); returns whether
    /// there was one.
    fn release_held(&mut self) -> Result<bool, Failure> {
        let ready = self
            .held
            .iter()
            .enumerate()
            .position(|(pos, (chain, _, until))| {
                until.is_none_or(|i| self.expected.is_sent(i))
                    && !self.held.iter().take(pos).any(|(c, ..)| c == chain)
            });
        let Some(pos) = ready else {
            return Ok(false);
        };
        let Some((_, mut msg, _)) = self.held.remove(pos) else {
            return Ok(false);
        };
        self.map_to_subject(&mut msg);
        let frame = pack(std::slice::from_ref(&msg)).unwrap_or_default();
        self.receive(frame)?;
        Ok(true)
    }

    /// Rewrites a message of the other side for the subject; returns whether
    /// anything changed.
    fn map_to_subject(&mut self, msg: &mut Message) -> bool {
        let chain = chain_of(msg.op, Side::Peer, msg.mux_id);
        match chain {
            Chain::Call {
                caller: Side::Peer,
                mux,
            } => {
                msg.mux_id = mux.wrapping_add(self.options.peer_mux_offset);
                self.options.peer_mux_offset != 0
            }
            Chain::Call {
                caller: Side::Subject,
                mux,
            } => match self.calls.get(&mux) {
                Some(&mine) if mine != mux => {
                    msg.mux_id = mine;
                    true
                }
                _ => false,
            },
            Chain::Pings {
                initiator: Side::Subject,
            } if msg.op == Op::Pong => {
                // Answer the subject's own ping time, as a live peer would.
                let Some(&t) = self.subject_pings.get(self.pongs_delivered) else {
                    return false;
                };
                self.pongs_delivered += 1;
                match PongPayload::decode(&msg.payload) {
                    Ok(mut pong) if pong.t != t => {
                        pong.t = t;
                        msg.payload = pong.to_bytes();
                        true
                    }
                    _ => false,
                }
            }
            Chain::Pings {
                initiator: Side::Peer,
            } if msg.op == Op::Ping => {
                if let Ok(p) = PingPayload::decode(&msg.payload) {
                    self.peer_pings.push(p.t);
                }
                false
            }
            _ => false,
        }
    }

    /// Takes every frame the subject sent and matches its messages.
    /// (And delivers the held messages whose wait it ends.)
    fn drain(&mut self) -> Result<(), Failure> {
        loop {
            while let Some(frame) = self.subject.poll_sent() {
                let flat = flatten(&frame).map_err(|e| {
                    self.fail(
                        Some(self.line),
                        format!(
                            "the subject sent a bad frame: {e}: 0x{}",
                            hex::encode(&frame)
                        ),
                    )
                })?;
                for msg in &flat.messages {
                    self.match_sent(msg, flat.merged)?;
                }
            }
            if !self.release_held()? {
                return Ok(());
            }
        }
    }

    /// Matches one message the subject sent with the next one of its chain.
    fn match_sent(&mut self, msg: &Message, merged: bool) -> Result<(), Failure> {
        let recorded_mux = if msg.mux_id == 0 {
            Some(0)
        } else {
            match caller_of(msg.op, Side::Subject) {
                Some(Side::Subject) => self.recorded_call(msg),
                Some(Side::Peer) => Some(msg.mux_id.wrapping_sub(self.options.peer_mux_offset)),
                None => Some(msg.mux_id),
            }
        };
        let Some(recorded_mux) = recorded_mux else {
            return Err(self
                .fail(
                    Some(self.line),
                    format!(
                        "the subject sent a {} on mux {}, which no recorded call maps to (virtual time {})",
                        msg.op,
                        msg.mux_id,
                        self.t_ms()
                    ),
                )
                .got(msg));
        };
        let chain = chain_of(msg.op, Side::Subject, recorded_mux);
        // With a shortened interval the subject may ping more often than
        // the recording did: only the recorded pings are compared.
        let shortened_ping =
            self.ping_deadline_ms.is_some() && msg.op == Op::Ping && msg.mux_id == 0;
        if shortened_ping && self.expected.chain_done(&chain) {
            return Ok(());
        }
        let Some((i, want)) = self.expected.take(&chain, msg.op) else {
            if self.deadline_race(&chain, msg) {
                return Ok(());
            }
            return Err(self
                .fail(
                    Some(self.line),
                    format!(
                        "the subject sent a message the recording does not have: nothing more on {chain} (virtual time {})",
                        self.t_ms()
                    ),
                )
                .got(msg));
        };
        let e = self.expected.get(i);
        let mut want = want;
        if let Some(ms) = self.ping_deadline_ms
            && msg.op == Op::Ping
            && msg.mux_id == 0
        {
            want.deadline_ms = ms;
        }
        let mut diffs = compare(&want, msg);
        if merged && matches!(msg.op, Op::Connect | Op::ConnectResponse) {
            diffs.push(Difference {
                field: "framing",
                expected: "a frame of its own".into(),
                got: "a merged frame".into(),
            });
        }
        if msg.op == Op::Pong && msg.mux_id == 0 {
            // The time varies between runs, but a pong must echo its ping's.
            let ping = self.peer_pings.get(self.pongs_sent);
            if let (Some(ping), Ok(pong)) = (ping, PongPayload::decode(&msg.payload))
                && pong.t != *ping
            {
                diffs.push(Difference {
                    field: "payload.t",
                    expected: format!("{ping:?} (the ping's)"),
                    got: format!("{:?}", pong.t),
                });
            }
        }
        if !diffs.is_empty() {
            let mux_note = if recorded_mux != msg.mux_id {
                format!(
                    " (recorded mux {recorded_mux} is the subject's {})",
                    msg.mux_id
                )
            } else {
                String::new()
            };
            return Err(self
                .fail(
                    Some(e.line),
                    format!(
                        "{} on {}{}{mux_note}: {}",
                        e.msg.op,
                        e.chain,
                        e.place(),
                        describe(&diffs)
                    ),
                )
                .expected(&want)
                .got(msg));
        }
        self.stats.messages_matched += 1;
        if msg.op == Op::Pong && msg.mux_id == 0 {
            self.pongs_sent += 1;
        }
        if msg.op == Op::Ping
            && msg.mux_id == 0
            && let Ok(p) = PingPayload::decode(&msg.payload)
        {
            self.subject_pings.push(p.t);
        }
        Ok(())
    }
}

/// How far past its `DeadlineMS` a stream the subject opens should keep
/// its local deadline (less than 1 ms, so `DeadlineMS` stays as recorded):
/// where the recorded caller's deadline fired (its cancel), or as late as
/// possible when the callee's deadline ended the stream first.
fn deadline_slack(call: &RecordedCall) -> Duration {
    const MAX: Duration = Duration::from_micros(999);
    let due = call.t_us + u64::from(call.opening.deadline_ms) * 1000;
    match call.cancel {
        Some(c) if c.by_deadline => Duration::from_micros(c.t_us.saturating_sub(due)).min(MAX),
        _ => MAX,
    }
}
