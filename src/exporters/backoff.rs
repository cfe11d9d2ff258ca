//! Jittered exponential backoff, shared by the network exporters. Their defaults differ on
//! purpose (`otlp` follows the Collector: 5 s × 1.5 up to 30 s; `prometheus_remote_write`
//! follows Prometheus: 50 ms × 2 up to 5 s); the arithmetic is this one. [`Reconnect`] is the
//! receivers' policy on top of it for connections that fail after they were made.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Each wait is interval × (1 ± randomization_factor); the interval grows by `multiplier` up to
/// `max_interval`.
pub struct Backoff {
    interval: Duration,
    max_interval: Duration,
    multiplier: f64,
    randomization_factor: f64,
    rng: u64,
}

impl Backoff {
    pub fn new(
        initial_interval: Duration,
        max_interval: Duration,
        multiplier: f64,
        randomization_factor: f64,
        seed: u64,
    ) -> Backoff {
        Backoff {
            interval: initial_interval,
            max_interval,
            multiplier,
            randomization_factor,
            rng: seed | 1,
        }
    }

    /// A seed that differs per call (for senders that share no state).
    pub fn random_seed() -> u64 {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64*: jitter needs no cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        let f = self.randomization_factor.clamp(0.0, 1.0);
        let base = self.interval.as_secs_f64();
        let d = base * (1.0 - f + 2.0 * f * r);
        let next = (base * self.multiplier.max(1.0)).min(self.max_interval.as_secs_f64());
        self.interval = Duration::from_secs_f64(next.max(0.0));
        Duration::from_secs_f64(d.max(0.0))
    }
}

/// Reconnecting after a connection was lost: a wait after every loss, growing while sessions
/// keep failing, reset only by a session that stayed up for `healthy` (so a server that accepts
/// and then drops every connection is not hammered).
pub struct Reconnect {
    min: Duration,
    max: Duration,
    healthy: Duration,
    backoff: Backoff,
}

impl Reconnect {
    /// Waits from `min` doubling up to `max` (±20 % jitter); a session of `healthy` resets them.
    pub fn new(min: Duration, max: Duration, healthy: Duration) -> Reconnect {
        Reconnect {
            min,
            max,
            healthy,
            backoff: Backoff::new(min, max, 2.0, 0.2, Backoff::random_seed()),
        }
    }

    /// The wait before the next attempt after a failed attempt.
    pub fn after_failure(&mut self) -> Duration {
        self.backoff.next_delay()
    }

    /// The wait before reconnecting after a session that lasted `session`.
    pub fn after_loss(&mut self, session: Duration) -> Duration {
        if session >= self.healthy {
            self.backoff = Backoff::new(self.min, self.max, 2.0, 0.2, Backoff::random_seed());
        }
        self.backoff.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(400), 2.0, 0.5, 7);
        let d: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!((0.05..0.15).contains(&d[0]), "{d:?}");
        assert!((0.1..0.3).contains(&d[1]), "{d:?}");
        assert!(d.iter().all(|x| *x < 0.6), "{d:?}");
        assert!(d[3..].iter().all(|x| *x >= 0.2), "{d:?}");
        let mut b = Backoff::new(ms(100), ms(100), 1.0, 0.0, Backoff::random_seed());
        assert_eq!(b.next_delay(), ms(100));
    }

    #[test]
    fn reconnect_waits_after_every_loss_and_resets_after_a_healthy_session() {
        let ms = Duration::from_millis;
        let mut r = Reconnect::new(ms(100), ms(1000), ms(5000));
        let short: Vec<Duration> = (0..6).map(|_| r.after_loss(ms(1))).collect();
        assert!(short[0] >= ms(80), "{short:?}");
        assert!(short[3] >= ms(640), "{short:?}");
        assert!(short[5] >= ms(800) && short[5] <= ms(1200), "{short:?}");
        assert!(r.after_loss(ms(5000)) <= ms(120));
        assert!(r.after_failure() >= ms(160));
    }
}
