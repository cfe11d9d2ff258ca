//! Exporters: the ends of pipelines. One file per component.

pub mod debug;
pub mod logs;
pub mod otlp;
pub mod prometheus;
