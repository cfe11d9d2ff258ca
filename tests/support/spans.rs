//! Reading what the test OTLP sink (tests/python/otlp_sink.py) recorded: spans as proto3 JSON.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::OtlpSink;

/// One span as the sink recorded it (proto3 JSON: ids base64, enums by name, u64 as strings).
#[derive(Debug, Clone)]
pub struct SpanJ {
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
    pub kind: String,
    pub start: u64,
    pub end: u64,
    pub attrs: BTreeMap<String, Value>,
    pub events: Vec<(String, BTreeMap<String, Value>)>,
    pub links: Vec<String>,
    pub status: String,
    pub status_message: String,
}

impl SpanJ {
    pub fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).and_then(Value::as_str).unwrap_or("")
    }
    pub fn ms(&self) -> f64 {
        (self.end as f64 - self.start as f64) / 1e6
    }
}

fn hex_id(v: &Value) -> String {
    let b = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or(""))
        .unwrap_or_default();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attrs(v: &Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for kv in v.as_array().into_iter().flatten() {
        let val = &kv["value"];
        let x = if let Some(s) = val.get("string_value") {
            s.clone()
        } else if let Some(i) = val.get("int_value") {
            // int64 is a JSON string in proto3 JSON.
            Value::from(i.as_str().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0))
        } else if let Some(d) = val.get("double_value") {
            d.clone()
        } else if let Some(b) = val.get("bool_value") {
            b.clone()
        } else {
            Value::Null
        };
        m.insert(kv["key"].as_str().unwrap_or("").to_string(), x);
    }
    m
}

fn u64_of(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or(0)
}

/// Every span object of one request the sink recorded (`{"request": {"resource_spans": ...}}`).
pub fn request_spans(r: &Value) -> impl Iterator<Item = &Value> {
    r["request"]["resource_spans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rs| rs["scope_spans"].as_array().into_iter().flatten())
        .flat_map(|ss| ss["spans"].as_array().into_iter().flatten())
}

pub fn spans(sink: &OtlpSink) -> Vec<SpanJ> {
    let mut out = Vec::new();
    for r in sink.requests() {
        if r["signal"] != "traces" {
            continue;
        }
        for s in request_spans(&r) {
            out.push(SpanJ {
                trace_id: hex_id(&s["trace_id"]),
                span_id: hex_id(&s["span_id"]),
                parent: hex_id(&s["parent_span_id"]),
                name: s["name"].as_str().unwrap_or("").into(),
                kind: s["kind"].as_str().unwrap_or("").into(),
                start: u64_of(&s["start_time_unix_nano"]),
                end: u64_of(&s["end_time_unix_nano"]),
                attrs: attrs(&s["attributes"]),
                events: s["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap_or("").to_string(),
                            attrs(&e["attributes"]),
                        )
                    })
                    .collect(),
                links: s["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| hex_id(&l["span_id"]))
                    .collect(),
                status: s["status"]["code"].as_str().unwrap_or("").into(),
                status_message: s["status"]["message"].as_str().unwrap_or("").into(),
            });
        }
    }
    out
}
