//! Why a replay failed, located in the transcript.

use std::fmt;

use grid_proto::Message;

use crate::compare::render;

/// The first problem a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The transcript file name.
    pub file: String,
    /// The 1-based line of the record concerned, if there is one.
    pub line: Option<usize>,
    /// What went wrong, in one line.
    pub what: String,
    /// The recorded message, decoded ([`render`]), when relevant.
    pub expected: Option<String>,
    /// The subject's message, decoded ([`render`]), when relevant.
    pub got: Option<String>,
}

impl Failure {
    /// A failure at `line` of `file`.
    pub fn new(file: &str, line: Option<usize>, what: impl Into<String>) -> Failure {
        Failure {
            file: file.to_owned(),
            line,
            what: what.into(),
            expected: None,
            got: None,
        }
    }

    /// Adds the recorded message.
    #[must_use]
    pub fn expected(mut self, expected: &Message) -> Failure {
        self.expected = Some(render(expected));
        self
    }

    /// Adds the subject's message.
    #[must_use]
    pub fn got(mut self, got: &Message) -> Failure {
        self.got = Some(render(got));
        self
    }
}

impl fmt::Display for Failure {
    /// `file:line: what`, then the expected and actual messages on
    /// indented lines of their own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.what)?,
            None => write!(f, "{}: {}", self.file, self.what)?,
        }
        if let Some(e) = &self.expected {
            write!(f, "\n    expected: {e}")?;
        }
        if let Some(g) = &self.got {
            write!(f, "\n    got:      {g}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}
