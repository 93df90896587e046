//! The application a replay gives the subject: it answers the other side's
//! calls exactly as the recording says ([`Answers`]), whatever the handler
//! id or subroute. The core gets it as a [`ScriptedApp`] on its events; a
//! driver's manager as raw handlers ([`register_scripted_handlers`]).
//!
//! A stream's handler performs the recorded steps in order: it takes an
//! input where the callee sent a credit, sends an output or ends where it
//! did, but never before the inputs (and end of input) recorded before that
//! step have arrived. A call the recording leaves unanswered is never
//! answered: its deadline, its caller or the connection ends it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use grid_proto::driver::{Manager, RegisterError, RemoteError, Runtime, StreamCall};
use grid_proto::sim::App;
use grid_proto::{Connection, Event, IncomingId, SendError};

use crate::script::{Action, Answer, Answers, RouteKey, StreamAnswer};

/// A stream being answered by the core.
#[derive(Debug)]
struct Running {
    answer: StreamAnswer,
    next: usize,
    inputs: u32,
    eof: bool,
    consumed: u32,
    /// A send found no credit: wait for `IncomingCredit`.
    blocked: bool,
}

/// The scripted application on the sans-IO core.
#[derive(Debug)]
pub struct ScriptedApp {
    answers: Arc<Answers>,
    streams: HashMap<IncomingId, Running>,
}

impl ScriptedApp {
    /// Answers from `answers`.
    pub fn new(answers: Arc<Answers>) -> ScriptedApp {
        ScriptedApp {
            answers,
            streams: HashMap::new(),
        }
    }

    /// Runs the steps of stream `id` as far as what arrived allows.
    fn advance(&mut self, conn: &mut Connection, now: Instant, id: IncomingId) {
        let Some(r) = self.streams.get_mut(&id) else {
            return;
        };
        while let Some(step) = r.answer.steps.get(r.next) {
            if let Action::Consume = step.action {
                if r.consumed >= r.inputs {
                    return;
                }
                conn.incoming_consumed(now, id);
                r.consumed += 1;
                r.next += 1;
                continue;
            }
            if r.inputs < step.after_inputs || (step.after_eof && !r.eof) || r.blocked {
                return;
            }
            match &step.action {
                Action::Send(payload) => {
                    let payload = payload.clone().unwrap_or_default();
                    match conn.incoming_send(now, id, payload) {
                        Ok(()) => r.next += 1,
                        Err(SendError::NoCredit) => {
                            r.blocked = true;
                            return;
                        }
                        // The stream is over (cancelled, failed): nothing more.
                        Err(_) => return,
                    }
                }
                Action::Finish(result) => {
                    conn.incoming_finish(now, id, result.clone());
                    self.streams.remove(&id);
                    return;
                }
                Action::Consume => unreachable!("handled above"),
            }
        }
    }
}

impl App for ScriptedApp {
    fn on_event(&mut self, conn: &mut Connection, now: Instant, event: &Event) {
        match event {
            Event::IncomingRequest {
                id,
                handler,
                subroute,
                ..
            } => match self.answers.next(RouteKey::of(false, *handler, *subroute)) {
                Some(Answer::Response(result)) => {
                    conn.respond(now, *id, result);
                }
                Some(Answer::Refused(text)) => {
                    conn.reject_incoming(now, *id, &text);
                }
                // Unanswered: its deadline or its caller ends it.
                _ => {}
            },
            // Cancelled in the same frame: a driver's handler would never
            // run, so no answer is taken.
            Event::IncomingStream { id, .. } if !conn.is_incoming_live(*id) => {}
            Event::IncomingStream {
                id,
                handler,
                subroute,
                ..
            } => match self.answers.next(RouteKey::of(true, *handler, *subroute)) {
                Some(Answer::Stream(answer)) => {
                    conn.accept_stream(now, *id, answer.capacities);
                    self.streams.insert(
                        *id,
                        Running {
                            answer,
                            next: 0,
                            inputs: 0,
                            eof: false,
                            consumed: 0,
                            blocked: false,
                        },
                    );
                    self.advance(conn, now, *id);
                }
                Some(Answer::Refused(text)) => {
                    conn.reject_incoming(now, *id, &text);
                }
                _ => {}
            },
            Event::IncomingMessage { id, .. } => {
                if let Some(r) = self.streams.get_mut(id) {
                    r.inputs += 1;
                }
                self.advance(conn, now, *id);
            }
            Event::IncomingInputEnd { id } => {
                if let Some(r) = self.streams.get_mut(id) {
                    r.eof = true;
                }
                self.advance(conn, now, *id);
            }
            Event::IncomingCredit { id } => {
                if let Some(r) = self.streams.get_mut(id) {
                    r.blocked = false;
                }
                self.advance(conn, now, *id);
            }
            Event::IncomingCancelled { id, .. } => {
                self.streams.remove(id);
            }
            _ => {}
        }
    }
}

/// Registers, on a driver's manager, a handler for every route the
/// recording serves, each answering from `answers`. Routes the recording
/// only refuses stay unregistered, so the manager refuses them itself.
pub fn register_scripted_handlers<R: Runtime>(
    manager: &Manager<R>,
    answers: &Arc<Answers>,
) -> Result<(), RegisterError> {
    for (key, handler) in answers.served_routes() {
        let answers = Arc::clone(answers);
        if key.stream {
            let caps = answers.stream_capacities(key);
            manager.register_stream_raw(handler, key.subroute, caps, move |call| {
                let answer = answers.next(key);
                run_stream(answer, call)
            })?;
        } else {
            manager.register_single_raw(handler, key.subroute, move |_payload| {
                let answer = answers.next(key);
                async move {
                    match answer {
                        Some(Answer::Response(result)) => result.map_err(RemoteError),
                        // A refusal on a route that is served elsewhere
                        // cannot be given by a handler: answered with its
                        // text, which the comparison then reports.
                        Some(Answer::Refused(text)) => Err(RemoteError(text)),
                        _ => std::future::pending().await,
                    }
                }
            })?;
        }
    }
    Ok(())
}

/// A stream handler playing `answer`.
async fn run_stream(answer: Option<Answer>, call: StreamCall) -> Result<(), RemoteError> {
    let Some(Answer::Stream(answer)) = answer else {
        return std::future::pending().await;
    };
    let mut input = call.input;
    let mut output = call.output;
    let mut consumed = 0u32;
    for step in answer.steps {
        if let Action::Consume = step.action {
            match input.as_mut() {
                Some(input) => match input.recv().await {
                    Some(Ok(_)) => consumed += 1,
                    // The input ended first: the recorded credit cannot be.
                    _ => return std::future::pending().await,
                },
                None => return std::future::pending().await,
            }
            continue;
        }
        if let Some(input) = input.as_mut() {
            let wanted = if step.after_eof {
                usize::MAX
            } else {
                step.after_inputs.saturating_sub(consumed) as usize
            };
            if wanted > 0 {
                input.wait_pending(wanted).await;
            }
        }
        match step.action {
            Action::Send(payload) => {
                if output.send(payload.unwrap_or_default()).await.is_err() {
                    // The stream is over: its end is not ours to send.
                    return std::future::pending().await;
                }
            }
            Action::Finish(result) => return result.map_err(RemoteError),
            Action::Consume => unreachable!("handled above"),
        }
    }
    std::future::pending().await
}
