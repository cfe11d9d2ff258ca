//! Exporters: the ends of pipelines. One file per component.

pub mod backoff;
pub mod debug;
pub mod logs;
pub mod otlp;
pub mod prom;
pub mod prometheus;
pub mod prometheus_remote_write;
pub mod retry;
pub mod sending_queue;
