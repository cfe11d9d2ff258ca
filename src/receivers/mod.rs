//! Receivers: where data enters the agent. One file per component.

pub mod amqp_queues;
pub mod celery_amqp;
pub mod celery_redis;
mod event_telemetry;
pub mod filelog;
pub mod internal_metrics;
pub mod otlp;
pub mod prometheus;
mod pubsub;
mod queue_metrics;
pub mod redis_queues;
#[cfg(test)]
mod testing;
