//! Retrying a failed request, shared by the network exporters (`otlp`, `otlphttp`,
//! `prometheus_remote_write`): the `retry_on_failure` settings (the Collector's
//! `configretry.BackOffConfig`) and [`Attempts`], which paces the attempts of one request:
//! jittered exponential backoff ([`Backoff`]), a server's requested delay as a floor,
//! `max_elapsed_time`, and waits cut short by shutdown ([`pause`]).
//!
//! What is retryable, and what a failure is counted as, stays each exporter's own (OTLP: the
//! gRPC codes in [`crate::exporters::otlp::retry`]; remote write: 5xx, 429, timeouts and
//! connection errors). So do the defaults, on purpose: `otlp` follows the Collector (5 s × 1.5
//! up to 30 s), `prometheus_remote_write` follows Prometheus (50 ms × 2 up to 5 s); one type
//! carries either through its [`RetryDefaults`].

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{types, DecodeError};
use crate::exporters::backoff::Backoff;

/// The defaults of an exporter's `retry_on_failure`.
pub trait RetryDefaults {
    const INITIAL_INTERVAL: Duration;
    const MAX_INTERVAL: Duration;
    const MAX_ELAPSED_TIME: Duration;
    const MULTIPLIER: f64;
    const RANDOMIZATION_FACTOR: f64;
}

/// The Collector's (`configretry.NewDefaultBackOffConfig`): 5 s × 1.5 up to 30 s, for 5 min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorDefaults;

impl RetryDefaults for CollectorDefaults {
    const INITIAL_INTERVAL: Duration = Duration::from_secs(5);
    const MAX_INTERVAL: Duration = Duration::from_secs(30);
    const MAX_ELAPSED_TIME: Duration = Duration::from_secs(300);
    const MULTIPLIER: f64 = 1.5;
    const RANDOMIZATION_FACTOR: f64 = 0.5;
}

/// Prometheus' remote-write queue's: 50 ms × 2 up to 5 s; a request is given up after 5 min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrometheusDefaults;

impl RetryDefaults for PrometheusDefaults {
    const INITIAL_INTERVAL: Duration = Duration::from_millis(50);
    const MAX_INTERVAL: Duration = Duration::from_secs(5);
    const MAX_ELAPSED_TIME: Duration = Duration::from_secs(300);
    const MULTIPLIER: f64 = 2.0;
    const RANDOMIZATION_FACTOR: f64 = 0.5;
}

/// `retry_on_failure`; `D` gives the defaults of the keys left out.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(
    deny_unknown_fields,
    default,
    bound(deserialize = "D: RetryDefaults", serialize = "")
)]
pub struct RetryConfig<D = CollectorDefaults> {
    pub enabled: bool,
    #[serde(with = "types::duration")]
    pub initial_interval: Duration,
    #[serde(with = "types::duration")]
    pub max_interval: Duration,
    /// Give a request up after this long; zero retries forever.
    #[serde(with = "types::duration")]
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
    #[serde(skip)]
    pub defaults: PhantomData<D>,
}

impl<D: RetryDefaults> Default for RetryConfig<D> {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: D::INITIAL_INTERVAL,
            max_interval: D::MAX_INTERVAL,
            max_elapsed_time: D::MAX_ELAPSED_TIME,
            multiplier: D::MULTIPLIER,
            randomization_factor: D::RANDOMIZATION_FACTOR,
            defaults: PhantomData,
        }
    }
}

impl<D> RetryConfig<D> {
    /// The backoff of these settings.
    pub fn backoff(&self, seed: u64) -> Backoff {
        Backoff::new(
            self.initial_interval,
            self.max_interval,
            self.multiplier,
            self.randomization_factor,
            seed,
        )
    }

    /// `multiplier` and `randomization_factor` in range (checked when retries are enabled).
    pub fn check_factors(&self) -> Result<(), DecodeError> {
        if !self.enabled {
            return Ok(());
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(DecodeError::new(
                "retry_on_failure.multiplier",
                "must be ≥ 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(DecodeError::new(
                "retry_on_failure.randomization_factor",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// The attempts of one request: the wait before the next one, and when to give up.
pub struct Attempts {
    backoff: Backoff,
    started: Instant,
    max_elapsed_time: Duration,
}

impl Attempts {
    /// Start pacing a request now.
    pub fn new<D>(cfg: &RetryConfig<D>, seed: u64) -> Attempts {
        Attempts {
            started: Instant::now(),
            backoff: cfg.backoff(seed),
            max_elapsed_time: cfg.max_elapsed_time,
        }
    }

    /// After a retryable failure: the backoff's next wait, at least the server's `floor`; `None`
    /// when waiting that long would pass `max_elapsed_time` (zero: never).
    pub fn next_wait(&mut self, floor: Option<Duration>) -> Option<Duration> {
        let wait = self.backoff.next_delay().max(floor.unwrap_or_default());
        let max = self.max_elapsed_time;
        if !max.is_zero() && self.started.elapsed() + wait > max {
            None
        } else {
            Some(wait)
        }
    }
}

/// Wait `wait` unless shutdown comes first; `false` when shutdown had begun or cut it short.
pub async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    if shutdown.is_cancelled() {
        return false;
    }
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let cfg = RetryConfig::<CollectorDefaults> {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            ..RetryConfig::default()
        };
        let mut b = cfg.backoff(42);
        let d: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!((0.05..=0.15).contains(&d[0]), "{d:?}");
        assert!((0.075..=0.225).contains(&d[1]), "{d:?}");
        assert!(d.iter().all(|x| *x <= 0.6), "{d:?}");
        assert!(d[5..].iter().all(|x| *x >= 0.2), "{d:?}");
    }

    #[test]
    fn each_exporter_keeps_its_defaults() {
        let otlp: RetryConfig =
            crate::config::decode(&serde_yaml_ng::from_str("{}").unwrap()).unwrap();
        assert_eq!(otlp.initial_interval, Duration::from_secs(5));
        assert_eq!(otlp.multiplier, 1.5);
        let rw: RetryConfig<PrometheusDefaults> =
            crate::config::decode(&serde_yaml_ng::from_str("{enabled: true}").unwrap()).unwrap();
        assert_eq!(rw.initial_interval, Duration::from_millis(50));
        assert_eq!(rw.max_interval, Duration::from_secs(5));
        assert_eq!(rw.multiplier, 2.0);
        assert_eq!(rw.randomization_factor, 0.5);
    }

    #[test]
    fn attempts_stop_at_max_elapsed_time_and_honour_the_server_floor() {
        let ms = Duration::from_millis;
        let cfg = RetryConfig::<PrometheusDefaults> {
            initial_interval: ms(10),
            max_interval: ms(10),
            max_elapsed_time: ms(100),
            randomization_factor: 0.0,
            ..RetryConfig::default()
        };
        let mut a = Attempts::new(&cfg, 1);
        assert_eq!(a.next_wait(None), Some(ms(10)));
        assert_eq!(a.next_wait(Some(ms(50))), Some(ms(50)));
        assert_eq!(a.next_wait(Some(ms(200))), None);
        let forever = RetryConfig::<PrometheusDefaults> {
            max_elapsed_time: Duration::ZERO,
            ..cfg
        };
        assert_eq!(
            Attempts::new(&forever, 1).next_wait(Some(ms(3_600_000))),
            Some(ms(3_600_000))
        );
    }

    #[tokio::test]
    async fn pause_ends_at_shutdown() {
        let token = CancellationToken::new();
        assert!(pause(Duration::from_millis(1), &token).await);
        let t = token.clone();
        tokio::spawn(async move { t.cancel() });
        assert!(!pause(Duration::from_secs(3600), &token).await);
        assert!(!pause(Duration::ZERO, &token).await);
    }
}
