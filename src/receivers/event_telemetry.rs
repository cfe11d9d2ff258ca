//! The self-telemetry the two Celery event receivers (`celery_redis`, `celery_amqp`) both keep:
//! messages read, events decoded, reconnects and the time without events after a loss, connect
//! and connection-lost errors, the connected gauge, and events a memory limiter refused. The
//! broker-specific series (names and help texts) come from a [`BrokerSeries`].

use crate::component::Context;
use crate::telemetry::{Counter, Gauge};

/// The names and help texts that differ between brokers.
pub struct BrokerSeries {
    pub messages_help: &'static str,
    /// `(name, help)` of the reconnect counter.
    pub reconnects: (&'static str, &'static str),
    /// `(name, help)` of the gap counter (milliseconds).
    pub gap_ms: (&'static str, &'static str),
    /// `(name, help)` of the connected gauge.
    pub connected: (&'static str, &'static str),
}

pub struct EventTelemetry {
    pub messages: Counter,
    pub events_in: Counter,
    pub reconnects: Counter,
    pub gap_ms: Counter,
    pub connect_errors: Counter,
    pub lost_errors: Counter,
    pub connected: Gauge,
    pub memory_drops: Counter,
}

impl EventTelemetry {
    pub fn new(ctx: &Context, series: &BrokerSeries) -> EventTelemetry {
        let label = [("component", &*ctx.id)];
        let t = &ctx.telemetry;
        let error = |reason: &str| {
            t.counter(
                "celeriac_receiver_errors_total",
                "Receiver errors, by reason.",
                &[("component", &*ctx.id), ("reason", reason)],
            )
        };
        EventTelemetry {
            messages: t.counter(
                "celeriac_celery_messages_total",
                series.messages_help,
                &label,
            ),
            events_in: t.counter(
                "celeriac_celery_events_received_total",
                "Celery events decoded.",
                &label,
            ),
            reconnects: t.counter(series.reconnects.0, series.reconnects.1, &label),
            gap_ms: t.counter(series.gap_ms.0, series.gap_ms.1, &label),
            connect_errors: error("connect"),
            lost_errors: error("connection_lost"),
            connected: t.gauge(series.connected.0, series.connected.1, &label),
            memory_drops: t.counter(
                "celeriac_celery_events_dropped_total",
                "Celery messages or events dropped before correlation, by reason.",
                &[("component", &*ctx.id), ("reason", "memory_limit")],
            ),
        }
    }
}
