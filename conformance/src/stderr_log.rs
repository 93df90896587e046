//! A minimal `tracing` subscriber for the command-line tools: events at
//! INFO and above (or WARN and above) as one line each on stderr, so an
//! operator sees why a node refuses a peer or cannot connect. Spans are
//! not shown.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Prints events at `level` and above to stderr.
#[derive(Debug)]
pub struct StderrLog {
    level: Level,
    next_span: AtomicU64,
}

impl StderrLog {
    /// Installs the logger as the process's default subscriber (once; a
    /// second call does nothing).
    pub fn install(level: Level) {
        let _ = tracing::subscriber::set_global_default(StderrLog {
            level,
            next_span: AtomicU64::new(1),
        });
    }
}

/// Collects an event's message and fields as `message key=value ...`.
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Spans carry no output here; events below the level are dropped.
        metadata.is_span() || *metadata.level() <= self.level
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        eprintln!(
            "{:>5} {}: {}",
            event.metadata().level(),
            event.metadata().target(),
            line.0
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
