//! Exporters: the ends of pipelines. One file or folder per component; beside them what several
//! share: [`retry`] (`retry_on_failure` and the pacing of a request's attempts), [`backoff`]
//! (jittered exponential backoff), [`sending_queue`] (the file queue) and [`prom`] (metrics as
//! Prometheus series).

pub mod backoff;
pub mod debug;
pub mod logs;
pub mod otlp;
pub mod prom;
pub mod prometheus;
pub mod prometheus_remote_write;
pub mod retry;
pub mod sending_queue;
