//! The driver scenario suite: real managers on loopback WebSockets, written
//! once and run on every runtime combination:
//! - `on_tokio`: two grid-tokio nodes;
//! - `on_smol`: two grid-smol nodes;
//! - `mixed_tokio_dials`: a tokio node dials a smol node;
//! - `mixed_smol_dials`: a smol node dials a tokio node.
//!
//! Every scenario calls both ways (the dial rule picks which node dials;
//! calls go either way over the one connection). Every wait is bounded, so
//! a bug fails a test instead of hanging it. Filter by runtime
//! (`cargo test -p conformance --test drivers on_smol::`) or by scenario
//! (`... --test drivers reconnect`).

#[path = "drivers/flow.rs"]
mod flow;
#[path = "drivers/harness.rs"]
mod harness;
#[path = "drivers/isolation.rs"]
mod isolation;
#[path = "drivers/lifecycle.rs"]
mod lifecycle;
#[path = "drivers/reference.rs"]
mod reference;
#[path = "drivers/typed.rs"]
mod typed;

macro_rules! scenarios {
    ($($module:ident :: $name:ident),* $(,)?) => {
        scenarios!(@setup on_tokio, Tokio, $($module::$name),*);
        scenarios!(@setup on_smol, Smol, $($module::$name),*);
        scenarios!(@setup mixed_tokio_dials, MixedTokioDials, $($module::$name),*);
        scenarios!(@setup mixed_smol_dials, MixedSmolDials, $($module::$name),*);
    };
    (@setup $setup_mod:ident, $setup:ident, $($module:ident :: $name:ident),*) => {
        mod $setup_mod {
            $(
                #[test]
                fn $name() {
                    crate::harness::run(
                        crate::harness::Setup::$setup,
                        crate::$module::$name,
                    );
                }
            )*
        }
    };
}

scenarios!(
    // The transcripts' handler table.
    reference::echo,
    reference::echo_empty,
    reference::echo_parallel,
    reference::remote_err,
    reference::unknown_handler,
    reference::stream_echo,
    reference::stream_count,
    reference::stream_err,
    reference::stream_cancel,
    reference::sub_single,
    reference::sub_stream,
    reference::typed_mss,
    // Typed handlers, handler contexts, stream halves.
    typed::typed_scenarios,
    typed::handler_context,
    typed::cancellation,
    typed::send_errors,
    typed::sinks_and_streams,
    typed::question_mark,
    typed::catalogue_stream,
    // Calls under stress.
    flow::request_cancel,
    flow::request_deadline,
    flow::stream_deadline,
    flow::large_payloads,
    flow::many_streams,
    flow::backpressure,
    flow::input_backpressure,
    flow::raw_handlers,
    // Connection lifecycle.
    lifecycle::auth_rejected,
    lifecycle::handshake_rejections,
    lifecycle::reconnect,
    lifecycle::graceful_shutdown,
    // Panics in user code, and in the connection task.
    isolation::handler_panics,
    isolation::auth_token_panics,
    isolation::validate_token_panics,
    isolation::recorder_panics,
);

/// A connection task that panics (the runtime's `spawn` is rigged): one
/// runtime per test, both nodes on it.
mod task_panic {
    #[test]
    fn on_tokio() {
        crate::harness::run(crate::harness::Setup::Tokio, crate::isolation::task_panic);
    }

    #[test]
    fn on_smol() {
        crate::harness::run(crate::harness::Setup::Smol, crate::isolation::task_panic);
    }
}
