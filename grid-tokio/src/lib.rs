//! The tokio driver for `grid`.
//!
//! Not written yet: today this crate only re-exports the sans-IO protocol
//! core, [`grid_proto`]. The driver (manager, connections, handlers over
//! tokio-tungstenite) is tracked as its own issue.

pub use grid_proto as proto;
