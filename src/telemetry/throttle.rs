//! A warning gate for the agent's own logs: at most one warning per period, counting the ones
//! held back in between, so a failure that repeats thousands of times a second costs one log
//! line per period (with how many it stands for) instead of flooding the log.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub const fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            last: None,
            held: 0,
        }
    }

    /// `Some(n)` when a warning may be logged now, `n` being how many were held back since the
    /// previous one; `None` (and one more held back) otherwise.
    pub fn ready(&mut self) -> Option<u64> {
        self.ready_weighted(1, Instant::now())
    }

    /// [`Throttle::ready`] for a warning that stands for `n` occurrences (e.g. `n` dropped
    /// items): what is held back is counted in occurrences.
    pub fn ready_for(&mut self, n: u64) -> Option<u64> {
        self.ready_weighted(n, Instant::now())
    }

    fn ready_weighted(&mut self, n: u64, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.period => {
                self.held += n;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_with_the_count_held_back() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.ready_weighted(1, t0), Some(0));
        assert_eq!(t.ready_weighted(1, t0 + Duration::from_secs(1)), None);
        assert_eq!(t.ready_weighted(1, t0 + Duration::from_secs(9)), None);
        assert_eq!(t.ready_weighted(1, t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.ready_weighted(1, t0 + Duration::from_secs(11)), None);
        assert_eq!(t.ready_weighted(1, t0 + Duration::from_secs(30)), Some(1));
        // Weighted: what is held back is counted in occurrences.
        assert_eq!(t.ready_weighted(5, t0 + Duration::from_secs(31)), None);
        assert_eq!(t.ready_weighted(7, t0 + Duration::from_secs(32)), None);
        assert_eq!(t.ready_weighted(1, t0 + Duration::from_secs(40)), Some(12));
    }
}
