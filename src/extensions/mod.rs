//! Extensions: components beside the pipelines (the collector's `extensions:`), enabled by
//! `service.extensions`. One folder or file each.

pub mod celery_ui;
pub mod health_check;
pub mod zpages;
