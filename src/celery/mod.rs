//! The Celery domain: the typed event model, decoding of kombu envelopes from the broker.

mod b64;
pub mod envelope;
pub mod event;
mod scan;
