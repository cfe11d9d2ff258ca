//! The Celery domain: the typed event model, decoding of kombu envelopes
//! (Redis) and bare message bodies (AMQP) from the broker, accounting of dropped input.

mod b64;
pub mod drops;
pub mod envelope;
pub mod event;
mod scan;
