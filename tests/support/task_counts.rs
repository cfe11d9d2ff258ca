//! Task counts of the end-to-end tests (Redis and RabbitMQ alike): what celeriac's scrape says,
//! per lifecycle event and task name, next to what the client script expected.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Sample;

pub const EVENTS: [&str; 7] = [
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
];

/// `{event: {task name: count}}` from celeriac's scrape.
pub fn scraped_counts(samples: &[Sample]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ev in EVENTS {
        let name = format!("celery_task_{ev}_total");
        for (n, labels, v) in samples {
            if *n == name && *v > 0.0 {
                *out.entry(ev.to_string())
                    .or_default()
                    .entry(labels["name"].clone())
                    .or_default() += *v as u64;
            }
        }
    }
    out
}

/// `{event: {task name: count}}` the client script (`client.py run_mix`) expected.
pub fn expected_counts(v: &Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (ev, per) in v["expected"].as_object().expect("expected") {
        for (name, n) in per.as_object().expect("per name") {
            let n = n.as_u64().expect("count");
            if n > 0 {
                out.entry(ev.clone()).or_default().insert(name.clone(), n);
            }
        }
    }
    out
}
