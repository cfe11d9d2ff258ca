//! What the benches share: the captured Redis fixture's Celery events
//! (`tests/fixtures/celery-events-redis.jsonl`). Used by `benches/ui_view.rs` and the
//! `task-memory` example (`bench/task_memory.rs`).

use celeriac::celery::envelope::decode_envelope;
use celeriac::celery::event::CeleryEvent;

/// The captured fixture's events (17 tasks' lifecycles and heartbeats): the messages on the
/// `celeryev` channels, decoded as the receiver decodes them.
pub fn fixture_events() -> Result<Vec<CeleryEvent>, String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/celery-events-redis.jsonl"
    );
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if v["channel"]
            .as_str()
            .is_some_and(|c| c.contains("celeryev"))
        {
            if let Some(d) = v["data"].as_str() {
                let _ = decode_envelope(d.as_bytes(), &mut out);
            }
        }
    }
    Ok(out)
}
