//! Receivers: where data enters the agent. One file per component.

pub mod celery_redis;
mod pubsub;
pub mod redis_queues;
