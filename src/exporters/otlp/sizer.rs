//! What the OTLP exporters' `sending_queue.queue_size` counts: `sending_queue.sizer`, as in
//! the collector's exporterhelper (since v0.123): `requests` (batches, the default), `items`
//! (spans, metric data points, log records) or `bytes` (the size of the batch's OTLP export
//! request body, as it goes on the wire before compression).
//!
//! This module owns the unit and the size of a batch in it; the in-memory queue that is bounded
//! by it is [`super::run_memory_queue`]. As in the collector, the bound covers the batches that
//! wait and those being exported (a batch's share is given back once it is delivered or
//! dropped), so `sizer: bytes` caps the memory the queue holds.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// The unit of `sending_queue.queue_size`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    /// Batches (one export call each).
    #[default]
    Requests,
    /// Spans, metric data points or log records.
    Items,
    /// Bytes of the encoded export request.
    Bytes,
}

impl Sizer {
    /// The size of `batch` in this unit. A batch still in its wire form is measured as it is;
    /// a typed one by its encoded length (computed, not encoded).
    pub fn size_of(self, batch: &Signal) -> u64 {
        match self {
            Sizer::Requests => 1,
            Sizer::Items => batch.item_count() as u64,
            Sizer::Bytes => encoded_len(batch),
        }
    }
}

impl fmt::Display for Sizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sizer::Requests => "requests",
            Sizer::Items => "items",
            Sizer::Bytes => "bytes",
        })
    }
}

/// Bytes of the batch's `Export*ServiceRequest` body: its `Resource*` entries, each as field 1.
fn encoded_len(batch: &Signal) -> u64 {
    use prost::encoding::message::encoded_len;
    let n = match batch {
        Signal::Encoded(e) => e.body.len(),
        Signal::Traces(v) => v.iter().map(|r| encoded_len(1, r)).sum(),
        Signal::Metrics(v) => v.iter().map(|r| encoded_len(1, r)).sum(),
        Signal::Logs(v) => v.iter().map(|r| encoded_len(1, r)).sum(),
        // Not accepted by the OTLP exporters.
        Signal::Celery(_) => 0,
    };
    n as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::otlp::wire::Encoded;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::sync::Arc;

    fn traces(resources: usize, spans: usize) -> Signal {
        let span = |i: usize| Span {
            name: format!("span {i}"),
            span_id: vec![i as u8; 8],
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("v".repeat(i))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        Signal::Traces(Arc::new(
            (0..resources)
                .map(|_| ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: (0..spans).map(span).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        ))
    }

    #[test]
    fn bytes_are_the_encoded_request_body_typed_or_not() {
        let typed = traces(3, 40);
        let encoded = Encoded::of(&typed).unwrap();
        assert_eq!(Sizer::Bytes.size_of(&typed), encoded.body.len() as u64);
        let wire = Signal::Encoded(encoded.clone());
        assert_eq!(Sizer::Bytes.size_of(&wire), encoded.body.len() as u64);
        assert_eq!(Sizer::Items.size_of(&typed), 120);
        assert_eq!(Sizer::Items.size_of(&wire), 120);
        assert_eq!(Sizer::Requests.size_of(&wire), 1);
    }

    #[test]
    fn names_are_the_collectors() {
        for (s, name) in [
            (Sizer::Requests, "requests"),
            (Sizer::Items, "items"),
            (Sizer::Bytes, "bytes"),
        ] {
            assert_eq!(s.to_string(), name);
            let back: Sizer = serde_yaml_ng::from_str(name).unwrap();
            assert_eq!(back, s);
        }
        assert!(serde_yaml_ng::from_str::<Sizer>("spans").is_err());
    }
}
