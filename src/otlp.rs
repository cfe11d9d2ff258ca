//! Building and reading OTLP data (the `opentelemetry_proto` types), shared by every component
//! that makes or reads it outside the OTLP receiver and the pipeline: attributes, a resource,
//! celeriac's instrumentation scope, the clock in Unix nanoseconds, and an attribute value as
//! text or JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value as Json};

/// An attribute.
pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute.
pub fn str_kv(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

/// An integer attribute.
pub fn int_kv(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// A double attribute.
pub fn double_kv(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

/// A boolean attribute.
pub fn bool_kv(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

/// A resource of these attributes.
pub fn resource(attributes: Vec<KeyValue>) -> Resource {
    Resource {
        attributes,
        ..Default::default()
    }
}

/// The scope celeriac's component `name` (`celeriac.prometheus`, ...) stamps on what it makes.
pub fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// One resource's metrics, all from the scope `scope` (see [`scope`]).
pub fn resource_metrics(
    resource_attributes: Vec<KeyValue>,
    scope_name: &str,
    metrics: Vec<Metric>,
) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource(resource_attributes)),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope(scope_name)),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Now, in Unix nanoseconds (0 for a clock before 1970).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An attribute value as a label value: scalars as text, arrays and maps as JSON.
pub fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(_) => any_to_json(v).to_string(),
        None => String::new(),
    }
}

/// An attribute value as JSON: bytes as lowercase hex, a non-finite double as `null`.
pub fn any_to_json(v: &AnyValue) -> Json {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Json::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Json::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Json::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(any_to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Json::Object(attributes_json(&kv.values, &[])),
        Some(any_value::Value::BytesValue(b)) => Json::String(hex(b)),
        // Dictionary-encoded strings only appear inside profiles, never in logs or spans.
        Some(any_value::Value::StringValueStrindex(_)) | None => Json::Null,
    }
}

/// Attributes as a JSON object, leaving out those without a value and the keys in `skip`.
pub fn attributes_json(attrs: &[KeyValue], skip: &[&str]) -> Map<String, Json> {
    let mut m = Map::new();
    put_attributes(&mut m, attrs, skip);
    m
}

/// Attributes into a JSON object, leaving out those without a value and the keys in `skip`.
pub fn put_attributes(m: &mut Map<String, Json>, attrs: &[KeyValue], skip: &[&str]) {
    for kv in attrs {
        if skip.contains(&kv.key.as_str()) {
            continue;
        }
        if let Some(v) = &kv.value {
            m.insert(kv.key.clone(), any_to_json(v));
        }
    }
}

/// Lowercase hex (trace and span ids).
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}
