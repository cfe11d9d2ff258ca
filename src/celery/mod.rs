//! The Celery domain: the typed event model, decoding of kombu envelopes from the broker.

pub mod envelope;
pub mod event;
mod scan;
