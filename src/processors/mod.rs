//! Processors: per-pipeline stages between receivers and exporters. One file per component.

pub mod batch;
pub mod memory_limiter;
