//! What the connection task tells the transcript recorder. With the
//! `recorder` feature the recording lives in `recorder.rs`; without it a
//! recording cannot exist, and the task's hooks compile to nothing.

/// The fields of a recording's header line.
#[cfg_attr(not(feature = "recorder"), allow(dead_code))]
pub(crate) struct Header<'a> {
    pub(crate) local: &'a str,
    pub(crate) remote: &'a str,
    pub(crate) dialer: bool,
    pub(crate) token: &'a str,
    pub(crate) route: &'a str,
}

/// Which way a recorded frame went, from this node's side.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "recorder"), allow(dead_code))]
pub(crate) enum Dir {
    In,
    Out,
}

#[cfg(feature = "recorder")]
pub(crate) use crate::driver::recorder::Recording;

#[cfg(not(feature = "recorder"))]
pub(crate) use off::Recording;

#[cfg(not(feature = "recorder"))]
mod off {
    use std::time::Instant;

    use tungstenite::Message as WsMessage;

    use super::{Dir, Header};
    use crate::driver::options::Options;

    /// No recording: the type has no values.
    pub(crate) enum Recording {}

    impl Recording {
        pub(crate) fn start(_: &Options, _: &Header<'_>, _: Instant) -> Option<Recording> {
            None
        }

        pub(crate) fn enabled(_: &Options) -> bool {
            false
        }

        pub(crate) fn http(&mut self, _: Instant, _: Dir, _: &str) -> bool {
            match *self {}
        }

        pub(crate) fn frame(&mut self, _: Instant, _: Dir, _: &str, _: &[u8]) -> bool {
            match *self {}
        }

        pub(crate) fn ws(&mut self, _: Instant, _: Dir, _: &WsMessage) -> bool {
            match *self {}
        }
    }
}
