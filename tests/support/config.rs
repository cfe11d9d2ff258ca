//! The agent configs the tests write, built section by section in the collector's layout
//! (`extensions`, `receivers`, `processors`, `connectors`, `exporters`, `service`), so a test
//! names only the components and pipelines it is about.
//!
//! A component's body is YAML: a flow mapping (`{ endpoint: ... }`, or empty for `{}`) or a
//! scalar stays on the component's line; anything else is block YAML, indented under the component. A body that
//! starts with a line break follows the code's indentation: its lines lose the indentation they
//! share.

/// One agent config; [`AgentConfig::yaml`] renders it.
#[derive(Debug, Default, Clone)]
pub struct AgentConfig {
    extensions: Vec<(String, String)>,
    receivers: Vec<(String, String)>,
    processors: Vec<(String, String)>,
    connectors: Vec<(String, String)>,
    exporters: Vec<(String, String)>,
    service_extensions: Vec<String>,
    telemetry: Option<String>,
    service: Vec<(String, String)>,
    pipelines: Vec<(String, String)>,
}

impl AgentConfig {
    pub fn new() -> AgentConfig {
        AgentConfig::default()
    }

    /// What most Redis tests start from: `celery_redis` on `redis_url` into `celery_correlate`
    /// (`correlate` is its body, e.g. `metrics_interval: 200ms`) by the pipeline `celery`, and the
    /// agent's telemetry on 127.0.0.1:`telemetry`.
    pub fn celery(redis_url: &str, correlate: &str, telemetry: u16) -> AgentConfig {
        AgentConfig::celery_without_telemetry(redis_url, correlate).telemetry(telemetry)
    }

    /// What the RabbitMQ tests start from: `celery_amqp` (body `celery_amqp`) into
    /// `celery_correlate` (every 200 ms) by the pipeline `celery`; the correlator and
    /// `amqp_queues` (body `amqp_queues`) into `prometheus` on 127.0.0.1:`prom` by the pipeline
    /// `metrics`; the agent's telemetry on 127.0.0.1:`telemetry`.
    pub fn amqp(celery_amqp: &str, amqp_queues: &str, prom: u16, telemetry: u16) -> AgentConfig {
        AgentConfig::new()
            .receiver("celery_amqp", celery_amqp)
            .receiver("amqp_queues", amqp_queues)
            .connector("celery_correlate", "metrics_interval: 200ms")
            .exporter("prometheus", &format!("endpoint: 127.0.0.1:{prom}"))
            .telemetry(telemetry)
            .pipeline("celery", &["celery_amqp"], &["celery_correlate"])
            .pipeline(
                "metrics",
                &["celery_correlate", "amqp_queues"],
                &["prometheus"],
            )
    }

    /// [`AgentConfig::celery`] for a test that sets `service.telemetry` itself.
    pub fn celery_without_telemetry(redis_url: &str, correlate: &str) -> AgentConfig {
        AgentConfig::new()
            .receiver("celery_redis", &format!("endpoint: {redis_url}"))
            .connector("celery_correlate", correlate)
            .pipeline("celery", &["celery_redis"], &["celery_correlate"])
    }

    pub fn receiver(mut self, name: &str, body: &str) -> AgentConfig {
        self.receivers.push((name.into(), body.into()));
        self
    }

    pub fn processor(mut self, name: &str, body: &str) -> AgentConfig {
        self.processors.push((name.into(), body.into()));
        self
    }

    pub fn connector(mut self, name: &str, body: &str) -> AgentConfig {
        self.connectors.push((name.into(), body.into()));
        self
    }

    pub fn exporter(mut self, name: &str, body: &str) -> AgentConfig {
        self.exporters.push((name.into(), body.into()));
        self
    }

    /// An extension, also listed under `service.extensions` (so it runs).
    pub fn extension(mut self, name: &str, body: &str) -> AgentConfig {
        self.extensions.push((name.into(), body.into()));
        self.service_extensions.push(name.into());
        self
    }

    /// `service.telemetry.endpoint: 127.0.0.1:<port>`.
    pub fn telemetry(self, port: u16) -> AgentConfig {
        self.telemetry_endpoint(&format!("127.0.0.1:{port}"))
    }

    pub fn telemetry_endpoint(self, endpoint: &str) -> AgentConfig {
        self.telemetry_body(&format!("endpoint: {endpoint}"))
    }

    /// `service.telemetry` with a body of its own (e.g. a bearer token next to the endpoint).
    pub fn telemetry_body(mut self, body: &str) -> AgentConfig {
        self.telemetry = Some(body.into());
        self
    }

    /// Another `service` key (e.g. `shutdown_timeout`).
    pub fn service(mut self, key: &str, body: &str) -> AgentConfig {
        self.service.push((key.into(), body.into()));
        self
    }

    pub fn pipeline(self, name: &str, receivers: &[&str], exporters: &[&str]) -> AgentConfig {
        self.pipeline_with(name, receivers, &[], exporters)
    }

    pub fn pipeline_with(
        mut self,
        name: &str,
        receivers: &[&str],
        processors: &[&str],
        exporters: &[&str],
    ) -> AgentConfig {
        let mut body = format!("receivers: [{}]\n", receivers.join(", "));
        if !processors.is_empty() {
            body += &format!("processors: [{}]\n", processors.join(", "));
        }
        body += &format!("exporters: [{}]", exporters.join(", "));
        self.pipelines.push((name.into(), body));
        self
    }

    /// The config file's text.
    pub fn yaml(&self) -> String {
        let mut out = String::new();
        for (section, items) in [
            ("extensions", &self.extensions),
            ("receivers", &self.receivers),
            ("processors", &self.processors),
            ("connectors", &self.connectors),
            ("exporters", &self.exporters),
        ] {
            if !items.is_empty() {
                out += &format!("{section}:\n");
                for (name, body) in items {
                    out += &entry(1, name, body);
                }
            }
        }
        out += "service:\n";
        if !self.service_extensions.is_empty() {
            out += &format!("  extensions: [{}]\n", self.service_extensions.join(", "));
        }
        if let Some(body) = &self.telemetry {
            out += &entry(1, "telemetry", body);
        }
        for (key, body) in &self.service {
            out += &entry(1, key, body);
        }
        out += "  pipelines:\n";
        for (name, body) in &self.pipelines {
            out += &entry(2, name, body);
        }
        out
    }
}

/// `name: body` at `depth` (two spaces a level): a flow mapping or a scalar on the same line,
/// block YAML indented one level further.
fn entry(depth: usize, name: &str, body: &str) -> String {
    let pad = "  ".repeat(depth);
    let body = dedent(body);
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return format!("{pad}{name}: {{}}\n");
    }
    if !trimmed.contains('\n') && (trimmed.starts_with('{') || !trimmed.contains(": ")) {
        return format!("{pad}{name}: {trimmed}\n");
    }
    let mut out = format!("{pad}{name}:\n");
    for line in body.lines() {
        if line.trim().is_empty() {
            continue;
        }
        out += &format!("{pad}  {line}\n");
    }
    out
}

/// A body that starts with a line break is written in the code's indentation: its lines lose the
/// indentation they share. Any other body is taken as it is.
fn dedent(text: &str) -> String {
    let Some(text) = text.strip_prefix('\n') else {
        return text.to_string();
    };
    let common = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(common..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}
