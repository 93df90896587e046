//! The connection state machine, both roles, fed arbitrary scripts of
//! calls, stream traffic, cancellations, time jumps, disconnects and
//! garbage or mutated frames; every invariant is checked after each step
//! (see `grid_proto::chaos`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    grid_proto::chaos::run(data);
});
