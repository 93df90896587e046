//! Conformance suite for `grid`: replays recorded connections (Go's in
//! `conformance/transcripts`, or any capture: a recorder's, a tap's)
//! against our implementation, in both roles: the sans-IO core on a virtual
//! clock, and the tokio and smol drivers on real time over loopback TCP.
//! The subject's application is scripted from the recording, so a capture
//! of any handlers replays.
//!
//! The pieces, in the order data flows through them:
//! - [`transcript`]: the recorded format (header, HTTP upgrade, WebSocket
//!   frames, scenario markers), read from `.jsonl`/`.jsonl.gz` files;
//! - [`frame`]: frames to messages (`OpMerged` grouping varies between runs);
//! - [`chain`]: which messages must keep their relative order;
//! - [`compare`]: the semantic comparison of one recorded message with one
//!   the implementation sent (and `expected`: which recorded message that
//!   is, with the freedoms Go's timing allows);
//! - [`interleave`]: recordings rewritten as Go may also have sent them;
//! - [`script`]: what the recorded applications did (calls made, answers
//!   given), and [`scripted`]: the subject's application playing it;
//! - [`subject`]: the implementation under test behind the [`Subject`]
//!   trait ([`CoreSubject`] for the sans-IO core, [`DriverSubject`] for a
//!   driver's manager, whose peer is a plain WebSocket endpoint);
//! - [`replay`](mod@replay): the replay itself;
//! - [`reference`](mod@reference): the transcripts' handler table on a driver's manager
//!   ([`register_reference_handlers`]), with the typed handlers' descriptors;
//! - [`decode`]: transcripts (and live traffic) as one line per message;
//! - [`node`]: a driver's manager with that table, as the CLI's interop
//!   peer (`serve`, `call`) runs it;
//! - [`scenarios`]: the README's scenarios, run by a caller against such a
//!   peer (Go's or ours);
//! - [`tap`]: a forwarder between two peers that records (and prints) the
//!   traffic, for captures of live clusters.
//!
//! ```no_run
//! use std::path::Path;
//! use conformance::{Outcome, ReplayOptions, Role, Target, load_path, replay};
//!
//! for t in load_path(Path::new("conformance/transcripts"))? {
//!     for role in Role::BOTH {
//!         match replay(&t, Target::Core, role, &ReplayOptions::default()) {
//!             Outcome::Pass(_) => println!("PASS {} core {role}", t.name()),
//!             Outcome::Skip(why) => println!("SKIP {} core {role} ({why})", t.name()),
//!             Outcome::Fail(f) => println!("FAIL {} core {role}: {f}", t.name()),
//!         }
//!     }
//! }
//! # Ok::<(), conformance::LoadError>(())
//! ```

pub mod chain;
pub mod compare;
mod core_subject;
pub mod crossing;
pub mod decode;
mod driver_subject;
pub mod expected;
mod failure;
pub mod frame;
pub mod interleave;
mod msgpack;
pub mod node;
pub mod reference;
pub mod replay;
pub mod scenarios;
pub mod script;
pub mod scripted;
pub mod stderr_log;
pub mod subject;
pub mod tap;
pub mod transcript;
mod ws_peer;

pub use core_subject::CoreSubject;
pub use driver_subject::DriverSubject;
pub use failure::Failure;
pub use reference::register_reference_handlers;
pub use replay::{Outcome, ReplayOptions, Role, Stats, replay, replay_subject};
pub use subject::{AppCall, Subject, SubjectSetup, Target};
pub use transcript::{LoadError, Transcript, env_dirs, load_path};
