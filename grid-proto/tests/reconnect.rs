//! The dialer's reconnect policy on a virtual clock: an unreachable peer is
//! tried about once per second, a refusing one backs off exponentially to
//! 30 s, an established session that ends is redialed at once, and the
//! reason of the latest failure is in the stats.

mod common;

use std::time::Duration;

use common::*;
use grid_proto::sim::Pair;
use grid_proto::{DialFailure, State};

/// The gaps between consecutive dials.
fn gaps(log: &Log) -> Vec<Duration> {
    log.times(is_dial).windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn an_unreachable_peer_is_tried_about_once_per_second() {
    let mut pair = Pair::new(8);
    let log = Log::default();
    pair.client.set_app(log.clone());
    pair.failing_dials = 30;
    pair.advance(secs(40));
    assert_eq!(pair.client.conn.state(), State::Connected);
    let gaps = gaps(&log);
    assert_eq!(gaps.len(), 30, "{:#?}", log.entries());
    // Never above 0.9 s (a returning peer is found within it), never a
    // storm, and no growth however long the peer stays away.
    for g in &gaps {
        assert!(*g >= ms(720) && *g <= ms(900), "gap {g:?}");
    }
    let total: Duration = gaps.iter().sum();
    assert!(total > secs(21) && total < secs(27), "{total:?}");
    // A failed dial reports no session ending: there was none.
    assert!(log.times(is_disconnected).is_empty());
}

#[test]
fn a_peer_that_comes_back_is_reached_within_one_interval() {
    // Seeds give different jitter; the bound holds for every one.
    for seed in 0..50 {
        let mut pair = Pair::new(seed);
        pair.failing_dials = u32::MAX;
        pair.advance(secs(20));
        assert_eq!(pair.client.conn.state(), State::ConnectionError);
        // The peer is back: the next attempt succeeds.
        pair.failing_dials = 0;
        let back = pair.now;
        while pair.client.conn.state() != State::Connected {
            pair.advance(ms(10));
            assert!(pair.now - back <= ms(950), "seed {seed}: not back in time");
        }
    }
}

#[test]
fn a_refusal_backs_off_exponentially_to_30_s() {
    let mut pair = Pair::new(9);
    let log = Log::default();
    pair.client.set_app(log.clone());
    pair.dial_failure = DialFailure::UpgradeRefused(403);
    pair.failing_dials = 9;
    pair.advance(secs(200));
    assert_eq!(pair.client.conn.state(), State::Connected);
    let gaps = gaps(&log);
    assert_eq!(gaps.len(), 9, "{:#?}", log.entries());
    // 1 s ± 20 %, doubling per refusal, capped at 30 s.
    let bounds = [
        (800, 1200),
        (1600, 2400),
        (3200, 4800),
        (6400, 9600),
        (12_800, 19_200),
        (25_600, 30_000),
        (30_000, 30_000),
        (30_000, 30_000),
        (30_000, 30_000),
    ];
    for (g, (lo, hi)) in gaps.iter().zip(bounds) {
        assert!(
            *g >= ms(lo) && *g <= ms(hi),
            "gap {g:?} not in [{lo}, {hi}] ms"
        );
    }
}

#[test]
fn the_reason_and_count_of_failures_are_in_the_stats_until_connected() {
    let mut pair = Pair::new(10);
    pair.dial_failure = DialFailure::UpgradeRefused(403);
    pair.failing_dials = 2;
    pair.advance(ms(500));
    let stats = pair.client.conn.stats(pair.now);
    assert_eq!(stats.dial_failures, 1);
    assert_eq!(
        stats.last_dial_failure,
        Some(DialFailure::UpgradeRefused(403))
    );
    assert!(DialFailure::UpgradeRefused(403).is_rejection());
    pair.advance(secs(10));
    let stats = pair.client.conn.stats(pair.now);
    assert_eq!(stats.state, State::Connected);
    assert_eq!(stats.dial_failures, 2);
    assert_eq!(stats.last_dial_failure, None);
}

#[test]
fn backoff_resets_after_a_successful_session() {
    let mut pair = Pair::new(11);
    let log = Log::default();
    pair.client.set_app(log.clone());
    pair.dial_failure = DialFailure::Rejected("unknown incoming host".into());
    pair.failing_dials = 4;
    pair.advance(secs(30));
    assert_eq!(pair.client.conn.state(), State::Connected);
    let lost = pair.now;
    pair.failing_dials = 1;
    pair.disconnect();
    pair.advance(secs(10));
    let dials: Vec<_> = log
        .times(is_dial)
        .into_iter()
        .filter(|t| *t >= lost)
        .collect();
    assert_eq!(dials.len(), 2);
    assert_eq!(
        dials[0], lost,
        "redial at once after an established session"
    );
    // The first refusal of a new run of refusals: the initial delay again.
    let gap = dials[1] - dials[0];
    assert!(gap >= ms(800) && gap <= ms(1200), "{gap:?}");
}

#[test]
fn a_frozen_peer_costs_one_attempt_per_handshake_timeout() {
    // The transport comes up but the peer never answers `Connect`: each
    // attempt ends at the handshake timeout and the next follows at once
    // (its interval has passed), so it is found as soon as it answers.
    let mut pair = Pair::new(12);
    let log = Log::default();
    pair.client.set_app(log.clone());
    pair.blackhole_to_server = true;
    pair.advance(secs(35));
    let gaps = gaps(&log);
    assert_eq!(gaps.len(), 3, "{:#?}", log.entries());
    for g in &gaps {
        assert_eq!(*g, secs(10), "handshake timeout, then at once");
    }
    assert_eq!(
        pair.client.conn.last_dial_failure(),
        Some(&DialFailure::HandshakeTimeout)
    );
}
