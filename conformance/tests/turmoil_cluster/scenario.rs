//! What a seed draws: the cluster, its links and clocks, and the faults
//! that strike it on schedule.

use std::time::Duration;

use grid_tokio::turmoil::ClockSkew;

/// The grid port every node listens on.
pub(crate) const PORT: u16 = 9000;
/// Most clock skew between two nodes that must still connect (below the
/// 5-minute `Connect` tolerance, with room).
const SKEW_SPREAD: Duration = Duration::from_secs(2 * 60);

/// SplitMix64: small, seedable, and ours (no dependency decides the run).
#[derive(Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_6a1d_0000_0000)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub(crate) fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// An index below `n`.
    pub(crate) fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A seed for one purpose of one run, so adding a draw in one place does not
/// shift every other.
pub(crate) fn derive(seed: u64, parts: &[u64]) -> u64 {
    let mut rng = Rng::new(seed);
    for p in parts {
        rng.0 ^= p.wrapping_mul(0x2545_f491_4f6c_dd1d);
        rng.next();
    }
    rng.next()
}

#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Cut every link between `side` and the other nodes. With `hold` the
    /// links keep what is sent and deliver it when repaired (an outage TCP
    /// rides out); without, they drop it (turmoil's TCP never retransmits,
    /// so a connection that lost a segment stalls for good, as one does
    /// that outlived TCP's retransmissions).
    Partition { side: Vec<usize>, hold: bool },
    /// Cut one direction of one link.
    PartitionOneWay { from: usize, to: usize },
    /// Repair every cut link of one node.
    Repair { node: usize },
    /// Kill a node's software; it comes back after `down`.
    Crash { node: usize, down: Duration },
    /// Restart a node's software at once (a new instance).
    Restart { node: usize },
}

#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) seed: u64,
    pub(crate) nodes: usize,
    pub(crate) min_latency: Duration,
    pub(crate) max_latency: Duration,
    /// One slow link and its maximum latency.
    pub(crate) slow_link: Option<(usize, usize, Duration)>,
    pub(crate) skews: Vec<ClockSkew>,
    /// The node whose clock is too far off to connect to anyone, if any.
    pub(crate) outlier: Option<usize>,
    pub(crate) chaos: Duration,
    pub(crate) faults: Vec<(Duration, Fault)>,
}

fn signed_skew(ms: i64) -> ClockSkew {
    match ms {
        0 => ClockSkew::None,
        ms if ms > 0 => ClockSkew::Ahead(Duration::from_millis(ms as u64)),
        ms => ClockSkew::Behind(Duration::from_millis(ms.unsigned_abs())),
    }
}

impl Scenario {
    pub(crate) fn draw(seed: u64) -> Scenario {
        let mut rng = Rng::new(derive(seed, &[1]));
        let nodes = rng.range(5, 16) as usize;
        let min_latency = rng.ms(0, 2);
        let max_latency = min_latency + rng.ms(0, 40);
        let slow_link = rng.chance(30).then(|| {
            let a = rng.pick(nodes);
            let b = (a + 1 + rng.pick(nodes - 1)) % nodes;
            (a, b, rng.ms(100, 300))
        });
        let spread = SKEW_SPREAD.as_millis() as u64;
        let mut skews: Vec<ClockSkew> = (0..nodes)
            .map(|_| signed_skew(rng.range(0, spread) as i64 - (spread / 2) as i64))
            .collect();
        // Now and then one node is 6 to 20 minutes off: past the 5-minute
        // `Connect` check, sometimes past the 15-minute HTTP one too.
        let outlier = rng.chance(10).then(|| {
            let node = rng.pick(nodes);
            let off = rng.range(6 * 60_000, 20 * 60_000) as i64;
            skews[node] = signed_skew(if rng.chance(50) { off } else { -off });
            node
        });
        let chaos = rng.ms(5_000, 15_000);
        let mut faults = Vec::new();
        for _ in 0..rng.range(2, 8) {
            let at = rng.ms(500, chaos.as_millis() as u64 - 500);
            let fault = match rng.range(0, 99) {
                0..40 => {
                    let size = rng.range(1, nodes as u64 / 2) as usize;
                    let mut side = Vec::new();
                    while side.len() < size {
                        let n = rng.pick(nodes);
                        if !side.contains(&n) {
                            side.push(n);
                        }
                    }
                    side.sort_unstable();
                    Fault::Partition {
                        side,
                        hold: rng.chance(50),
                    }
                }
                40..52 => {
                    let from = rng.pick(nodes);
                    let to = (from + 1 + rng.pick(nodes - 1)) % nodes;
                    Fault::PartitionOneWay { from, to }
                }
                52..70 => Fault::Repair {
                    node: rng.pick(nodes),
                },
                70..90 => Fault::Crash {
                    node: rng.pick(nodes),
                    down: rng.ms(300, 8_000),
                },
                _ => Fault::Restart {
                    node: rng.pick(nodes),
                },
            };
            faults.push((at, fault));
        }
        faults.sort_by_key(|(at, _)| *at);
        Scenario {
            seed,
            nodes,
            min_latency,
            max_latency,
            slow_link,
            skews,
            outlier,
            chaos,
            faults,
        }
    }

    /// `nodes` nodes on fast links with agreeing clocks, and no faults: for
    /// tests that strike their own.
    pub(crate) fn quiet(seed: u64, nodes: usize) -> Scenario {
        Scenario {
            seed,
            nodes,
            min_latency: Duration::ZERO,
            max_latency: Duration::from_millis(1),
            slow_link: None,
            skews: vec![ClockSkew::None; nodes],
            outlier: None,
            chaos: Duration::ZERO,
            faults: Vec::new(),
        }
    }

    /// Whether `a` and `b` can connect at all (their clocks agree).
    pub(crate) fn can_connect(&self, a: usize, b: usize) -> bool {
        self.outlier.is_none_or(|o| o != a && o != b)
    }
}

pub(crate) fn name(node: usize) -> String {
    format!("n{node}")
}

pub(crate) fn url(node: usize) -> String {
    format!("http://n{node}:{PORT}")
}
