//! Connectors: components that end one pipeline and feed others. One folder or file each.

pub mod celery_correlate;
