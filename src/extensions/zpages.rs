//! `zpages` extension: the collector's in-process debug pages (core `extension/zpagesextension`,
//! pages from `service/internal/graph/host.go` and `zpages.go`).
//!
//! This module owns the extension's settings and its pages, served under `/debug/`:
//! * `servicez`: build and runtime info, links to the other pages;
//! * `pipelinez`: one row per pipeline (FullName, InputType, MutatesData, Receivers, Processors,
//!   Exporters, connectors marked ` (connector)`), as the collector's table, and below it the
//!   live status of every component (`StatusOK`, `StatusStopping`, `StatusPermanentError: …`,
//!   and since when), read from the runtime's [`StatusBoard`] through the [`Host`];
//! * `extensionz`: the enabled extensions with their status;
//! * `featurez`: the feature gate table (celeriac has no feature gates: an empty table).
//!
//! `tracez`/`rpcz` (OpenCensus span views) are not served: celeriac does not trace itself.
//! After a config reload the pipelines table still shows the pipelines the agent started with
//! (extensions keep their host until a restart); the component status below it stays live.
//!
//! ```yaml
//! extensions:
//!   zpages:
//!     endpoint: localhost:55679   # the collector's default
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::component::{
    BoxRun, BuildResult, ComponentError, ComponentStatus, Context, Extension, Factory, Host,
    Registration,
};
use crate::config::{self, types, Section, Value};
use crate::telemetry::Reply;

pub const REGISTRATION: Registration = Registration {
    type_name: "zpages",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<ZPagesConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ZPagesConfig {
    #[serde(with = "types::addr")]
    pub endpoint: SocketAddr,
    /// The collector's `expvar: {enabled}` (Go's expvar page): accepted; celeriac has no expvar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expvar: Option<Value>,
}

impl Default for ZPagesConfig {
    fn default() -> Self {
        ZPagesConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 55679)),
            expvar: None,
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Extension> {
    let cfg: ZPagesConfig = config::decode(v)?;
    Ok(Box::new(ZPages { cfg }))
}

pub struct ZPages {
    cfg: ZPagesConfig,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn header(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body>\n<h1>{t}</h1>\n",
        t = esc(title)
    )
}

const FOOTER: &str = "</body>\n</html>\n";

fn status_text(s: &ComponentStatus) -> String {
    match s {
        ComponentStatus::PermanentError(e) => format!("{}: {}", s.name(), e),
        _ => s.name().to_string(),
    }
}

/// `/debug/servicez`.
pub fn servicez(host: &Host) -> String {
    let mut out = header("Service celeriac");
    let _ = write!(
        out,
        "<h2>Build Info</h2>\n<table>\n<tr><td>Command</td><td>celeriac</td></tr>\n<tr><td>Description</td><td>{}</td></tr>\n<tr><td>Version</td><td>{}</td></tr>\n</table>\n",
        esc(env!("CARGO_PKG_DESCRIPTION")),
        env!("CARGO_PKG_VERSION")
    );
    let up = host.status().ready_since().map_or_else(
        || "not started".to_string(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    );
    let _ = write!(
        out,
        "<h2>Runtime Info</h2>\n<table>\n<tr><td>StartTimestamp</td><td>{}</td></tr>\n<tr><td>OS</td><td>{}</td></tr>\n<tr><td>Arch</td><td>{}</td></tr>\n<tr><td>Healthy</td><td>{}</td></tr>\n</table>\n",
        esc(&up),
        std::env::consts::OS,
        std::env::consts::ARCH,
        host.status().healthy()
    );
    for (name, page) in [
        ("Pipelines", "pipelinez"),
        ("Extensions", "extensionz"),
        ("Features", "featurez"),
    ] {
        let _ = writeln!(out, "<h2><a href=\"{page}\">{name}</a></h2>");
    }
    out.push_str(FOOTER);
    out
}

/// `/debug/pipelinez`: the collector's pipelines table, then every component's live status.
pub fn pipelinez(host: &Host) -> String {
    let mut out = header("builtPipelines");
    out.push_str("<table style=\"border-spacing: 0\">\n<tr><td><b>FullName</b></td><td><b>InputType</b></td><td><b>MutatesData</b></td><td><b>Receivers</b></td><td><b>Processors</b></td><td><b>Exporters</b></td></tr>\n");
    let is_connector = |id: &crate::config::ComponentId| {
        host.declared(Section::Connectors, &id.type_name)
            .iter()
            .any(|d| &d.id == id)
    };
    let name = |id: &crate::config::ComponentId| {
        if is_connector(id) {
            format!("{id} (connector)")
        } else {
            id.to_string()
        }
    };
    let mut pipelines: Vec<_> = host.pipelines().iter().collect();
    pipelines.sort_by(|a, b| a.id.cmp(&b.id));
    for p in pipelines {
        let list = |refs: &[crate::config::ComponentRef]| {
            refs.iter()
                .map(|r| esc(&name(&r.id)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let procs = p
            .processors
            .iter()
            .map(|r| esc(&r.id.to_string()))
            .collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>&rarr; {}</td><td>{}</td></tr>",
            esc(&p.id),
            p.signal,
            !p.processors.is_empty(),
            list(&p.receivers),
            procs
                .iter()
                .map(|p| format!("{p} &rarr; "))
                .collect::<String>(),
            list(&p.exporters)
        );
    }
    out.push_str("</table>\n<h2>Component status</h2>\n<table style=\"border-spacing: 0\">\n<tr><td><b>Component</b></td><td><b>Status</b></td><td><b>Since</b></td></tr>\n");
    for e in host.status().snapshot() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.label),
            esc(&status_text(&e.status)),
            humantime::format_rfc3339_seconds(e.since)
        );
    }
    out.push_str("</table>\n");
    out.push_str(FOOTER);
    out
}

/// `/debug/extensionz`.
pub fn extensionz(host: &Host) -> String {
    let mut out = header("Extensions");
    out.push_str("<table style=\"border-spacing: 0\">\n");
    for id in host.extensions() {
        let status = host
            .status()
            .get(&format!("extension/{id}"))
            .map_or_else(|| "unknown".to_string(), |e| status_text(&e.status));
        let _ = writeln!(
            out,
            "<tr><td><a href=\"?zextensionname={id}\">{id}</a></td><td>{}</td></tr>",
            esc(&status),
            id = esc(id)
        );
    }
    out.push_str("</table>\n");
    out.push_str(FOOTER);
    out
}

/// `/debug/featurez`: the feature gates table; celeriac has none.
pub fn featurez() -> String {
    let mut out = header("Feature Gates");
    out.push_str("<table style=\"border-spacing: 0\">\n<tr><td><b>ID</b></td><td><b>Enabled</b></td><td><b>Stage</b></td><td><b>Description</b></td></tr>\n</table>\n");
    out.push_str(FOOTER);
    out
}

fn route(host: &Host, path: &str) -> Reply {
    let html = |s: String| (StatusCode::OK, "text/html; charset=utf-8", Bytes::from(s));
    match path.trim_end_matches('/') {
        "/debug/servicez" => html(servicez(host)),
        "/debug/pipelinez" => html(pipelinez(host)),
        "/debug/extensionz" => html(extensionz(host)),
        "/debug/featurez" => html(featurez()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"404 page not found\n"),
        ),
    }
}

impl Extension for ZPages {
    /// Ready once its endpoint is bound.
    fn reports_ready(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, ctx: Context, host: Host) -> BoxRun {
        Box::pin(async move {
            let addr = self.cfg.endpoint;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ComponentError::Bind { addr, source })?;
            tracing::info!(component = %ctx.id, endpoint = %addr, "zpages serving /debug/servicez, /debug/pipelinez, /debug/extensionz.");
            let host = Arc::new(host);
            let handler = move |_: &hyper::Method, path: &str| route(&host, path);
            ctx.ready.set();
            crate::telemetry::serve(listener, handler, ctx.shutdown.clone()).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::graph::Graph;

    fn host(yaml: &str) -> Host {
        let (cfg, mut d) = crate::config::parse(yaml, "t.yaml");
        let cfg = cfg.unwrap_or_else(|| panic!("{}", d.render()));
        let g = Graph::build(&cfg, &mut d).unwrap_or_else(|| panic!("{}", d.render()));
        g.host
    }

    /// core service/internal/graph/zpages.go: one row per pipeline, sorted by FullName,
    /// connectors marked " (connector)".
    #[test]
    fn pipelinez_lists_pipelines_and_live_status() {
        let h = host("receivers:\n  otlp:\nprocessors:\n  batch:\nexporters:\n  debug:\n  debug/2:\nextensions:\n  zpages:\n    endpoint: 127.0.0.1:0\nservice:\n  extensions: [zpages]\n  pipelines:\n    traces: { receivers: [otlp], processors: [batch], exporters: [debug, debug/2] }\n    logs: { receivers: [otlp], exporters: [debug] }\n");
        h.status().set("exporter/debug", ComponentStatus::Ok);
        h.status().set(
            "exporter/debug/2",
            ComponentStatus::PermanentError("cannot <bind>".into()),
        );
        let page = pipelinez(&h);
        let logs = page.find("<tr><td>logs</td>").unwrap();
        let traces = page.find("<tr><td>traces</td>").unwrap();
        assert!(logs < traces, "{page}");
        assert!(page.contains("<tr><td>traces</td><td>traces</td><td>true</td><td>otlp</td><td>&rarr; batch &rarr; </td><td>debug<br>debug/2</td></tr>"), "{page}");
        assert!(
            page.contains("<tr><td>exporter/debug</td><td>StatusOK</td>"),
            "{page}"
        );
        assert!(
            page.contains("StatusPermanentError: cannot &lt;bind&gt;"),
            "{page}"
        );
        let ext = extensionz(&h);
        assert!(ext.contains(">zpages</a></td><td>unknown</td>"), "{ext}");
        h.status().set("extension/zpages", ComponentStatus::Ok);
        assert!(extensionz(&h).contains(">zpages</a></td><td>StatusOK</td>"));
        assert!(servicez(&h).contains("<a href=\"pipelinez\">Pipelines</a>"));
        assert_eq!(route(&h, "/debug/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(route(&h, "/debug/featurez").0, StatusCode::OK);
    }
}
