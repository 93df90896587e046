//! What the load (`grid-bench --remote --machine-readable`) reported: its
//! progress lines, its totals and its stderr events, and the figures the
//! suite derives from them.

/// A change in the load's luck, with its Unix time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Event {
    /// The first error after a success (or after the start).
    ErrorsBegan(f64),
    /// The first success after errors.
    Recovered(f64),
}

impl Event {
    fn at(self) -> f64 {
        match self {
            Event::ErrorsBegan(t) | Event::Recovered(t) => t,
        }
    }
}

/// One progress line: the second that ended `elapsed` seconds after the
/// start, and what completed in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Second {
    pub(crate) elapsed: u32,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
}

/// The last line: every call, counted once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Total {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) unresolved: u64,
}

/// Everything the load printed that the suite uses.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub(crate) seconds: Vec<Second>,
    pub(crate) total: Option<Total>,
    pub(crate) events: Vec<Event>,
    /// `errors by kind: ...`, if there were errors.
    pub(crate) kinds: Option<String>,
}

/// The Unix time after `at unix ` in an event line.
fn event_time(line: &str) -> Option<f64> {
    let rest = line.split_once("at unix ")?.1;
    rest.split(':').next()?.trim().parse().ok()
}

impl Observed {
    /// Reads the load's stdout and stderr lines.
    pub(crate) fn parse<'a>(
        stdout: impl IntoIterator<Item = &'a str>,
        stderr: impl IntoIterator<Item = &'a str>,
    ) -> Observed {
        let mut o = Observed::default();
        for line in stdout {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["progress", elapsed, ok, errors, _, _] => {
                    if let (Ok(elapsed), Ok(ok), Ok(errors)) =
                        (elapsed.parse(), ok.parse(), errors.parse())
                    {
                        o.seconds.push(Second {
                            elapsed,
                            ok,
                            errors,
                        });
                    }
                }
                ["total", ok, errors, unresolved] => {
                    if let (Ok(ok), Ok(errors), Ok(unresolved)) =
                        (ok.parse(), errors.parse(), unresolved.parse())
                    {
                        o.total = Some(Total {
                            ok,
                            errors,
                            unresolved,
                        });
                    }
                }
                _ => {}
            }
        }
        for line in stderr {
            if line.contains(": errors began") {
                o.events.extend(event_time(line).map(Event::ErrorsBegan));
            } else if line.contains(": recovered after") {
                o.events.extend(event_time(line).map(Event::Recovered));
            } else if let Some(kinds) = line.strip_prefix("grid-bench: errors by kind: ") {
                o.kinds = Some(kinds.to_owned());
            }
        }
        o.events.sort_by(|a, b| a.at().total_cmp(&b.at()));
        o
    }

    /// Whether errors had begun and not yet ended at `t`.
    fn failing_at(&self, t: f64) -> bool {
        matches!(
            self.events.iter().rev().find(|e| e.at() <= t),
            Some(Event::ErrorsBegan(_))
        )
    }

    fn first_recovery_after(&self, t: f64) -> Option<f64> {
        self.events.iter().find_map(|e| match *e {
            Event::Recovered(r) if r > t => Some(r),
            _ => None,
        })
    }

    /// The first error at or after `t`.
    pub(crate) fn first_error_after(&self, t: f64) -> Option<f64> {
        self.events.iter().find_map(|e| match *e {
            Event::ErrorsBegan(b) if b >= t => Some(b),
            _ => None,
        })
    }

    /// Seconds from the repair to the first success after it: 0 when calls
    /// were not failing at the repair, `None` when they never recovered.
    /// A fault without duration (a reset: `repair == fault`) counts from
    /// the fault to the first success after the errors it caused (within
    /// `settle` of it; none: 0).
    pub(crate) fn recovery(&self, fault: f64, repair: f64, settle: f64) -> Option<f64> {
        let from = if repair > fault {
            if !self.failing_at(repair) {
                return Some(0.0);
            }
            repair
        } else {
            match self.first_error_after(fault) {
                Some(b) if b <= fault + settle => b,
                _ if self.failing_at(fault) => fault,
                _ => return Some(0.0),
            }
        };
        self.first_recovery_after(from).map(|r| r - repair)
    }

    /// Median ok count of the progress seconds ending at `elapsed` in
    /// `range`.
    pub(crate) fn baseline(&self, range: std::ops::RangeInclusive<u32>) -> Option<f64> {
        let mut ok: Vec<u64> = self
            .seconds
            .iter()
            .filter(|s| range.contains(&s.elapsed))
            .map(|s| s.ok)
            .collect();
        ok.sort_unstable();
        ok.get(ok.len().checked_sub(1)? / 2).map(|&v| v as f64)
    }

    /// The first whole progress second starting at or after Unix time
    /// `from`, the load's clock having started at `start`.
    pub(crate) fn second_from(&self, start: f64, from: f64) -> Option<Second> {
        self.seconds
            .iter()
            .find(|s| start + f64::from(s.elapsed) - 1.0 >= from)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDOUT: &str = "progress\t1\t900\t0\t100\t200
progress\t2\t1000\t0\t100\t200
progress\t3\t10\t50\t100\t900
progress\t4\t0\t70\t-\t-
progress\t5\t800\t3\t100\t200
progress\t6\t990\t0\t100\t200
total\t3700\t123\t0";

    const STDERR: &str = "grid-bench: connected to http://x after 0.010 s
grid-bench: started at unix 1000.000000
grid-bench: at unix 1002.100000: errors began: remote disconnected
grid-bench: at unix 1004.250000: recovered after 2.150 s without success (120 errors since the last success)
grid-bench: at unix 1004.500000: errors began: deadline exceeded
grid-bench: at unix 1004.600000: recovered after 0.100 s without success (3 errors since the last success)
grid-bench: errors by kind: 100 not connected; 23 remote disconnected";

    fn observed() -> Observed {
        Observed::parse(STDOUT.lines(), STDERR.lines())
    }

    #[test]
    fn reads_progress_totals_and_events() {
        let o = observed();
        assert_eq!(o.seconds.len(), 6);
        assert_eq!(
            o.seconds[2],
            Second {
                elapsed: 3,
                ok: 10,
                errors: 50
            }
        );
        assert_eq!(
            o.total,
            Some(Total {
                ok: 3700,
                errors: 123,
                unresolved: 0
            })
        );
        assert_eq!(o.events.len(), 4);
        assert_eq!(o.events[0], Event::ErrorsBegan(1002.1));
        assert!(o.kinds.as_deref().unwrap().starts_with("100 not connected"));
    }

    #[test]
    fn recovery_counts_from_the_repair_or_from_an_instant_fault() {
        let o = observed();
        // Failing at the repair: until the first success after it.
        let r = o.recovery(1002.0, 1003.0, 1.0).unwrap();
        assert!((r - 1.25).abs() < 1e-9, "{r}");
        // Calls were succeeding at the repair.
        assert_eq!(o.recovery(1004.3, 1004.4, 1.0), Some(0.0));
        // A reset at 1002.0: errors from 1002.1, success at 1004.25.
        let r = o.recovery(1002.0, 1002.0, 1.0).unwrap();
        assert!((r - 2.25).abs() < 1e-9, "{r}");
        // No errors after an instant fault: nothing to recover from.
        assert_eq!(o.recovery(1005.0, 1005.0, 1.0), Some(0.0));
        // Errors that never end.
        let o = Observed::parse([], ["grid-bench: at unix 5.0: errors began: x"]);
        assert_eq!(o.recovery(4.0, 6.0, 1.0), None);
    }

    #[test]
    fn baseline_and_the_second_after_a_repair() {
        let o = observed();
        assert_eq!(o.baseline(1..=2), Some(900.0));
        assert_eq!(o.baseline(2..=2), Some(1000.0));
        assert_eq!(o.baseline(20..=30), None);
        // Clock started at 1000: second 5 covers [1004, 1005).
        assert_eq!(o.second_from(1000.0, 1003.5).map(|s| s.elapsed), Some(5));
        assert_eq!(o.second_from(1000.0, 1004.0).map(|s| s.elapsed), Some(5));
        assert_eq!(o.second_from(1000.0, 1006.0), None);
    }
}
