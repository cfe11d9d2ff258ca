//! What the dashboard renders on the server: HTML escaping, the redaction of task arguments,
//! and the task detail page. Task arguments, results and tracebacks are untrusted input: every
//! byte of them that reaches HTML goes through [`escape`] (and the live page's script only ever
//! assigns them with `textContent`).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::connectors::celery_correlate::view::TaskRecord;

/// The embedded assets of the live page.
const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const STYLE_CSS: &str = include_str!("assets/style.css");
pub const CONTROL_JS: &str = include_str!("assets/control.js");

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Which task arguments to hide, in the page and in the API alike.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Hide `args` entirely.
    pub args: bool,
    /// Hide `kwargs` entirely.
    pub kwargs: bool,
    /// Hide the value of every dict key (in args and kwargs) whose name contains one of these,
    /// case-insensitively, e.g. `[password, token, secret]`.
    pub keys: Vec<String>,
}

/// What replaces a hidden value.
pub const REDACTED: &str = "'***'";

impl RedactConfig {
    pub fn normalized(mut self) -> Self {
        self.keys = self
            .keys
            .into_iter()
            .map(|k| k.to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        self
    }

    pub fn args(&self, repr: &str) -> String {
        if self.args {
            REDACTED.to_string()
        } else {
            redact_keys(repr, &self.keys)
        }
    }

    pub fn kwargs(&self, repr: &str) -> String {
        if self.kwargs {
            REDACTED.to_string()
        } else {
            redact_keys(repr, &self.keys)
        }
    }
}

/// In a Python repr (`{'password': 's3cret', 'n': [1, 2]}`), replace the value of every dict key
/// whose lowercased name contains one of `patterns` (already lowercased) with `'***'`. Works at
/// any nesting depth and on truncated reprs (a value cut off runs to the end).
pub fn redact_keys(repr: &str, patterns: &[String]) -> String {
    if patterns.is_empty() {
        return repr.to_string();
    }
    let b = repr.as_bytes();
    let mut out = String::with_capacity(repr.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] == b'\'' || b[i] == b'"' {
            let end = string_end(b, i);
            let key = &repr[i + 1..end.saturating_sub(1).max(i + 1)];
            // A dict key is a string followed by `:`.
            let mut j = end;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            if j < b.len() && b[j] == b':' {
                let lower = key.to_lowercase();
                if patterns.iter().any(|p| lower.contains(p.as_str())) {
                    let mut v = j + 1;
                    while v < b.len() && b[v] == b' ' {
                        v += 1;
                    }
                    let vend = value_end(b, v);
                    out.push_str(&repr[copied..v]);
                    out.push_str(REDACTED);
                    copied = vend;
                    i = vend;
                    continue;
                }
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out.push_str(&repr[copied..]);
    out
}

/// Index just past the string literal starting at `start` (its quote), or the end of input.
fn string_end(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == q => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Index where the value starting at `start` ends: a `,` or closing bracket at its own depth.
fn value_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                i = string_end(b, i);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
            }
            b',' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

pub fn fmt_ts(ts: Option<f64>) -> String {
    match ts {
        Some(t) if t.is_finite() && t > 0.0 => {
            let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t);
            humantime::format_rfc3339_millis(st).to_string()
        }
        _ => "—".to_string(),
    }
}

/// The live page with every root-relative `href`/`src` under `prefix` (`""` or `/flower`),
/// and the prefix for its script in `<meta name="url-prefix">`.
pub fn index_html(prefix: &str) -> String {
    let p = escape(prefix);
    INDEX_HTML
        .replace("href=\"/", &format!("href=\"{p}/"))
        .replace("src=\"/", &format!("src=\"{p}/"))
        .replace(
            "<meta name=\"url-prefix\" content=\"\">",
            &format!("<meta name=\"url-prefix\" content=\"{p}\">"),
        )
}

/// The head and header of a server-rendered page; `prefix` is the dashboard's `url_prefix`.
pub fn page_head(html: &mut String, prefix: &str, title: &str, crumb: &str) {
    let p = escape(prefix);
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <link rel=\"stylesheet\" href=\"{p}/static/style.css\"></head><body>\
         <header><a href=\"{p}/\">celeriac</a> <a href=\"{p}/tasks\">tasks</a> › {}</header><main>",
        escape(title),
        escape(crumb)
    );
}

/// A small 404 page: `what` as its title, `message` (escaped here) and a link back.
pub fn not_found_page(what: &str, message: &str, prefix: &str) -> String {
    format!(
        "<!doctype html><title>{}</title><p>{}. <a href=\"{}/\">Back</a></p>",
        escape(what),
        escape(message),
        escape(prefix)
    )
}

/// The end of a server-rendered page, with the control buttons' script.
pub fn page_tail(html: &mut String, prefix: &str) {
    let _ = write!(
        html,
        "</main><script src=\"{}/static/control.js\"></script></body></html>",
        escape(prefix)
    );
}

/// The server-rendered page of one task. `trace_url` is a template with `{trace_id}`.
/// With `read_only` false, revoke and terminate buttons (each behind a confirmation) for a task
/// not yet finished; with it, a note saying control is off.
pub fn task_page(
    t: &TaskRecord,
    redact: &RedactConfig,
    trace_url: Option<&str>,
    read_only: bool,
    prefix: &str,
) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", t.name.as_deref().unwrap_or("").to_string()),
        ("UUID", t.uuid.to_string()),
        ("State", t.state.as_str().to_string()),
        (
            "Args",
            t.args
                .as_deref()
                .map(|a| redact.args(a))
                .unwrap_or_default(),
        ),
        (
            "Kwargs",
            t.kwargs
                .as_deref()
                .map(|k| redact.kwargs(k))
                .unwrap_or_default(),
        ),
        ("Result", t.result.as_deref().unwrap_or("").to_string()),
        ("Worker", t.worker.as_deref().unwrap_or("").to_string()),
        ("Client", t.client.as_deref().unwrap_or("").to_string()),
        (
            "Queue (routing key)",
            t.routing_key.as_deref().unwrap_or("").to_string(),
        ),
        (
            "Retries",
            t.retries.map(|r| r.to_string()).unwrap_or_default(),
        ),
        (
            "Runtime (s)",
            t.runtime.map(|r| format!("{r:.6}")).unwrap_or_default(),
        ),
        ("Sent", fmt_ts(t.sent)),
        ("Received", fmt_ts(t.received)),
        ("Started", fmt_ts(t.started)),
        ("Succeeded", fmt_ts(t.succeeded)),
        ("Failed", fmt_ts(t.failed)),
        ("Retried", fmt_ts(t.retried)),
        ("Revoked", fmt_ts(t.revoked)),
        ("Rejected", fmt_ts(t.rejected)),
        ("ETA", t.eta.as_deref().unwrap_or("").to_string()),
        ("Expires", t.expires.as_deref().unwrap_or("").to_string()),
        (
            "Exception",
            t.exception.as_deref().unwrap_or("").to_string(),
        ),
    ];
    let mut html = String::with_capacity(4096);
    let p = escape(prefix);
    page_head(&mut html, prefix, &format!("Task {}", t.uuid), "task");
    let _ = write!(
        html,
        "<h1>{}</h1>",
        escape(t.name.as_deref().unwrap_or("unknown task"))
    );
    let finished = matches!(
        t.state.as_str(),
        "SUCCESS" | "FAILURE" | "REVOKED" | "REJECTED"
    );
    if read_only {
        html.push_str(
            "<p class=\"muted\" id=\"read-only\">Control actions are off (<code>read_only: true</code>).</p>",
        );
    } else if !finished {
        let id = escape(&url_escape(&t.uuid));
        let _ = write!(
            html,
            "<p class=\"actions\"><button id=\"revoke\" data-post=\"{p}/api/task/revoke/{id}\" \
             data-confirm=\"Revoke task {uid}? A worker will not run it.\">Revoke</button> \
             <button id=\"terminate\" data-post=\"{p}/api/task/revoke/{id}?terminate=true\" \
             data-confirm=\"Terminate task {uid}? Its worker process gets SIGTERM.\">Terminate</button></p>\
             <p id=\"control-result\" role=\"status\"></p>",
            uid = escape(&t.uuid)
        );
    }
    html.push_str("<table class=\"kv\" id=\"task\">");
    for (k, v) in rows.drain(..) {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    }
    let id_link = |label: &str, id: Option<&str>| -> String {
        match id.filter(|i| !i.is_empty()) {
            Some(i) => format!(
                "<tr><th>{}</th><td><a href=\"{p}/task/{}\">{}</a></td></tr>",
                escape(label),
                escape(&url_escape(i)),
                escape(i)
            ),
            None => String::new(),
        }
    };
    html.push_str(&id_link("Root", t.root_id.as_deref()));
    html.push_str(&id_link("Parent", t.parent_id.as_deref()));
    for c in &t.children {
        html.push_str(&id_link("Child", Some(c)));
    }
    if let Some(tid) = t.trace_id_hex() {
        let cell = match trace_url {
            Some(tpl) => format!(
                "<a id=\"trace\" href=\"{}\">{}</a>",
                escape(&tpl.replace("{trace_id}", &tid)),
                escape(&tid)
            ),
            None => format!("<code id=\"trace\">{}</code>", escape(&tid)),
        };
        let _ = write!(html, "<tr><th>Trace</th><td>{cell}</td></tr>");
    }
    html.push_str("</table>");
    if let Some(tb) = t.traceback.as_deref() {
        let _ = write!(
            html,
            "<h2>Traceback</h2><pre class=\"tb\">{}</pre>",
            escape(tb)
        );
    }
    page_tail(&mut html, prefix);
    html
}

/// Percent-encode a path segment.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn redacts_values_by_key_at_any_depth() {
        let p = vec!["password".to_string(), "token".to_string()];
        assert_eq!(
            redact_keys("{'user': 'bob', 'password': 's3,c}r\\'et', 'n': 1}", &p),
            "{'user': 'bob', 'password': '***', 'n': 1}"
        );
        assert_eq!(
            redact_keys("({'API_TOKEN': [1, {'a': 2}]}, 'password')", &p),
            "({'API_TOKEN': '***'}, 'password')"
        );
        // Truncated by Celery: the value runs to the end.
        assert_eq!(redact_keys("{'password': 'abc", &p), "{'password': '***'");
        assert_eq!(redact_keys("{'x': 1}", &[]), "{'x': 1}");
    }

    #[test]
    fn redact_settings() {
        let r = RedactConfig {
            args: true,
            kwargs: false,
            keys: vec!["Secret".into()],
        }
        .normalized();
        assert_eq!(r.args("(1, 2)"), REDACTED);
        assert_eq!(r.kwargs("{'my_secret': 1}"), "{'my_secret': '***'}");
    }

    #[test]
    fn task_page_escapes_untrusted_fields() {
        let mut t = crate::connectors::celery_correlate::view::tests_support::record("t<1>");
        t.args = Some("('<script>alert(1)</script>',)".into());
        t.traceback = Some("Traceback <b>".into());
        let html = task_page(
            &t,
            &RedactConfig::default(),
            Some("http://x/?q={trace_id}&a=\"1\""),
            false,
            "",
        );
        assert!(!html.contains("<script>alert"), "{html}");
        // A task not finished gets the buttons, each with a confirmation; read-only gets none.
        assert!(
            html.contains("id=\"revoke\" data-post=\"/api/task/revoke/t%3C1%3E\" data-confirm=")
        );
        assert!(html.contains("?terminate=true"));
        let ro = task_page(&t, &RedactConfig::default(), None, true, "");
        let under = task_page(&t, &RedactConfig::default(), None, false, "/flower");
        assert!(under.contains("data-post=\"/flower/api/task/revoke/t%3C1%3E\""));
        assert!(under.contains("href=\"/flower/static/style.css\""));
        assert!(under.contains("src=\"/flower/static/control.js\""));
        let index = index_html("/flower");
        assert!(index.contains("<meta name=\"url-prefix\" content=\"/flower\">"));
        assert!(!index.contains("=\"/static") && index.contains("src=\"/flower/static/app.js\""));
        assert!(!ro.contains("data-post") && ro.contains("id=\"read-only\""));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Traceback &lt;b&gt;"));
        assert!(html.contains("Task t&lt;1&gt;"));
    }
}
