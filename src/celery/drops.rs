//! Accounting of undecodable Celery input, shared by the broker receivers (`celery_redis`,
//! `celery_amqp`): one `celeriac_celery_events_dropped_total{component, reason}` counter per
//! [`DecodeError::reason`] and one rate-limited warning per reason.

use std::collections::HashMap;
use std::time::Duration;

use crate::celery::envelope::DecodeError;
use crate::component::Context;
use crate::telemetry::{Counter, Throttle};

const WARN_EVERY: Duration = Duration::from_secs(10);

/// Drop counters of one receiver, created per reason on first use.
pub struct Drops {
    ctx: Context,
    counters: HashMap<&'static str, Counter>,
    warn: HashMap<&'static str, Throttle>,
}

impl Drops {
    pub fn new(ctx: Context) -> Drops {
        Drops {
            ctx,
            counters: HashMap::new(),
            warn: HashMap::new(),
        }
    }

    /// Count `n` messages or events dropped for `e` and warn at most once per reason per 10 s.
    pub fn record(&mut self, e: &DecodeError, n: u64) {
        self.record_reason(e.reason(), e, n);
    }

    /// As [`Drops::record`], with a reason the decoder does not know (e.g. `too_large`).
    pub fn record_reason(&mut self, reason: &'static str, e: &dyn std::fmt::Display, n: u64) {
        let counter = self.counters.entry(reason).or_insert_with(|| {
            self.ctx.telemetry.counter(
                "celeriac_celery_events_dropped_total",
                "Celery messages or events dropped before correlation, by reason.",
                &[("component", &self.ctx.id), ("reason", reason)],
            )
        });
        counter.add(n);
        let warn = self
            .warn
            .entry(reason)
            .or_insert_with(|| Throttle::new(WARN_EVERY));
        if let Some(held) = warn.ready_for(n) {
            tracing::warn!(component = %self.ctx.id, reason, dropped = held + n, error = %e, "Dropping undecodable Celery input.");
        }
    }
}
