//! The sans-IO core as a [`Subject`]: one [`Connection`] whose application
//! answers as the recording says ([`ScriptedApp`]), driven synchronously, so
//! every output is ready as soon as the input that caused it was handled.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use grid_proto::handshake::{self, check_connect};
use grid_proto::sim::App;
use grid_proto::{CallId, Config, Connection, DialFailure, Event, InstanceId, State, Timestamp};

use crate::scripted::ScriptedApp;
use crate::subject::{AppCall, Subject, SubjectSetup};

/// Seed of the subject's connection (instance id, jitter): fixed, so a
/// replay is deterministic.
const SEED: u64 = 0x6772_6964;

/// A [`Connection`] with the recorded application.
#[derive(Debug)]
pub struct CoreSubject {
    conn: Connection,
    app: ScriptedApp,
    setup: SubjectSetup,
    /// Acceptor: whether the first frame (the `Connect`) has been handled.
    handshake_seen: bool,
    /// Frames sent outside the connection (a handshake rejection).
    extra: VecDeque<Bytes>,
    /// Stream messages delivered and not yet consumed, per call.
    unconsumed: HashMap<u64, u32>,
    /// Every event the connection emitted, in order.
    pub events: Vec<Event>,
}

impl CoreSubject {
    /// A connection from `setup.local_host` to `setup.remote_host`.
    pub fn new(setup: &SubjectSetup) -> CoreSubject {
        let mut config = Config::new(setup.local_host.clone(), setup.remote_host.clone());
        config.seed = SEED;
        let conn = Connection::new(config, InstanceId::from_seed(SEED), setup.start, setup.wall);
        let mut s = CoreSubject {
            conn,
            app: ScriptedApp::new(std::sync::Arc::clone(&setup.answers)),
            setup: setup.clone(),
            handshake_seen: false,
            extra: VecDeque::new(),
            unconsumed: HashMap::new(),
            events: Vec::new(),
        };
        s.pump(setup.start);
        s
    }

    /// The connection under test.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Hands every pending event to the application (which may issue
    /// commands, and so more events) until there are none.
    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.conn.poll_event() {
            // `Dial` needs nothing: the replay opens the transport when the
            // transcript says so.
            if let Event::StreamMessage { id, .. } = &event {
                *self.unconsumed.entry(id.0).or_default() += 1;
            }
            self.app.on_event(&mut self.conn, now, &event);
            self.events.push(event);
        }
    }

    fn wall(&self, now: Instant) -> Timestamp {
        self.setup.wall + now.saturating_duration_since(self.setup.start)
    }

    /// The acceptor's side of a new transport: check the `Connect`, then
    /// accept it or send the rejection.
    fn accept(&mut self, now: Instant, frame: &Bytes) {
        let wall = self.wall(now);
        let remote = self.setup.remote_host.clone();
        let token = self.setup.token.clone();
        let result = check_connect(
            frame,
            &self.setup.local_host,
            wall,
            |h| h == remote,
            |t| {
                if t == token {
                    Ok(())
                } else {
                    Err("invalid token".into())
                }
            },
        );
        match result {
            Ok(req) => self.conn.accept_handshake(now, wall, &req),
            Err(e) => self
                .extra
                .push_back(handshake::rejection_frame(self.conn.instance_id(), &e)),
        }
    }
}

impl Subject for CoreSubject {
    fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.pump(now);
    }

    fn transport_opened(&mut self, now: Instant, wall: Option<Timestamp>) -> Result<(), String> {
        match wall {
            Some(wall) => self.conn.start_handshake(now, wall, &self.setup.token),
            None => self
                .conn
                .handle_dial_failed(now, DialFailure::Unreachable("no transport".into())),
        }
        self.pump(now);
        Ok(())
    }

    fn transport_closed(&mut self, now: Instant) {
        self.conn.handle_transport_lost(now);
        self.pump(now);
    }

    fn receive(&mut self, now: Instant, frame: Bytes) -> Result<(), String> {
        if !self.conn.is_dialer() && !self.handshake_seen {
            self.handshake_seen = true;
            self.accept(now, &frame);
        } else {
            self.conn.handle_frame(now, frame);
        }
        self.pump(now);
        Ok(())
    }

    fn call(&mut self, now: Instant, call: &AppCall) -> Result<Option<u64>, String> {
        if self.conn.state() != State::Connected {
            return Err(format!("not connected ({:?})", self.conn.state()));
        }
        let result = match call {
            AppCall::Request {
                handler,
                subroute,
                payload,
                deadline_ms,
            } => {
                let deadline = deadline_ms.map(|ms| now + ms_duration(ms));
                self.conn
                    .request(now, *handler, *subroute, payload.clone(), deadline)
                    .map(|id| Some(id.0))
                    .map_err(|e| format!("request failed: {e}"))
            }
            AppCall::OpenStream {
                handler,
                subroute,
                payload,
                deadline_ms,
                deadline_slack,
                capacities,
            } => {
                let deadline = deadline_ms.map(|ms| now + ms_duration(ms) + *deadline_slack);
                self.conn
                    .open_stream(
                        now,
                        *handler,
                        *subroute,
                        payload.clone(),
                        deadline,
                        Some(*capacities),
                    )
                    .map(|id| Some(id.0))
                    .map_err(|e| format!("open_stream failed: {e}"))
            }
            AppCall::Send { mux, payload } => self
                .conn
                .stream_send(now, CallId(*mux), payload.clone())
                .map(|()| None)
                .map_err(|e| format!("stream_send on mux {mux} failed: {e}")),
            AppCall::CloseInput { mux } => self
                .conn
                .stream_close(now, CallId(*mux))
                .map(|()| None)
                .map_err(|e| format!("stream_close on mux {mux} failed: {e}")),
            AppCall::Consume { mux } => match self.unconsumed.get_mut(mux) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    self.conn.stream_consumed(now, CallId(*mux));
                    Ok(None)
                }
                _ => Err(format!(
                    "stream_consumed on mux {mux}: no stream message was delivered to consume"
                )),
            },
            AppCall::Cancel { mux } => {
                if self.conn.cancel(now, CallId(*mux)) {
                    Ok(None)
                } else {
                    Err(format!("cancel on mux {mux}: the call is not live"))
                }
            }
        };
        self.pump(now);
        result
    }

    fn poll_sent(&mut self) -> Option<Bytes> {
        self.extra.pop_front().or_else(|| self.conn.poll_transmit())
    }
}

fn ms_duration(ms: u32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(ms))
}
