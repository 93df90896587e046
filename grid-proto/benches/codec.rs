//! Codec benchmarks (filled in with the codec test suite).
fn main() {}
