//! The tasks page (`/tasks`), Flower's tasks view rendered on the server: filters (state,
//! worker, task name, Flower's `search=`), sort by any column, and pages over every task the
//! connector's view holds (its `max_tasks`), newest started first as Flower's page opens.
//!
//! Everything is a plain link or a GET form, so the page works without script and under any
//! `url_prefix`; the query string is the page's state (`state`, `workername`, `taskname`,
//! `search`, `sort`, `page`, `length`), shareable as a URL.

use std::fmt::Write;

use super::api::{self, SortKey, TaskQuery};
use super::page::{escape, fmt_ts, page_head, page_tail, url_escape, RedactConfig};
use crate::connectors::celery_correlate::view::ViewState;

/// Rows per page unless `length` says otherwise, and the most one page shows.
const DEFAULT_LENGTH: usize = 50;
const MAX_LENGTH: usize = 1000;
/// Page sizes offered.
const LENGTHS: [usize; 4] = [15, 50, 100, 500];
/// Flower's page opens sorted by `started`, newest first.
const DEFAULT_SORT: (SortKey, bool) = (SortKey::Started, true);
/// States offered in the filter (Celery's).
const STATES: [&str; 8] = [
    "PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED",
];
/// Columns: title, sort key (`None`: not sortable, as Flower's `uuid`).
const COLUMNS: [(&str, Option<SortKey>); 10] = [
    ("Name", Some(SortKey::Name)),
    ("UUID", None),
    ("State", Some(SortKey::State)),
    ("args", Some(SortKey::Args)),
    ("kwargs", Some(SortKey::Kwargs)),
    ("Result", Some(SortKey::Result)),
    ("Received", Some(SortKey::Received)),
    ("Started", Some(SortKey::Started)),
    ("Runtime", Some(SortKey::Runtime)),
    ("Worker", Some(SortKey::Worker)),
];

/// What the page shows, read from its query string.
#[derive(Debug, Clone)]
pub struct TasksPage {
    state: String,
    workername: String,
    taskname: String,
    search: String,
    sort: (SortKey, bool),
    /// 1-based.
    page: usize,
    length: usize,
}

impl Default for TasksPage {
    fn default() -> Self {
        TasksPage {
            state: String::new(),
            workername: String::new(),
            taskname: String::new(),
            search: String::new(),
            sort: DEFAULT_SORT,
            page: 1,
            length: DEFAULT_LENGTH,
        }
    }
}

impl TasksPage {
    /// Reads the query string. A bad value is an error message for the page (HTTP 400).
    pub fn parse(pairs: &[(String, String)]) -> Result<TasksPage, String> {
        let mut p = TasksPage::default();
        for (k, v) in pairs {
            match k.as_str() {
                "state" => p.state = v.clone(),
                "workername" => p.workername = v.clone(),
                "taskname" => p.taskname = v.clone(),
                "search" => p.search = v.clone(),
                "sort" if !v.is_empty() => {
                    let key = SortKey::from_name(v.trim_start_matches('-'))
                        .ok_or_else(|| format!("cannot sort by '{v}'"))?;
                    p.sort = (key, v.starts_with('-'));
                }
                "page" if !v.is_empty() => {
                    p.page = v
                        .parse::<usize>()
                        .map_err(|_| format!("invalid page '{v}'"))?
                        .max(1)
                }
                "length" if !v.is_empty() => {
                    p.length = v
                        .parse::<usize>()
                        .map_err(|_| format!("invalid length '{v}'"))?
                        .clamp(1, MAX_LENGTH)
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// The filters as `/api/tasks` takes them (Flower's names), for this page's rows.
    fn query(&self) -> Result<TaskQuery, String> {
        let mut q = TaskQuery::parse(&[
            ("state".to_string(), self.state.clone()),
            ("workername".to_string(), self.workername.clone()),
            ("taskname".to_string(), self.taskname.clone()),
            ("search".to_string(), self.search.clone()),
        ])?;
        q.offset = (self.page - 1).saturating_mul(self.length);
        q.limit = Some(self.length);
        Ok(q)
    }

    /// This page's URL with some parameters changed.
    fn href(&self, prefix: &str, sort: (SortKey, bool), page: usize) -> String {
        let mut u = format!("{prefix}/tasks?");
        for (k, v) in [
            ("state", self.state.as_str()),
            ("workername", &self.workername),
            ("taskname", &self.taskname),
            ("search", &self.search),
        ] {
            if !v.is_empty() {
                let _ = write!(u, "{k}={}&", url_escape(v));
            }
        }
        let _ = write!(
            u,
            "sort={}{}&length={}&page={page}",
            if sort.1 { "-" } else { "" },
            sort.0.name(),
            self.length
        );
        u
    }
}

/// The page; `Err` carries the page explaining a bad query (served with 400).
pub fn render(
    v: &ViewState,
    pairs: &[(String, String)],
    redact: &RedactConfig,
    prefix: &str,
) -> Result<String, String> {
    let mut html = String::with_capacity(64 * 1024);
    page_head(&mut html, prefix, "Tasks", "tasks");
    let shown = TasksPage::parse(pairs).and_then(|p| p.query().map(|q| (p, q)));
    let p = match &shown {
        Ok((p, _)) => p.clone(),
        Err(_) => TasksPage::default(),
    };
    filters(&mut html, v, &p, prefix, pairs);
    let (p, q) = match shown {
        Ok(x) => x,
        Err(e) => {
            let _ = write!(
                html,
                "<p class=\"bad\" id=\"tasks-error\">{}</p>",
                escape(&e)
            );
            page_tail(&mut html, prefix);
            return Err(html);
        }
    };
    let (rows, total) = api::page(v, &q, p.sort);
    let pages = total.div_ceil(p.length).max(1);
    let first = if rows.is_empty() { 0 } else { q.offset + 1 };
    let _ = write!(
        html,
        "<p id=\"tasks-info\" data-total=\"{total}\" data-page=\"{}\" data-pages=\"{pages}\">Showing {first} to {} of {total} tasks{}</p>",
        p.page,
        q.offset + rows.len(),
        if total == v.task_count() {
            String::new()
        } else {
            format!(" (filtered from {} total)", v.task_count())
        }
    );
    html.push_str("<table id=\"tasks-table\"><thead><tr>");
    for (title, key) in COLUMNS {
        match key {
            None => {
                let _ = write!(html, "<th>{}</th>", escape(title));
            }
            Some(k) => {
                let current = p.sort.0 == k;
                // A click on the sorted column flips it; another column starts ascending.
                let next = (k, current && !p.sort.1);
                let (aria, mark) = match (current, p.sort.1) {
                    (true, true) => (" aria-sort=\"descending\"", " ▼"),
                    (true, false) => (" aria-sort=\"ascending\"", " ▲"),
                    _ => ("", ""),
                };
                let _ = write!(
                    html,
                    "<th{aria} data-sort=\"{}\"><a href=\"{}\">{}</a>{mark}</th>",
                    k.name(),
                    escape(&p.href(prefix, next, 1)),
                    escape(title)
                );
            }
        }
    }
    html.push_str("</tr></thead><tbody>");
    let esc_prefix = escape(prefix);
    for t in rows {
        let _ = write!(
            html,
            "<tr data-uuid=\"{uuid}\"><td><a href=\"{esc_prefix}/task/{link}\">{name}</a></td><td class=\"mono\">{uuid}</td>\
             <td class=\"state state-{state}\">{state}</td><td class=\"mono args\">{args}</td><td class=\"mono kwargs\">{kwargs}</td>\
             <td class=\"mono\">{result}</td><td>{received}</td><td>{started}</td><td>{runtime}</td><td>{worker}</td></tr>",
            uuid = escape(&t.uuid),
            link = escape(&url_escape(&t.uuid)),
            name = escape(t.name.as_deref().unwrap_or("")),
            state = escape(t.state.as_str()),
            args = escape(&t.args.as_deref().map(|a| redact.args(a)).unwrap_or_default()),
            kwargs = escape(&t.kwargs.as_deref().map(|k| redact.kwargs(k)).unwrap_or_default()),
            result = escape(t.result.as_deref().unwrap_or("")),
            received = escape(&fmt_ts(t.received)),
            started = escape(&fmt_ts(t.started)),
            runtime = t.runtime.map(|r| format!("{r:.3}")).unwrap_or_default(),
            worker = escape(t.worker.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</tbody></table>");
    pager(&mut html, &p, pages, prefix);
    page_tail(&mut html, prefix);
    Ok(html)
}

/// The filter form: GET to this page, so a filter is a URL.
fn filters(
    html: &mut String,
    v: &ViewState,
    p: &TasksPage,
    prefix: &str,
    pairs: &[(String, String)],
) {
    let raw = |k: &str| {
        pairs
            .iter()
            .find(|(q, _)| q == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let select = |html: &mut String,
                  name: &str,
                  label: &str,
                  chosen: &str,
                  options: &mut dyn Iterator<Item = &str>| {
        let _ = write!(
            html,
            "<label>{} <select name=\"{name}\"><option value=\"\">All</option>",
            escape(label)
        );
        for o in options {
            let sel = if o == chosen { " selected" } else { "" };
            let _ = write!(html, "<option{sel}>{}</option>", escape(o));
        }
        html.push_str("</select></label> ");
    };
    let _ = write!(
        html,
        "<h1>Tasks</h1><form id=\"tasks-filter\" method=\"get\" action=\"{}/tasks\">",
        escape(prefix)
    );
    select(
        html,
        "state",
        "State",
        &p.state,
        &mut STATES.iter().copied(),
    );
    let workers: Vec<&str> = v.workers().keys().map(String::as_str).collect();
    select(
        html,
        "workername",
        "Worker",
        &p.workername,
        &mut workers.into_iter(),
    );
    select(html, "taskname", "Task", &p.taskname, &mut v.names());
    let _ = write!(
        html,
        "<label>Search <input type=\"search\" name=\"search\" size=\"40\" value=\"{}\" \
         placeholder=\"text, state:FAILURE, args:…, kwargs:…, result:…\"></label> \
         <input type=\"hidden\" name=\"sort\" value=\"{}{}\">\
         <label>Rows <select name=\"length\">",
        escape(raw("search")),
        if p.sort.1 { "-" } else { "" },
        p.sort.0.name()
    );
    for l in LENGTHS {
        let sel = if l == p.length { " selected" } else { "" };
        let _ = write!(html, "<option{sel}>{l}</option>");
    }
    html.push_str("</select></label> <button type=\"submit\">Filter</button></form>");
}

/// First, previous, a window of page numbers, next, last.
fn pager(html: &mut String, p: &TasksPage, pages: usize, prefix: &str) {
    html.push_str("<nav class=\"pager\" id=\"tasks-pager\">");
    let link = |html: &mut String, label: &str, page: usize, rel: &str| {
        if page == p.page || page < 1 || page > pages {
            let _ = write!(html, "<span class=\"muted\">{}</span> ", escape(label));
        } else {
            let _ = write!(
                html,
                "<a href=\"{}\" data-page=\"{page}\"{rel}>{}</a> ",
                escape(&p.href(prefix, p.sort, page)),
                escape(label)
            );
        }
    };
    link(html, "First", 1, "");
    link(html, "Previous", p.page.saturating_sub(1), " rel=\"prev\"");
    let from = p.page.saturating_sub(3).max(1);
    let to = (from + 6).min(pages);
    for n in from..=to {
        if n == p.page {
            let _ = write!(html, "<strong aria-current=\"page\">{n}</strong> ");
        } else {
            link(html, &n.to_string(), n, "");
        }
    }
    link(html, "Next", p.page + 1, " rel=\"next\"");
    link(html, "Last", pages, "");
    html.push_str("</nav>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::celery_correlate::view::tests_support::task_event;
    use crate::connectors::celery_correlate::view::View;

    fn view(n: usize) -> View {
        let v = View::new(10_000);
        v.enable();
        let mut evs = Vec::new();
        for i in 0..n {
            let name = if i % 3 == 0 { "shop.a" } else { "shop.b" };
            let host = format!("w{}@h", i % 2);
            for (kind, ts) in [
                ("task-received", 999.0),
                ("task-started", 1000.0 + i as f64),
            ] {
                evs.push(task_event(kind, &format!("id-{i:03}"), &host, ts, |t| {
                    t.name = Some(name.into())
                }));
            }
        }
        v.apply(&evs, 1.0);
        v
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn uuids(html: &str) -> Vec<String> {
        html.split("<tr data-uuid=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn pages_over_the_whole_view_newest_started_first() {
        let v = view(250);
        let r = RedactConfig::default();
        let first = v.read(|s| render(s, &[], &r, "")).unwrap();
        let ids = uuids(&first);
        assert_eq!(ids.len(), 50);
        assert_eq!(ids[0], "id-249");
        assert!(first.contains("of 250 tasks"), "{first}");
        let last = v
            .read(|s| render(s, &pairs(&[("page", "5")]), &r, ""))
            .unwrap();
        assert_eq!(uuids(&last).last().map(String::as_str), Some("id-000"));
        // Filter + sort ascending by name, then uuid: a page deep in the view.
        let html = v
            .read(|s| {
                render(
                    s,
                    &pairs(&[
                        ("taskname", "shop.a"),
                        ("sort", "started"),
                        ("length", "15"),
                        ("page", "2"),
                    ]),
                    &r,
                    "/flower",
                )
            })
            .unwrap();
        let ids = uuids(&html);
        assert_eq!(ids.first().map(String::as_str), Some("id-045"), "{html}");
        assert!(
            html.contains("of 84 tasks (filtered from 250 total)"),
            "{html}"
        );
        assert!(html.contains(
            "href=\"/flower/tasks?taskname=shop.a&amp;sort=started&amp;length=15&amp;page=3\""
        ));
        assert!(html.contains("action=\"/flower/tasks\""));
        assert!(!html.contains("href=\"/task"));
        // A bad search is explained, not a crash.
        let bad = v.read(|s| render(s, &pairs(&[("search", "(")]), &r, ""));
        assert!(bad.is_err_and(|h| h.contains("tasks-error")));
        assert!(v
            .read(|s| render(s, &pairs(&[("sort", "nope")]), &r, ""))
            .is_err());
    }
}
