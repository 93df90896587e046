//! Conformance suite for `grid`.
//!
//! Today the byte-level checks against the recorded Go transcripts live in
//! `grid-proto`'s own tests (`grid-proto/tests/transcripts.rs`); the replay
//! harness for the core and the drivers will live here.
