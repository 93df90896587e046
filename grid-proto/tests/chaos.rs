//! Seeded property test of the state machine: random scripts of calls,
//! stream traffic, cancellations, time jumps, disconnects and hostile frames
//! (see `grid_proto::chaos`), the CI version of the `connection` fuzz
//! target. `GRID_CHAOS_CASES` sets the number of cases (default 2000).

use grid_proto::chaos;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

#[test]
fn random_scripts_keep_every_invariant() {
    let cases = std::env::var("GRID_CHAOS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    // A fixed seed: the same cases on every run, so CI is reproducible.
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..600), |data| {
            chaos::run(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn honest_scripts_keep_every_invariant_and_streams_end() {
    let config = Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..600), |data| {
            chaos::run_honest(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_empty_script_connects_and_winds_down() {
    chaos::run(&[]);
}

/// Inputs the fuzzer once broke the state machine with, kept as
/// regression cases (`tests/chaos-cases/*.bin`).
#[test]
fn past_fuzzer_findings_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chaos-cases");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/chaos-cases exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            chaos::run(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no cases in {}", dir.display());
}
