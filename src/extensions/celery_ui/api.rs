//! Flower's REST API shapes, built from the correlator's view.
//!
//! Field names are Flower 2.2's: a task is Celery's `events.state.Task.as_dict()` (31 keys, with
//! `worker` replaced by the worker's node name), `/api/tasks` is an object of task id → task in
//! the listed order, `/api/workers` maps a node name to the answers of the remote-control methods
//! plus `timestamp`, `/api/task/types` is `{"task-types": [...]}` and `/api/queues/length` is
//! `{"active_queues": [{"name", "messages"}]}`. Differences are documented in the README
//! ("Replacing Flower").

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};

use super::page::RedactConfig;
use crate::connectors::celery_correlate::view::{keep_tail, TaskRecord, ViewState};
use crate::time::parse_iso8601;

/// Celery's `Task.as_dict()` with Flower's `worker` → node name. `worker_always`: keep a
/// `null` worker (`/api/task/info`) instead of dropping the key (`/api/tasks`).
pub fn task_json(t: &TaskRecord, redact: &RedactConfig, worker_always: bool) -> Map<String, Json> {
    let s = |v: Option<&str>| v.map_or(Json::Null, |x| Json::String(x.to_string()));
    let f = |v: Option<f64>| v.filter(|x| x.is_finite()).map_or(Json::Null, |x| json!(x));
    let mut m = Map::new();
    m.insert("uuid".into(), json!(&*t.uuid));
    m.insert("name".into(), s(t.name.as_deref()));
    m.insert("state".into(), json!(t.state.as_str()));
    m.insert("received".into(), f(t.received));
    m.insert("sent".into(), f(t.sent));
    m.insert("started".into(), f(t.started));
    m.insert("rejected".into(), f(t.rejected));
    m.insert("succeeded".into(), f(t.succeeded));
    m.insert("failed".into(), f(t.failed));
    m.insert("retried".into(), f(t.retried));
    m.insert("revoked".into(), f(t.revoked));
    m.insert(
        "args".into(),
        t.args
            .as_deref()
            .map_or(Json::Null, |a| json!(redact.args(a))),
    );
    m.insert(
        "kwargs".into(),
        t.kwargs
            .as_deref()
            .map_or(Json::Null, |k| json!(redact.kwargs(k))),
    );
    m.insert("eta".into(), s(t.eta.as_deref()));
    m.insert("expires".into(), s(t.expires.as_deref()));
    m.insert("retries".into(), t.retries.map_or(Json::Null, |r| json!(r)));
    match t.worker.as_deref() {
        Some(w) => {
            m.insert("worker".into(), json!(w));
        }
        None if worker_always => {
            m.insert("worker".into(), Json::Null);
        }
        None => {}
    }
    m.insert("result".into(), s(t.result.as_deref()));
    m.insert("exception".into(), s(t.exception.as_deref()));
    m.insert(
        "timestamp".into(),
        if t.timestamp > 0.0 {
            f(Some(t.timestamp))
        } else {
            Json::Null
        },
    );
    m.insert("runtime".into(), f(t.runtime));
    m.insert("traceback".into(), s(t.traceback.as_deref()));
    m.insert("exchange".into(), s(t.exchange.as_deref()));
    m.insert("routing_key".into(), s(t.routing_key.as_deref()));
    m.insert("clock".into(), json!(t.clock.unwrap_or(0)));
    m.insert("client".into(), s(t.client.as_deref()));
    m.insert("root".into(), s(t.root_id.as_deref()));
    m.insert("root_id".into(), s(t.root_id.as_deref()));
    m.insert("parent".into(), s(t.parent_id.as_deref()));
    m.insert("parent_id".into(), s(t.parent_id.as_deref()));
    m.insert(
        "children".into(),
        Json::Array(t.children.iter().map(|c| json!(&**c)).collect()),
    );
    m
}

/// What tasks are sorted by: `/api/tasks` takes Flower's four (`name`, `state`, `received`,
/// `started`), the tasks page any of its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    State,
    Received,
    Started,
    Args,
    Kwargs,
    Result,
    Runtime,
    Worker,
}

impl SortKey {
    /// Every key with its name (Flower's column `data` names).
    pub const ALL: [(&'static str, SortKey); 9] = [
        ("name", SortKey::Name),
        ("state", SortKey::State),
        ("args", SortKey::Args),
        ("kwargs", SortKey::Kwargs),
        ("result", SortKey::Result),
        ("received", SortKey::Received),
        ("started", SortKey::Started),
        ("runtime", SortKey::Runtime),
        ("worker", SortKey::Worker),
    ];

    pub fn from_name(name: &str) -> Option<SortKey> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("", |(n, _)| n)
    }

    /// Flower's order (`_task_sort_key`): tasks without the value first, then by value
    /// (text case-insensitively), then by id.
    fn cmp(self, a: &TaskRecord, b: &TaskRecord) -> Ordering {
        let text = |x: Option<&str>, y: Option<&str>| match (x, y) {
            (Some(x), Some(y)) => x
                .bytes()
                .map(|c| c.to_ascii_lowercase())
                .cmp(y.bytes().map(|c| c.to_ascii_lowercase())),
            (x, y) => x.is_some().cmp(&y.is_some()),
        };
        let o = match self {
            SortKey::Name => text(a.name.as_deref(), b.name.as_deref()),
            SortKey::State => text(Some(a.state.as_str()), Some(b.state.as_str())),
            SortKey::Args => text(a.args.as_deref(), b.args.as_deref()),
            SortKey::Kwargs => text(a.kwargs.as_deref(), b.kwargs.as_deref()),
            SortKey::Result => text(a.result.as_deref(), b.result.as_deref()),
            SortKey::Worker => text(a.worker.as_deref(), b.worker.as_deref()),
            SortKey::Received => cmp_opt_f64(a.received, b.received),
            SortKey::Started => cmp_opt_f64(a.started, b.started),
            SortKey::Runtime => cmp_opt_f64(a.runtime, b.runtime),
        };
        o.then_with(|| a.uuid.cmp(&b.uuid))
    }
}

/// `/api/tasks` query parameters (Flower's names).
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub limit: Option<usize>,
    pub offset: usize,
    pub state: Option<String>,
    pub workername: Option<String>,
    pub taskname: Option<String>,
    pub received_start: Option<f64>,
    pub received_end: Option<f64>,
    /// Key and descending.
    pub sort_by: Option<(SortKey, bool)>,
    /// Flower's `search=` ([`super::search`]).
    pub search: Option<super::search::Query>,
}

impl TaskQuery {
    pub fn parse(pairs: &[(String, String)]) -> Result<TaskQuery, String> {
        let mut q = TaskQuery::default();
        let all = |v: &str| (!v.is_empty() && v != "All").then(|| v.to_string());
        for (k, v) in pairs {
            match k.as_str() {
                "limit" if !v.is_empty() => {
                    q.limit = Some(v.parse().map_err(|_| format!("invalid limit '{v}'"))?)
                }
                "offset" if !v.is_empty() => {
                    let o: i64 = v.parse().map_err(|_| format!("invalid offset '{v}'"))?;
                    q.offset = o.max(0) as usize;
                }
                "state" => q.state = all(v),
                "search" => {
                    q.search = match super::search::parse(v)? {
                        super::search::Query::All => None,
                        s => Some(s),
                    }
                }
                "workername" => q.workername = all(v),
                "taskname" => q.taskname = all(v),
                "received_start" | "received_end" if !v.is_empty() => {
                    let t = parse_minute(v).ok_or_else(|| {
                        "Invalid received_start or received_end, expected format 'YYYY-MM-DD HH:MM'"
                            .to_string()
                    })?;
                    if k == "received_start" {
                        q.received_start = Some(t);
                    } else {
                        q.received_end = Some(t);
                    }
                }
                "sort_by" if !v.is_empty() => {
                    let desc = v.starts_with('-');
                    let key = match SortKey::from_name(v.trim_start_matches('-')) {
                        Some(
                            k @ (SortKey::Name
                            | SortKey::State
                            | SortKey::Received
                            | SortKey::Started),
                        ) => k,
                        _ => {
                            return Err(format!(
                            "Invalid sort_by '{v}', expected one of name, received, started, state"
                        ))
                        }
                    };
                    q.sort_by = Some((key, desc));
                }
                _ => {}
            }
        }
        Ok(q)
    }

    pub fn matches(&self, t: &TaskRecord) -> bool {
        if let Some(s) = &self.state {
            if t.state.as_str() != s {
                return false;
            }
        }
        if let Some(w) = &self.workername {
            if t.worker.as_deref() != Some(w.as_str()) {
                return false;
            }
        }
        if let Some(n) = &self.taskname {
            if t.name.as_deref() != Some(n.as_str()) {
                return false;
            }
        }
        if let Some(s) = &self.search {
            if !super::search::matches(s, t) {
                return false;
            }
        }
        if self.received_start.is_some() || self.received_end.is_some() {
            let Some(r) = t.received else { return false };
            if self.received_start.is_some_and(|s| r < s)
                || self.received_end.is_some_and(|e| r > e)
            {
                return false;
            }
        }
        true
    }
}

/// `YYYY-MM-DD HH:MM`, read as UTC.
fn parse_minute(v: &str) -> Option<f64> {
    let (date, time) = v.trim().split_once(' ')?;
    if time.len() != 5 || date.len() != 10 {
        return None;
    }
    parse_iso8601(&format!("{date}T{time}:00Z"))
}

fn cmp_opt_f64(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The tasks `q` selects, in Flower's order: least recently updated first unless `sort_by`.
pub fn select<'a>(v: &'a ViewState, q: &TaskQuery) -> Vec<&'a TaskRecord> {
    let matching = v.oldest_first().filter(|t| q.matches(t));
    match q.sort_by {
        // No sort: stop as soon as the page is full.
        None => matching
            .skip(q.offset)
            .take(q.limit.unwrap_or(usize::MAX))
            .collect(),
        Some(sort) => sorted_page(matching.collect(), sort, q.offset, q.limit),
    }
}

/// One page of the tasks `q` selects over the whole view, sorted by `sort`, and how many match.
pub fn page<'a>(
    v: &'a ViewState,
    q: &TaskQuery,
    sort: (SortKey, bool),
) -> (Vec<&'a TaskRecord>, usize) {
    let all: Vec<&TaskRecord> = v.oldest_first().filter(|t| q.matches(t)).collect();
    let total = all.len();
    (sorted_page(all, sort, q.offset, q.limit), total)
}

/// `offset..offset + limit` of `all` in `sort` order. Only the first `offset + limit` are
/// sorted (a selection first, as Flower's `heapq.nlargest`), so deep pages of 100k tasks stay
/// cheap.
fn sorted_page(
    mut all: Vec<&TaskRecord>,
    (key, desc): (SortKey, bool),
    offset: usize,
    limit: Option<usize>,
) -> Vec<&TaskRecord> {
    let order = |a: &&TaskRecord, b: &&TaskRecord| {
        let o = key.cmp(a, b);
        if desc {
            o.reverse()
        } else {
            o
        }
    };
    let end = limit.map_or(all.len(), |l| offset.saturating_add(l).min(all.len()));
    if end == 0 || offset >= end {
        return Vec::new();
    }
    if end < all.len() {
        all.select_nth_unstable_by(end - 1, order);
        all.truncate(end);
    }
    all.sort_unstable_by(order);
    all.drain(offset..).collect()
}

/// `/api/tasks`: an object of id → task, in the selected order (written by hand because a JSON
/// map would sort the keys).
pub fn tasks_body(v: &ViewState, q: &TaskQuery, redact: &RedactConfig) -> String {
    let mut out = String::from("{");
    for (i, t) in select(v, q).into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&Json::String(t.uuid.to_string()).to_string());
        out.push_str(": ");
        out.push_str(&Json::Object(task_json(t, redact, false)).to_string());
    }
    out.push('}');
    out
}

/// What remote control last told about each worker: method → answer, plus `timestamp`.
pub type Inspected = BTreeMap<String, Map<String, Json>>;

/// `/api/workers`: every worker remote control answered for, plus workers known only from their
/// events (with just the `timestamp` of their last event).
pub fn workers_body(v: &ViewState, inspected: &Inspected, only: Option<&str>) -> Json {
    let mut out = Map::new();
    for (name, info) in inspected {
        out.insert(name.clone(), Json::Object(info.clone()));
    }
    for (name, w) in v.workers() {
        if !out.contains_key(name) {
            let mut m = Map::new();
            m.insert("timestamp".into(), json!(w.timestamp));
            out.insert(name.clone(), Json::Object(m));
        }
    }
    if let Some(o) = only {
        out.retain(|k, _| k == o);
    }
    Json::Object(out)
}

/// `/api/workers?status=1`: node name → alive (from events).
pub fn workers_status(v: &ViewState, now: f64) -> Json {
    Json::Object(
        v.workers()
            .iter()
            .map(|(n, w)| (n.clone(), json!(w.alive(now))))
            .collect(),
    )
}

pub fn task_types_body(v: &ViewState) -> Json {
    json!({ "task-types": v.names().collect::<Vec<_>>() })
}

pub fn queues_body(lengths: &[(String, u64)]) -> Json {
    json!({
        "active_queues": lengths
            .iter()
            .map(|(n, m)| json!({"name": n, "messages": m}))
            .collect::<Vec<_>>()
    })
}

/// Recent tasks shown in the live page's table.
pub const PAGE_TASKS: usize = 100;
/// Failed tasks shown in the live page, looked for among this many most recent tasks.
pub const PAGE_FAILED: usize = 50;
pub const FAILED_SCAN: usize = 5000;

/// Traceback bytes a live-page update carries per failed task.
pub const PAGE_TRACEBACK: usize = 2048;

/// The live page's data: one message of the event stream.
pub fn dashboard(
    v: &ViewState,
    inspected: &Inspected,
    queues: &[(String, u64)],
    redact: &RedactConfig,
    now: f64,
) -> Json {
    let workers: Vec<Json> = {
        let mut names: Vec<&String> = v.workers().keys().collect();
        for n in inspected.keys() {
            if !v.workers().contains_key(n) {
                names.push(n);
            }
        }
        names
            .into_iter()
            .map(|n| {
                let ev = v.workers().get(n);
                let info = inspected.get(n);
                let stats = info.and_then(|i| i.get("stats"));
                let pool = stats.and_then(|s| s.get("pool"));
                json!({
                    "hostname": n,
                    "alive": ev.is_some_and(|w| w.alive(now)),
                    "active": ev.and_then(|w| w.active),
                    "processed": ev.and_then(|w| w.processed),
                    "loadavg": ev.and_then(|w| w.loadavg),
                    "last_heartbeat": ev.and_then(|w| w.heartbeats.last().copied()),
                    "sw_ver": ev.and_then(|w| w.sw_ver.clone()),
                    "pool_size": pool.and_then(|p| p.get("max-concurrency")).cloned(),
                    "pool_processes": pool.and_then(|p| p.get("processes")).cloned(),
                    "prefetch_count": stats.and_then(|s| s.get("prefetch_count")).cloned(),
                    "rusage": stats.and_then(|s| s.get("rusage")).cloned(),
                    "queues": info.and_then(|i| i.get("active_queues")).map(|q| {
                        q.as_array().map(|a| a.iter().filter_map(|x| x.get("name").cloned()).collect::<Vec<_>>()).unwrap_or_default()
                    }),
                    "active_tasks": info.and_then(|i| i.get("active")).and_then(Json::as_array).map(Vec::len),
                    "reserved_tasks": info.and_then(|i| i.get("reserved")).and_then(Json::as_array).map(Vec::len),
                    "scheduled_tasks": info.and_then(|i| i.get("scheduled")).and_then(Json::as_array).map(Vec::len),
                    "registered": info.and_then(|i| i.get("registered")).cloned(),
                    "inspected_at": info.and_then(|i| i.get("timestamp")).cloned(),
                })
            })
            .collect()
    };
    let counts: Vec<Json> = v
        .counts()
        .iter()
        .map(|((name, ev), n)| json!({"name": &**name, "event": ev, "count": n}))
        .collect();
    let row = |t: &TaskRecord| {
        json!({
            "uuid": &*t.uuid,
            "name": t.name.as_deref(),
            "state": t.state.as_str(),
            "received": t.received,
            "started": t.started,
            "timestamp": t.timestamp,
            "runtime": t.runtime,
            "worker": t.worker.as_deref(),
            "args": t.args.as_deref().map(|a| redact.args(a)),
            "kwargs": t.kwargs.as_deref().map(|k| redact.kwargs(k)),
        })
    };
    let tasks: Vec<Json> = v.recent().take(PAGE_TASKS).map(row).collect();
    let failed: Vec<Json> = v
        .recent()
        .take(FAILED_SCAN)
        .filter(|t| t.state.as_str() == "FAILURE")
        .take(PAGE_FAILED)
        .map(|t| {
            let mut r = row(t);
            r["exception"] = json!(t.exception.as_deref());
            // The end of a traceback says the most; the task page has all of it.
            r["traceback"] = json!(t
                .traceback
                .as_deref()
                .map(|tb| keep_tail(tb, PAGE_TRACEBACK)));
            r
        })
        .collect();
    json!({
        "now": now,
        "workers": workers,
        "counts": counts,
        "queues": queues.iter().map(|(n, m)| json!({"name": n, "messages": m})).collect::<Vec<_>>(),
        "tasks": tasks,
        "failed": failed,
        "tasks_tracked": v.task_count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::celery::event::{CeleryEvent, EventKind, TaskFields};
    use crate::connectors::celery_correlate::view::View;

    fn ev(kind: &str, id: &str, ts: f64, name: &str, host: &str) -> CeleryEvent {
        CeleryEvent {
            kind: EventKind::from_type(kind),
            hostname: host.into(),
            timestamp: ts,
            task: Some(TaskFields {
                uuid: id.into(),
                name: Some(name.into()),
                args: Some("({'password': 'x'},)".into()),
                ..TaskFields::default()
            }),
            ..CeleryEvent::default()
        }
    }

    fn view() -> View {
        let v = View::new(100);
        v.enable();
        v.apply(
            &[
                ev("task-received", "a", 1_800_000_000.0, "n.one", "w1@h"),
                ev("task-received", "b", 1_800_000_060.0, "n.two", "w2@h"),
                ev("task-succeeded", "a", 1_800_000_001.0, "n.one", "w1@h"),
                ev("task-received", "c", 1_800_000_120.0, "n.one", "w2@h"),
            ],
            0.0,
        );
        v
    }

    fn q(pairs: &[(&str, &str)]) -> Result<TaskQuery, String> {
        TaskQuery::parse(
            &pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    fn ids(v: &View, query: TaskQuery) -> Vec<String> {
        v.read(|s| {
            select(s, &query)
                .iter()
                .map(|t| t.uuid.to_string())
                .collect()
        })
    }

    #[test]
    fn filters_sorts_and_pages_like_flower() {
        let v = view();
        // Least recently updated first by default (Celery's LRU order).
        assert_eq!(ids(&v, q(&[]).unwrap()), ["b", "a", "c"]);
        assert_eq!(ids(&v, q(&[("state", "SUCCESS")]).unwrap()), ["a"]);
        assert_eq!(ids(&v, q(&[("workername", "w2@h")]).unwrap()), ["b", "c"]);
        assert_eq!(
            ids(&v, q(&[("taskname", "n.one"), ("state", "All")]).unwrap()),
            ["a", "c"]
        );
        assert_eq!(
            ids(&v, q(&[("sort_by", "-received")]).unwrap()),
            ["c", "b", "a"]
        );
        assert_eq!(
            ids(
                &v,
                q(&[("sort_by", "name"), ("limit", "1"), ("offset", "1")]).unwrap()
            ),
            ["c"]
        );
        // 1_800_000_060 is 2027-01-15 08:01 UTC.
        assert_eq!(
            ids(
                &v,
                q(&[
                    ("received_start", "2027-01-15 08:01"),
                    ("received_end", "2027-01-15 08:01")
                ])
                .unwrap()
            ),
            ["b"]
        );
        assert!(q(&[("sort_by", "uuid")]).is_err());
        assert!(q(&[("received_start", "yesterday")]).is_err());
        assert!(q(&[("limit", "x")]).is_err());
    }

    #[test]
    fn task_json_has_celerys_31_fields_and_redacts() {
        let v = view();
        let redact = RedactConfig {
            keys: vec!["password".into()],
            ..RedactConfig::default()
        };
        let (info, listed) = v.read(|s| {
            let t = s.task("a").unwrap();
            (task_json(t, &redact, true), task_json(t, &redact, false))
        });
        assert_eq!(info.len(), 31);
        assert_eq!(info["args"], "({'password': '***'},)");
        assert_eq!(listed["worker"], "w1@h");
        let body = v.read(|s| tasks_body(s, &q(&[]).unwrap(), &redact));
        let parsed: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.as_object().unwrap().len(), 3);
        assert!(body.find("\"b\"").unwrap() < body.find("\"a\"").unwrap());
    }

    #[test]
    fn workers_from_events_and_inspect() {
        let v = view();
        let mut inspected = Inspected::new();
        inspected.insert(
            "w1@h".into(),
            Map::from_iter([("stats".to_string(), json!({"pid": 1}))]),
        );
        let body = v.read(|s| workers_body(s, &inspected, None));
        assert_eq!(body["w1@h"]["stats"]["pid"], 1);
        assert!(body["w2@h"]["timestamp"].is_number());
        let one = v.read(|s| workers_body(s, &inspected, Some("w2@h")));
        assert_eq!(one.as_object().unwrap().len(), 1);
        let types = v.read(task_types_body);
        assert_eq!(types["task-types"], json!(["n.one", "n.two"]));
    }

    #[test]
    fn dashboard_rows_are_small() {
        let v = View::new(10);
        v.enable();
        let mut e = ev("task-failed", "f", 1.0, "n.bad", "w1@h");
        if let Some(t) = e.task.as_mut() {
            t.exception = Some("KeyError('x')".into());
            t.traceback = Some(format!(
                "Traceback (most recent call last):\n{}KeyError: 'x'",
                "  frame\n".repeat(1000)
            ));
        }
        v.apply(&[e], 0.0);
        let d = v.read(|s| dashboard(s, &Inspected::new(), &[], &RedactConfig::default(), 2.0));
        assert!(d["tasks"][0].get("traceback").is_none());
        let tb = d["failed"][0]["traceback"].as_str().unwrap();
        assert!(
            tb.starts_with('…') && tb.ends_with("KeyError: 'x'") && tb.len() <= PAGE_TRACEBACK + 3
        );
        assert_eq!(d["failed"][0]["exception"], "KeyError('x')");
    }
}
