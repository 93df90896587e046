//! Wall-clock timestamps as msgp encodes them (docs/protocol.md#payloads-time).
//!
//! The core never reads a clock: timestamps are derived from the wall time
//! the driver passes in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BufMut;

use crate::error::DecodeError;

/// A UTC instant as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds within the second, 0..=999 999 999.
    pub nanos: u32,
}

impl Timestamp {
    /// Go's zero `time.Time` (0001-01-01T00:00:00Z), sent in pongs to mux
    /// pings, which carry no time.
    pub const GO_ZERO: Timestamp = Timestamp {
        secs: -62_135_596_800,
        nanos: 0,
    };

    /// The Unix epoch.
    pub const UNIX_EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// Converts a `SystemTime` (what a driver reads from its clock).
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => Timestamp::UNIX_EPOCH - e.duration(),
        }
    }

    /// The same instant as a `SystemTime` (for the application's own
    /// clocks and formatting; no clock is read).
    pub fn to_system_time(self) -> SystemTime {
        let before_epoch = Timestamp::UNIX_EPOCH.duration_since(self);
        match before_epoch {
            Some(d) if !d.is_zero() => UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH),
            _ => {
                let after = self
                    .duration_since(Timestamp::UNIX_EPOCH)
                    .unwrap_or_default();
                UNIX_EPOCH.checked_add(after).unwrap_or(UNIX_EPOCH)
            }
        }
    }

    /// Nanoseconds since the Unix epoch, saturating (the `X-Minio-Time` form).
    pub fn unix_nanos(self) -> i64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanos))
    }

    /// From nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(ns: i64) -> Timestamp {
        Timestamp {
            secs: ns.div_euclid(1_000_000_000),
            nanos: ns.rem_euclid(1_000_000_000) as u32,
        }
    }

    /// `self - earlier`, or `None` if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Option<Duration> {
        let a = i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos);
        let b = i128::from(earlier.secs) * 1_000_000_000 + i128::from(earlier.nanos);
        let d = a - b;
        (d >= 0).then(|| Duration::from_nanos(d.min(i128::from(u64::MAX)) as u64))
    }

    /// The absolute difference between two timestamps.
    pub fn abs_diff(self, other: Timestamp) -> Duration {
        self.duration_since(other)
            .or_else(|| other.duration_since(self))
            .unwrap_or_default()
    }

    /// Writes msgp's time extension (ext8, length 12, type 5).
    pub(crate) fn encode(self, out: &mut impl BufMut) {
        out.put_slice(&[0xc7, 0x0c, 0x05]);
        out.put_i64(self.secs);
        out.put_u32(self.nanos);
    }

    /// Reads msgp's type 5 extension or the standard msgpack timestamp
    /// (type −1, 4/8/12 bytes).
    pub(crate) fn decode(
        ty: i8,
        data: &[u8],
        field: &'static str,
    ) -> Result<Timestamp, DecodeError> {
        let invalid = |reason| DecodeError::InvalidValue { field, reason };
        let be = |s: &[u8]| s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let ts = match (ty, data.len()) {
            (5, 12) => Timestamp {
                secs: be(&data[..8]) as i64,
                nanos: be(&data[8..]) as u32,
            },
            (-1, 4) => Timestamp {
                secs: be(data) as i64,
                nanos: 0,
            },
            (-1, 8) => {
                let v = be(data);
                Timestamp {
                    secs: (v & 0x3_ffff_ffff) as i64,
                    nanos: (v >> 34) as u32,
                }
            }
            (-1, 12) => Timestamp {
                secs: be(&data[4..]) as i64,
                nanos: be(&data[..4]) as u32,
            },
            (5 | -1, _) => return Err(invalid("timestamp extension has a wrong length")),
            _ => return Err(invalid("not a timestamp extension")),
        };
        if ts.nanos > 999_999_999 {
            return Err(invalid("timestamp nanoseconds out of range"));
        }
        Ok(ts)
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        let total =
            i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos) + d.as_nanos() as i128;
        Timestamp {
            secs: total.div_euclid(1_000_000_000) as i64,
            nanos: total.rem_euclid(1_000_000_000) as u32,
        }
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        let total =
            i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos) - d.as_nanos() as i128;
        Timestamp {
            secs: total.div_euclid(1_000_000_000) as i64,
            nanos: total.rem_euclid(1_000_000_000) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_spec_example() {
        let t = Timestamp {
            secs: 1_704_164_645,
            nanos: 6_007_008,
        };
        let mut out = Vec::new();
        t.encode(&mut out);
        assert_eq!(
            out,
            [
                0xc7, 0x0c, 0x05, 0, 0, 0, 0, 0x65, 0x93, 0x7d, 0x25, 0x00, 0x5b, 0xa8, 0xe0
            ]
        );
        assert_eq!(Timestamp::decode(5, &out[3..], "t").unwrap(), t);
        let mut zero = Vec::new();
        Timestamp::GO_ZERO.encode(&mut zero);
        assert_eq!(
            &zero[3..],
            &[0xff, 0xff, 0xff, 0xf1, 0x88, 0x6e, 0x09, 0x00, 0, 0, 0, 0]
        );
    }

    #[test]
    fn decodes_standard_timestamps() {
        assert_eq!(
            Timestamp::decode(-1, &[0, 0, 0, 5], "t").unwrap(),
            Timestamp { secs: 5, nanos: 0 }
        );
        let v: u64 = (7u64 << 34) | 9;
        assert_eq!(
            Timestamp::decode(-1, &v.to_be_bytes(), "t").unwrap(),
            Timestamp { secs: 9, nanos: 7 }
        );
        let mut d12 = 3u32.to_be_bytes().to_vec();
        d12.extend_from_slice(&(-2i64).to_be_bytes());
        assert_eq!(
            Timestamp::decode(-1, &d12, "t").unwrap(),
            Timestamp { secs: -2, nanos: 3 }
        );
        assert!(
            Timestamp::decode(-1, &[0x3b, 0x9a, 0xca, 0x00, 0, 0, 0, 0, 0, 0, 0, 0], "t").is_err()
        );
        assert!(Timestamp::decode(3, &[0; 12], "t").is_err());
    }

    #[test]
    fn nanos_and_arithmetic() {
        let t = Timestamp::from_unix_nanos(1_704_164_645_006_007_008);
        assert_eq!(
            t,
            Timestamp {
                secs: 1_704_164_645,
                nanos: 6_007_008
            }
        );
        assert_eq!(t.unix_nanos(), 1_704_164_645_006_007_008);
        assert_eq!(
            Timestamp::from_unix_nanos(-1),
            Timestamp {
                secs: -1,
                nanos: 999_999_999
            }
        );
        let later = t + Duration::from_millis(1500);
        assert_eq!(later.duration_since(t), Some(Duration::from_millis(1500)));
        assert_eq!(t.duration_since(later), None);
        assert_eq!(t.abs_diff(later), Duration::from_millis(1500));
        assert_eq!(later - Duration::from_millis(1500), t);
        for t in [
            t,
            Timestamp::from_unix_nanos(-1_500_000_000),
            Timestamp::UNIX_EPOCH,
        ] {
            assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        }
    }
}
