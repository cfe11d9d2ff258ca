//! The worker page (`/worker/<name>`), Flower's worker view: its tabs Pool, Broker, Queues,
//! Tasks (active, scheduled, reserved, revoked), Limits, Config, System and Other, filled from
//! the worker's remote-control answers (`stats`, `active_queues`, `active`, `scheduled`,
//! `reserved`, `revoked`, `registered`, `conf`) the way Flower's `worker.html` shows them.
//!
//! Tabs are anchors (`#tab-pool`, …) switched by CSS (`:target`), so the page needs no script
//! of its own; with `read_only: false` the pool, queue and limit buttons post through the
//! shared control script (each behind a confirmation).

use std::fmt::Write;

use serde_json::{Map, Value as Json};

use super::page::{escape, page_head, page_tail, url_escape};

/// `stats` keys with a tab of their own; the rest go to Other (Flower's split).
const STATS_SHOWN: [&str; 9] = [
    "pool",
    "pid",
    "prefetch_count",
    "autoscaler",
    "consumer",
    "broker",
    "clock",
    "total",
    "rusage",
];

/// Flower's `humanize` of a key: `-`/`_` to spaces, `ssl`/`uri`/`url`/`uuid`/`eta` upper-cased,
/// first letter capitalised (except `args`/`kwargs`).
pub fn humanize_key(k: &str) -> String {
    let mut s = k.replace(['-', '_'], " ");
    for w in ["ssl", "uri", "url", "uuid", "eta"] {
        s = s.replace(w, &w.to_uppercase());
    }
    if s == "args" || s == "kwargs" {
        return s;
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }
}

/// A value as Flower's template prints it: strings bare, lists of scalars joined with `, `,
/// `None` empty, the rest as Python would print it (`True`, dicts as JSON-ish text).
fn value_text(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            a.iter().map(value_text).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

fn kv_table(
    html: &mut String,
    id: &str,
    caption: &str,
    rows: &mut dyn Iterator<Item = (String, String)>,
) {
    let _ = write!(
        html,
        "<table class=\"kv\" id=\"{id}\"><caption>{}</caption>",
        escape(caption)
    );
    for (k, v) in rows {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&k),
            escape(&v)
        );
    }
    html.push_str("</table>");
}

fn obj(v: Option<&Json>) -> impl Iterator<Item = (&String, &Json)> {
    v.and_then(Json::as_object).into_iter().flatten()
}

fn list(v: Option<&Json>) -> &[Json] {
    v.and_then(Json::as_array).map_or(&[], Vec::as_slice)
}

/// A confirmation button posting to the control API (see `control.js`).
fn button(
    html: &mut String,
    id: &str,
    label: &str,
    post: &str,
    confirm: &str,
    prompt: Option<(&str, &str)>,
) {
    let _ = write!(
        html,
        "<button id=\"{}\" data-post=\"{}\" data-confirm=\"{}\"",
        escape(id),
        escape(post),
        escape(confirm)
    );
    if let Some((text, param)) = prompt {
        let _ = write!(
            html,
            " data-prompt=\"{}\" data-param=\"{}\"",
            escape(text),
            escape(param)
        );
    }
    let _ = write!(html, ">{}</button> ", escape(label));
}

/// The page of worker `name` from its remote-control answers (`info`: method → answer).
pub fn render(name: &str, info: &Map<String, Json>, read_only: bool, prefix: &str) -> String {
    let stats = info.get("stats");
    let stat = |k: &str| stats.and_then(|s| s.get(k));
    let enc = url_escape(name);
    let api = |path: &str| format!("{prefix}/api/{path}/{enc}");
    let mut html = String::with_capacity(32 * 1024);
    page_head(&mut html, prefix, &format!("Worker {name}"), "worker");
    let _ = write!(html, "<h1 id=\"workername\">{}</h1>", escape(name));
    if read_only {
        html.push_str(
            "<p class=\"muted\" id=\"read-only\">Control actions are off (<code>read_only: true</code>).</p>",
        );
    } else {
        html.push_str("<p class=\"actions\">");
        button(
            &mut html,
            "worker-pool-restart",
            "Restart pool",
            &api("worker/pool/restart"),
            &format!("Restart the pool of {name}? (needs worker_pool_restarts)"),
            None,
        );
        button(
            &mut html,
            "worker-shutdown",
            "Shut down",
            &api("worker/shutdown"),
            &format!("Shut down worker {name}?"),
            None,
        );
        html.push_str("</p><p id=\"control-result\" role=\"status\"></p>");
    }
    let other: Vec<(&String, &Json)> = obj(stats)
        .filter(|(k, _)| !STATS_SHOWN.contains(&k.as_str()))
        .collect();
    html.push_str("<nav class=\"tabs-nav\" aria-label=\"Worker information\">");
    let mut tabs = vec![
        ("pool", "Pool"),
        ("broker", "Broker"),
        ("queues", "Queues"),
        ("tasks", "Tasks"),
        ("limits", "Limits"),
        ("config", "Config"),
        ("system", "System"),
    ];
    if !other.is_empty() {
        tabs.push(("other", "Other"));
    }
    for (id, label) in &tabs {
        let _ = write!(
            html,
            "<a id=\"worker-tab-{id}\" href=\"#tab-{id}\">{label}</a> "
        );
    }
    html.push_str("</nav><div class=\"tabs\">");

    // Pool: the pool's own stats, pid and prefetch, then the autoscaler.
    html.push_str("<section class=\"tab-pane\" id=\"tab-pool\"><h2>Pool</h2>");
    let mut rows: Vec<(String, String)> = obj(stat("pool"))
        .map(|(k, v)| (humanize_key(k), value_text(v)))
        .collect();
    rows.push((
        "Worker PID".into(),
        stat("pid").map_or("N/A".into(), value_text),
    ));
    rows.push((
        "Prefetch Count".into(),
        stat("prefetch_count").map_or("N/A".into(), value_text),
    ));
    kv_table(
        &mut html,
        "worker-pool",
        "Worker pool options",
        &mut rows.into_iter(),
    );
    if !read_only {
        html.push_str("<p class=\"actions\">");
        button(
            &mut html,
            "worker-pool-grow",
            "Grow",
            &format!("{}?n=1", api("worker/pool/grow")),
            &format!("Add one pool process to {name}?"),
            None,
        );
        button(
            &mut html,
            "worker-pool-shrink",
            "Shrink",
            &format!("{}?n=1", api("worker/pool/shrink")),
            &format!("Remove one pool process from {name}?"),
            None,
        );
        html.push_str("</p>");
    }
    if stat("autoscaler").is_some_and(|a| a.as_object().is_some_and(|m| !m.is_empty())) {
        kv_table(
            &mut html,
            "worker-autoscaler",
            "Autoscaler options",
            &mut obj(stat("autoscaler")).map(|(k, v)| (humanize_key(k), value_text(v))),
        );
    }
    html.push_str("</section>");

    // Broker: `stats.consumer.broker` when there, else `stats.broker` (as Flower).
    html.push_str("<section class=\"tab-pane\" id=\"tab-broker\"><h2>Broker</h2>");
    let broker = stat("consumer")
        .and_then(|c| c.get("broker"))
        .or_else(|| stat("broker"));
    kv_table(
        &mut html,
        "worker-broker",
        "Broker options",
        &mut obj(broker).map(|(k, v)| (humanize_key(k), value_text(v))),
    );
    html.push_str("</section>");

    // Queues: `active_queues`.
    html.push_str("<section class=\"tab-pane\" id=\"tab-queues\"><h2>Queues</h2><table id=\"worker-queues\"><caption>Active queues being consumed from</caption><thead><tr><th>Name</th><th>Exclusive</th><th>Durable</th><th>Routing key</th><th>No ACK</th><th>Alias</th><th>Queue arguments</th><th>Binding arguments</th><th>Auto delete</th>");
    if !read_only {
        html.push_str("<th></th>");
    }
    html.push_str("</tr></thead><tbody>");
    for q in list(info.get("active_queues")) {
        let f = |k: &str| {
            q.get(k).map_or(String::new(), |v| match v {
                Json::Null => "None".into(),
                v => value_text(v),
            })
        };
        let qname = f("name");
        html.push_str("<tr>");
        for k in [
            "name",
            "exclusive",
            "durable",
            "routing_key",
            "no_ack",
            "alias",
            "queue_arguments",
            "binding_arguments",
            "auto_delete",
        ] {
            let _ = write!(html, "<td>{}</td>", escape(&f(k)));
        }
        if !read_only {
            html.push_str("<td>");
            button(
                &mut html,
                &format!("worker-cancel-consumer-{qname}"),
                "Cancel consumer",
                &format!(
                    "{}?queue={}",
                    api("worker/queue/cancel-consumer"),
                    url_escape(&qname)
                ),
                &format!("Make {name} stop consuming {qname}?"),
                None,
            );
            html.push_str("</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    if !read_only {
        html.push_str("<p class=\"actions\">");
        button(
            &mut html,
            "worker-add-consumer",
            "Add consumer",
            &api("worker/queue/add-consumer"),
            &format!("Make {name} consume this queue?"),
            Some(("Queue to consume", "queue")),
        );
        html.push_str("</p>");
    }
    html.push_str("</section>");

    // Tasks: processed totals, then active, scheduled, reserved and revoked.
    let task_link = |id: &str| {
        format!(
            "<a href=\"{}/task/{}\">{}</a>",
            escape(prefix),
            escape(&url_escape(id)),
            escape(id)
        )
    };
    html.push_str("<section class=\"tab-pane\" id=\"tab-tasks\"><h2>Tasks</h2>");
    kv_table(
        &mut html,
        "worker-processed",
        "Processed",
        &mut obj(stat("total")).map(|(k, v)| (k.clone(), value_text(v))),
    );
    let s = |t: &Json, k: &str| t.get(k).map_or(String::new(), value_text);
    html.push_str("<table id=\"worker-active\"><caption>Active tasks</caption><thead><tr><th>Name</th><th>UUID</th><th>Ack</th><th>PID</th><th>args</th><th>kwargs</th></tr></thead><tbody>");
    for t in list(info.get("active")) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s(t, "name")),
            task_link(&s(t, "id")),
            escape(&s(t, "acknowledged")),
            escape(&s(t, "worker_pid")),
            escape(&t.get("args").map_or("N/A".into(), value_text)),
            escape(&t.get("kwargs").map_or("N/A".into(), value_text)),
        );
    }
    // Scheduled answers wrap the request (`{eta, priority, request}`); reserved ones are it.
    for (id, caption, inner) in [
        ("worker-scheduled", "Scheduled tasks", true),
        ("worker-reserved", "Reserved tasks", false),
    ] {
        let _ = write!(
            html,
            "</tbody></table><table id=\"{id}\"><caption>{caption}</caption><thead><tr><th>Name</th><th>UUID</th><th>args</th><th>kwargs</th></tr></thead><tbody>"
        );
        for t in list(info.get(&id["worker-".len()..])) {
            let r = if inner {
                t.get("request").unwrap_or(&Json::Null)
            } else {
                t
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&s(r, "name")),
                task_link(&s(r, "id")),
                escape(&s(r, "args")),
                escape(&s(r, "kwargs")),
            );
        }
    }
    html.push_str("</tbody></table><table id=\"worker-revoked\"><caption>Revoked tasks</caption><thead><tr><th>UUID</th></tr></thead><tbody>");
    for id in list(info.get("revoked")) {
        let _ = write!(html, "<tr><td>{}</td></tr>", task_link(&value_text(id)));
    }
    html.push_str("</tbody></table></section>");

    // Limits: every registered task, with rate limit and time limit controls.
    html.push_str("<section class=\"tab-pane\" id=\"tab-limits\"><h2>Limits</h2><table id=\"worker-limits\"><caption>Task limits</caption><thead><tr><th>Task</th>");
    if !read_only {
        html.push_str("<th>Rate limit</th><th>Timeouts</th>");
    }
    html.push_str("</tr></thead><tbody>");
    for t in list(info.get("registered")) {
        let full = value_text(t);
        // `registered` may carry options: `name [rate_limit=...]`.
        let task = full.split(' ').next().unwrap_or(&full).to_string();
        let _ = write!(html, "<tr><td>{}</td>", escape(&full));
        if !read_only {
            let path = |p: &str| {
                format!(
                    "{prefix}/api/task/{p}/{}?workername={enc}",
                    url_escape(&task)
                )
            };
            html.push_str("<td>");
            button(
                &mut html,
                &format!("task-rate-limit-{task}"),
                "Rate limit",
                &path("rate-limit"),
                &format!("Set the rate limit of {task} on {name}?"),
                Some(("Rate limit (e.g. 10/m)", "ratelimit")),
            );
            html.push_str("</td><td>");
            button(
                &mut html,
                &format!("task-timeout-soft-{task}"),
                "Soft",
                &path("timeout"),
                &format!("Set the soft time limit of {task} on {name}?"),
                Some(("Soft time limit (seconds)", "soft")),
            );
            button(
                &mut html,
                &format!("task-timeout-hard-{task}"),
                "Hard",
                &path("timeout"),
                &format!("Set the hard time limit of {task} on {name}?"),
                Some(("Hard time limit (seconds)", "hard")),
            );
            html.push_str("</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></section>");

    // Config: `conf`, sorted, unset options left out, each linked to Celery's docs.
    html.push_str("<section class=\"tab-pane\" id=\"tab-config\"><h2>Config</h2><table class=\"kv\" id=\"worker-config\"><caption>Configuration options</caption>");
    let mut conf: Vec<(&String, &Json)> = obj(info.get("conf"))
        .filter(|(_, v)| !v.is_null())
        .collect();
    conf.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in conf {
        let _ = write!(
            html,
            "<tr><th><a href=\"https://docs.celeryq.dev/en/latest/userguide/configuration.html#{}\" rel=\"noreferrer\">{}</a></th><td>{}</td></tr>",
            escape(&k.to_lowercase().replace('_', "-")),
            escape(k),
            escape(&value_text(v))
        );
    }
    html.push_str("</table></section>");

    // System: `stats.rusage`.
    html.push_str("<section class=\"tab-pane\" id=\"tab-system\"><h2>System</h2>");
    kv_table(
        &mut html,
        "worker-system",
        "System usage statistics",
        &mut obj(stat("rusage")).map(|(k, v)| (k.clone(), value_text(v))),
    );
    html.push_str("</section>");
    if !other.is_empty() {
        html.push_str("<section class=\"tab-pane\" id=\"tab-other\"><h2>Other</h2>");
        kv_table(
            &mut html,
            "worker-other",
            "Other statistics",
            &mut other.into_iter().map(|(k, v)| (k.clone(), value_text(v))),
        );
        html.push_str("</section>");
    }
    html.push_str("</div>");
    page_tail(&mut html, prefix);
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn humanizes_keys_as_flower() {
        assert_eq!(humanize_key("max-concurrency"), "Max concurrency");
        assert_eq!(humanize_key("uri_prefix"), "URI prefix");
        assert_eq!(humanize_key("ssl"), "SSL");
        assert_eq!(humanize_key("args"), "args");
    }

    #[test]
    fn tabs_from_inspect_answers_escaped_and_under_the_prefix() {
        let info = json!({
            "stats": {"pool": {"max-concurrency": 2, "processes": [11, 12]}, "pid": 10,
                      "prefetch_count": 8, "broker": {"hostname": "127.0.0.1", "ssl": false},
                      "total": {"shop.add": 3}, "rusage": {"maxrss": 1234}, "uptime": 5},
            "active_queues": [{"name": "celery", "exclusive": false, "durable": true,
                               "routing_key": "celery", "no_ack": false, "alias": null,
                               "queue_arguments": null, "binding_arguments": null, "auto_delete": false}],
            "active": [{"id": "a-1", "name": "shop.sleep", "args": [30], "kwargs": {},
                        "acknowledged": true, "worker_pid": 11}],
            "reserved": [], "scheduled": [{"eta": "x", "priority": 6, "request": {"id": "s-1", "name": "shop.add", "args": [1], "kwargs": {}}}],
            "revoked": ["r-<1>"],
            "registered": ["shop.add", "shop.sleep [rate_limit=10/m]"],
            "conf": {"broker_url": "redis://x", "task_acks_late": false, "unset": null},
        });
        let info = info.as_object().unwrap();
        let html = render("w1@h<1>", info, false, "/flower");
        for id in [
            "tab-pool",
            "tab-broker",
            "tab-queues",
            "tab-tasks",
            "tab-limits",
            "tab-config",
            "tab-system",
            "tab-other",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("<th>Max concurrency</th><td>2</td>"));
        assert!(html.contains("<th>Processes</th><td>11, 12</td>"));
        assert!(html.contains("<th>Worker PID</th><td>10</td>"));
        assert!(html.contains("<th>SSL</th><td>False</td>"));
        assert!(html.contains("<td>celery</td><td>False</td><td>True</td>"));
        assert!(html.contains("href=\"/flower/task/a-1\""));
        assert!(html.contains("href=\"/flower/task/s-1\""));
        assert!(html.contains("r-&lt;1&gt;") && !html.contains("r-<1>"));
        assert!(html.contains("<td>shop.sleep [rate_limit=10/m]</td>"));
        assert!(html.contains(
            "data-post=\"/flower/api/task/rate-limit/shop.sleep?workername=w1%40h%3C1%3E\""
        ));
        assert!(html.contains("data-post=\"/flower/api/worker/pool/grow/w1%40h%3C1%3E?n=1\""));
        assert!(html.contains("configuration.html#broker-url"));
        assert!(!html.contains(">unset<"));
        assert!(html.contains("<th>uptime</th><td>5</td>"));
        assert!(html.contains("<h1 id=\"workername\">w1@h&lt;1&gt;</h1>"));
        let ro = render("w", info, true, "");
        assert!(!ro.contains("data-post") && ro.contains("id=\"read-only\""));
    }
}
