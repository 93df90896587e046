//! A small log-linear latency histogram (HDR-like): 32 sub-buckets per power
//! of two, so any recorded value is known within about 3 %. Recording is an
//! array increment; each task keeps its own and they are merged at the end.

/// Values below this are counted exactly.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Counts of nanosecond values.
#[derive(Clone)]
pub(crate) struct Hist {
    counts: Box<[u64]>,
    total: u64,
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // floor(log2 v) >= SUB_BITS
    let shift = e - SUB_BITS;
    let mantissa = v >> shift; // in [SUB, 2 * SUB)
    (shift as u64 * SUB + mantissa) as usize
}

/// The smallest value that lands in bucket `i`.
fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let mantissa = i - shift * SUB;
    mantissa << shift
}

impl Hist {
    pub(crate) fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }

    /// Records one value (nanoseconds).
    pub(crate) fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1): the middle of its bucket, `None`
    /// when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = lower_bound(i);
                let hi = lower_bound(i + 1).max(lo + 1);
                return Some(lo + (hi - lo - 1) / 2);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(lower_bound(i)), i, "bucket {i}");
            assert!(lower_bound(i + 1) > lower_bound(i));
        }
        for v in [
            0u64,
            1,
            31,
            32,
            63,
            64,
            65,
            1000,
            123_456,
            9_999_999,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(lower_bound(i) <= v, "{v}");
            if i + 1 < BUCKETS {
                assert!(v < lower_bound(i + 1), "{v}");
                // Relative width of a bucket is at most 1/32.
                let w = lower_bound(i + 1) - lower_bound(i);
                assert!(w <= 1.max(v / 32 + 1), "{v}: width {w}");
            }
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::new();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.04, "{p99}");
        let mut g = Hist::new();
        g.record(5);
        g.merge(&h);
        assert_eq!(g.count(), 1001);
    }
}
