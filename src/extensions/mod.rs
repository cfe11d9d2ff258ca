//! Extensions: components beside the pipelines (the collector's `extensions:`), enabled by
//! `service.extensions`. One folder or file each.

pub mod auth;
pub mod basicauth;
pub mod bearertokenauth;
pub mod celery_ui;
pub mod file_storage;
pub mod health_check;
pub mod pprof;
pub mod zpages;
