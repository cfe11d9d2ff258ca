//! `prometheus` receiver: scrapes Prometheus/OpenMetrics pages (prometheus_client apps, exporters)
//! into OTLP metrics, configured as the collector's receiver is: Prometheus's own
//! `scrape_configs` under `config:`.
//!
//! ```yaml
//! receivers:
//!   prometheus:
//!     config:
//!       global: { scrape_interval: 15s, scrape_timeout: 10s }
//!       scrape_configs:
//!         - job_name: evaluations
//!           scrape_interval: 15s
//!           scrape_timeout: 10s           # at most scrape_interval
//!           metrics_path: /metrics
//!           scheme: http                  # http | https
//!           params: { module: [x] }
//!           honor_labels: false           # true: the page's job/instance/... win over the target's
//!           honor_timestamps: true
//!           body_size_limit: 8MB          # bigger pages fail (counted); 0 = 8MB too (bounded)
//!           basic_auth: { username: u, password: p }        # or password_file
//!           authorization: { type: Bearer, credentials: t } # or credentials_file
//!           tls_config: { ca_file: ca.pem, cert_file: c.pem, key_file: k.pem }
//!           static_configs: [{ targets: ["127.0.0.1:8000"], labels: { env: prod } }]
//!           file_sd_configs: [{ files: [/etc/celeriac/targets/*.json], refresh_interval: 5m }]
//!           relabel_configs: []           # on targets: replace, keep, drop, labeldrop, labelkeep, labelmap
//!           metric_relabel_configs: []    # on samples, same actions
//! ```
//!
//! file_sd files (JSON or YAML lists of `{targets, labels}`) are re-read when their
//! modification time or the set of matching files changes (checked every second) and every
//! `refresh_interval`. Output shapes, `up`/`scrape_*` series and staleness: [`convert`]. The
//! page parser and why it is ours: [`parse`]. A failed scrape (connect, timeout, status, size,
//! parse) is counted in `celeriac_prometheus_scrape_failures_total{job,reason}`, warned about
//! (throttled), makes `up` 0 and marks the target's series stale; the other targets go on.

pub mod convert;
pub mod parse;
pub mod relabel;
pub(crate) mod scrape;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use tokio_util::sync::CancellationToken;

use crate::component::{BoxRun, BuildResult, Context, Factory, Output, Receiver, Registration};
use crate::config::{self, types, types::Secret, DecodeError, Value};
use crate::otlp::unix_nanos;
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Throttle;
use relabel::{Labels, RelabelConfig, Rule};

pub const REGISTRATION: Registration = Registration {
    type_name: "prometheus",
    factory: Factory::Receiver {
        produces: &[SignalKind::Metrics],
        build,
    },
    defaults: crate::component::defaults::<PrometheusReceiverConfig>,
};

/// Bound on a page when `body_size_limit` is unset or 0.
pub const DEFAULT_BODY_LIMIT: usize = 8 << 20;

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusReceiverConfig {
    pub config: PromConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PromConfig {
    pub global: GlobalConfig,
    pub scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    #[serde(with = "types::duration")]
    pub scrape_interval: Duration,
    #[serde(with = "types::duration")]
    pub scrape_timeout: Duration,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
        }
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => types::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Prometheus sizes (`10MB` = 10 MiB, as Prometheus's units.Base2Bytes reads it).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    let Some(raw) = Option::<Raw>::deserialize(d)? else {
        return Ok(None);
    };
    match raw {
        Raw::N(n) => Ok(Some(n)),
        Raw::S(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let n: u64 = t[..split]
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a size")))?;
            let m: u64 = match t[split..].trim().to_ascii_uppercase().as_str() {
                "" | "B" => 1,
                "KB" | "KIB" => 1 << 10,
                "MB" | "MIB" => 1 << 20,
                "GB" | "GIB" => 1 << 30,
                u => return Err(serde::de::Error::custom(format!("unknown unit {u:?}"))),
            };
            Ok(Some(n * m))
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default = "five_minutes", with = "types::duration")]
    pub refresh_interval: Duration,
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub credentials: Option<Secret>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(
        default,
        deserialize_with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub scrape_interval: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub scrape_timeout: Option<Duration>,
    #[serde(default = "metrics_path")]
    pub metrics_path: String,
    #[serde(default = "http")]
    pub scheme: String,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    #[serde(
        default,
        deserialize_with = "size",
        skip_serializing_if = "Option::is_none"
    )]
    pub body_size_limit: Option<u64>,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsConfig>,
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

fn metrics_path() -> String {
    "/metrics".into()
}
fn http() -> String {
    "http".into()
}
fn yes() -> bool {
    true
}

/// A scrape config checked and compiled.
struct Job {
    name: String,
    interval: Duration,
    timeout: Duration,
    metrics_path: String,
    scheme: String,
    params: BTreeMap<String, Vec<String>>,
    honor_labels: bool,
    honor_timestamps: bool,
    body_limit: usize,
    statics: Vec<StaticConfig>,
    file_sd: Vec<FileSdConfig>,
    auth: Option<AuthSource>,
    tls: Option<crate::tls::ClientTlsConfig>,
    relabel: Vec<Rule>,
    metric_relabel: Vec<Rule>,
}

#[derive(Clone)]
enum AuthSource {
    Basic(String, Option<Secret>, Option<PathBuf>),
    Bearer(String, Option<Secret>, Option<PathBuf>),
}

impl AuthSource {
    /// The Authorization header; files are read at each scrape (rotated credentials).
    fn header(&self) -> Result<String, String> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        match self {
            AuthSource::Basic(u, p, f) => {
                let pw = match (p, f) {
                    (Some(s), _) => s.expose().to_string(),
                    (None, Some(f)) => read(f)?,
                    (None, None) => String::new(),
                };
                Ok(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"))
                ))
            }
            AuthSource::Bearer(kind, c, f) => {
                let cred = match (c, f) {
                    (Some(s), _) => s.expose().to_string(),
                    (None, Some(f)) => read(f)?,
                    (None, None) => String::new(),
                };
                Ok(format!("{kind} {cred}"))
            }
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: PrometheusReceiverConfig = config::decode(v)?;
    let jobs = compile(&cfg.config)?;
    Ok(Box::new(PrometheusReceiver {
        jobs: Arc::new(jobs),
    }))
}

fn compile(c: &PromConfig) -> Result<Vec<Arc<Job>>, DecodeError> {
    let mut names = std::collections::HashSet::new();
    let mut jobs = Vec::new();
    for (i, s) in c.scrape_configs.iter().enumerate() {
        let at = format!("config.scrape_configs[{i}]");
        let e = |k: &str, m: String| DecodeError::new(format!("{at}.{k}"), m);
        if s.job_name.is_empty() {
            return Err(e("job_name", "required".into()));
        }
        if !names.insert(s.job_name.clone()) {
            return Err(e("job_name", format!("{:?} is used twice", s.job_name)));
        }
        let interval = s.scrape_interval.unwrap_or(c.global.scrape_interval);
        let timeout = s
            .scrape_timeout
            .unwrap_or(c.global.scrape_timeout.min(interval));
        if interval.is_zero() || timeout.is_zero() {
            return Err(e("scrape_interval", "must be greater than 0s".into()));
        }
        if timeout > interval {
            return Err(e(
                "scrape_timeout",
                format!("{timeout:?} is greater than scrape_interval {interval:?}"),
            ));
        }
        if s.scheme != "http" && s.scheme != "https" {
            return Err(e("scheme", format!("{:?}: http or https", s.scheme)));
        }
        if !s.metrics_path.starts_with('/') {
            return Err(e("metrics_path", "must start with /".into()));
        }
        let auth = match (&s.basic_auth, &s.authorization) {
            (Some(_), Some(_)) => {
                return Err(e(
                    "authorization",
                    "basic_auth and authorization are mutually exclusive".into(),
                ))
            }
            (Some(b), None) => {
                if b.password.is_some() && b.password_file.is_some() {
                    return Err(e(
                        "basic_auth.password_file",
                        "password and password_file are mutually exclusive".into(),
                    ));
                }
                Some(AuthSource::Basic(
                    b.username.clone(),
                    b.password.clone(),
                    b.password_file.clone(),
                ))
            }
            (None, Some(a)) => {
                if a.credentials.is_some() && a.credentials_file.is_some() {
                    return Err(e(
                        "authorization.credentials_file",
                        "credentials and credentials_file are mutually exclusive".into(),
                    ));
                }
                Some(AuthSource::Bearer(
                    a.kind.clone().unwrap_or_else(|| "Bearer".into()),
                    a.credentials.clone(),
                    a.credentials_file.clone(),
                ))
            }
            (None, None) => None,
        };
        let tls = match &s.tls_config {
            None => None,
            Some(t) => {
                if t.insecure_skip_verify {
                    return Err(e(
                        "tls_config.insecure_skip_verify",
                        "is not supported: trust the target's CA with ca_file instead".into(),
                    ));
                }
                if t.server_name.is_some() {
                    return Err(e(
                        "tls_config.server_name",
                        "is not supported: the target's host name is verified".into(),
                    ));
                }
                let c = crate::tls::ClientTlsConfig {
                    ca_file: t.ca_file.clone(),
                    cert_file: t.cert_file.clone(),
                    key_file: t.key_file.clone(),
                };
                c.check().map_err(|(k, m)| {
                    e(
                        &format!("tls_config.{}", k.trim_start_matches("tls.")),
                        m.into(),
                    )
                })?;
                Some(c)
            }
        };
        for (j, f) in s.file_sd_configs.iter().enumerate() {
            for (k, p) in f.files.iter().enumerate() {
                glob::Pattern::new(p)
                    .map_err(|x| e(&format!("file_sd_configs[{j}].files[{k}]"), x.to_string()))?;
            }
            if f.refresh_interval.is_zero() {
                return Err(e(
                    &format!("file_sd_configs[{j}].refresh_interval"),
                    "must be greater than 0s".into(),
                ));
            }
        }
        let limit = match s.body_size_limit {
            None | Some(0) => DEFAULT_BODY_LIMIT,
            Some(n) => n as usize,
        };
        jobs.push(Arc::new(Job {
            name: s.job_name.clone(),
            interval,
            timeout,
            metrics_path: s.metrics_path.clone(),
            scheme: s.scheme.clone(),
            params: s.params.clone(),
            honor_labels: s.honor_labels,
            honor_timestamps: s.honor_timestamps,
            body_limit: limit,
            statics: s.static_configs.clone(),
            file_sd: s.file_sd_configs.clone(),
            auth,
            tls,
            relabel: relabel::build_all(&s.relabel_configs, &format!("{at}.relabel_configs"))?,
            metric_relabel: relabel::build_all(
                &s.metric_relabel_configs,
                &format!("{at}.metric_relabel_configs"),
            )?,
        }));
    }
    Ok(jobs)
}

/// A target after relabeling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub url: String,
    pub job: String,
    pub instance: String,
    /// Labels other than job/instance.
    pub labels: Labels,
}

/// A target group from static_configs or a file_sd file.
#[derive(Debug, Clone, Deserialize)]
struct Group {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Targets of `job` from its groups (`source` = the file for file_sd, for `__meta_filepath`).
fn targets_of(job: &Job, groups: &[(Group, Option<String>)]) -> Vec<Target> {
    let mut out = Vec::new();
    for (g, source) in groups {
        for addr in &g.targets {
            let mut l: Labels = vec![
                ("__address__".into(), addr.clone()),
                ("__scheme__".into(), job.scheme.clone()),
                ("__metrics_path__".into(), job.metrics_path.clone()),
                (
                    "__scrape_interval__".into(),
                    humantime::format_duration(job.interval).to_string(),
                ),
                (
                    "__scrape_timeout__".into(),
                    humantime::format_duration(job.timeout).to_string(),
                ),
                ("job".into(), job.name.clone()),
            ];
            for (k, vs) in &job.params {
                if let Some(v) = vs.first() {
                    l.push((format!("__param_{k}"), v.clone()));
                }
            }
            if let Some(s) = source {
                l.push(("__meta_filepath".into(), s.clone()));
            }
            for (k, v) in &g.labels {
                relabel::set(&mut l, k, v.clone());
            }
            if !relabel::process(&job.relabel, &mut l) {
                continue;
            }
            let get = |k: &str| {
                l.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let address = get("__address__");
            if address.is_empty() {
                continue;
            }
            let mut query: Vec<String> = Vec::new();
            for (k, v) in &l {
                if let Some(p) = k.strip_prefix("__param_") {
                    query.push(format!("{}={}", urlencode(p), urlencode(v)));
                }
            }
            for (k, vs) in &job.params {
                for v in vs.iter().skip(1) {
                    query.push(format!("{}={}", urlencode(k), urlencode(v)));
                }
            }
            let mut url = format!(
                "{}://{}{}",
                get("__scheme__"),
                address,
                get("__metrics_path__")
            );
            if !query.is_empty() {
                url.push('?');
                url.push_str(&query.join("&"));
            }
            let instance = match get("instance") {
                i if i.is_empty() => address.clone(),
                i => i,
            };
            let job_label = get("job");
            let mut labels: Labels = l
                .into_iter()
                .filter(|(k, v)| {
                    !k.starts_with("__") && k != "job" && k != "instance" && !v.is_empty()
                })
                .collect();
            labels.sort();
            out.push(Target {
                url,
                job: job_label,
                instance,
                labels,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn urlencode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// file_sd: the files matching a config's globs, with their modification times.
fn sd_files(job: &Job) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut out = Vec::new();
    for f in &job.file_sd {
        for p in &f.files {
            if let Ok(paths) = glob::glob(p) {
                for path in paths.flatten() {
                    let m = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                    out.push((path, m));
                }
            }
        }
    }
    out.sort();
    out
}

/// Read file_sd files: JSON or YAML lists of groups. Unreadable files are reported and skipped.
fn read_sd(files: &[(PathBuf, Option<SystemTime>)]) -> (Vec<(Group, Option<String>)>, Vec<String>) {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for (p, _) in files {
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        let parsed: Result<Vec<Group>, String> = if p.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(gs) => groups.extend(
                gs.into_iter()
                    .map(|g| (g, Some(p.to_string_lossy().into_owned()))),
            ),
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    (groups, errors)
}

/// A job's `static_configs` as target groups (with no discovery source).
fn static_groups(job: &Job) -> Vec<(Group, Option<String>)> {
    job.statics
        .iter()
        .map(|s| {
            (
                Group {
                    targets: s.targets.clone(),
                    labels: s.labels.clone(),
                },
                None,
            )
        })
        .collect()
}

pub struct PrometheusReceiver {
    jobs: Arc<Vec<Arc<Job>>>,
}

impl Receiver for PrometheusReceiver {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for job in self.jobs.iter() {
                tasks.spawn(run_job(job.clone(), ctx.clone(), out.clone()));
            }
            while tasks.join_next().await.is_some() {}
            Ok(())
        })
    }
}

/// Counters of one job.
#[derive(Clone)]
struct JobTelemetry {
    scrapes: crate::telemetry::Counter,
    samples: crate::telemetry::Counter,
    ctx: Context,
    job: String,
}

impl JobTelemetry {
    fn failure(&self, reason: &str) -> crate::telemetry::Counter {
        self.ctx.telemetry.counter(
            "celeriac_prometheus_scrape_failures_total",
            "Scrapes that failed, by reason (connect, timeout, http_status, too_large, body, parse).",
            &[("component", &*self.ctx.id), ("job", &self.job), ("reason", reason)],
        )
    }
}

async fn run_job(job: Arc<Job>, ctx: Context, out: Output) {
    let labels = [("component", &*ctx.id), ("job", job.name.as_str())];
    let tel = JobTelemetry {
        scrapes: ctx.telemetry.counter(
            "celeriac_prometheus_scrapes_total",
            "Scrapes attempted.",
            &labels,
        ),
        samples: ctx.telemetry.counter(
            "celeriac_prometheus_samples_scraped_total",
            "Samples read from pages (before metric relabeling).",
            &labels,
        ),
        ctx: ctx.clone(),
        job: job.name.clone(),
    };
    let tls = match &job.tls {
        None => None,
        Some(t) => match t.client_config(&[b"http/1.1"]) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(component = %ctx.id, job = %job.name, error = %e, "Cannot set up TLS for this job; it does not scrape.");
                return;
            }
        },
    };
    let client = scrape::client(tls, job.timeout);
    let statics = static_groups(&job);
    let mut running: HashMap<Target, CancellationToken> = HashMap::new();
    let mut handles = tokio::task::JoinSet::new();
    let mut files_seen: Option<Vec<(PathBuf, Option<SystemTime>)>> = None;
    let refresh = job
        .file_sd
        .iter()
        .map(|f| f.refresh_interval)
        .min()
        .unwrap_or(Duration::MAX);
    let mut last_refresh = Instant::now();
    let mut warn = Throttle::new(Duration::from_secs(30));
    loop {
        let files = sd_files(&job);
        let changed = files_seen.as_ref() != Some(&files) || last_refresh.elapsed() >= refresh;
        if changed {
            last_refresh = Instant::now();
            let (mut groups, errors) = read_sd(&files);
            for e in errors {
                if let Some(held) = warn.ready() {
                    tracing::warn!(component = %ctx.id, job = %job.name, error = %e, earlier = held, "Cannot read a file_sd file; its targets are left out.");
                }
            }
            files_seen = Some(files);
            groups.extend(statics.iter().cloned());
            let want = targets_of(&job, &groups);
            running.retain(|t, stop| {
                let keep = want.contains(t);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for t in want {
                if running.contains_key(&t) {
                    continue;
                }
                let stop = ctx.shutdown.child_token();
                running.insert(t.clone(), stop.clone());
                handles.spawn(run_target(
                    job.clone(),
                    t,
                    client.clone(),
                    out.clone(),
                    tel.clone(),
                    stop,
                ));
            }
        }
        if job.file_sd.is_empty() {
            // Static targets only: nothing to watch.
            ctx.shutdown.cancelled().await;
            break;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            Some(_) = handles.join_next(), if !handles.is_empty() => {}
        }
    }
    while handles.join_next().await.is_some() {}
}

async fn run_target(
    job: Arc<Job>,
    t: Target,
    client: scrape::HttpClient,
    out: Output,
    tel: JobTelemetry,
    stop: CancellationToken,
) {
    let url: hyper::Uri = match t.url.parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(component = %tel.ctx.id, job = %job.name, url = %t.url, error = %e, "Target URL is invalid; it is not scraped.");
            return;
        }
    };
    let info = convert::TargetInfo {
        job: &t.job,
        instance: &t.instance,
        labels: &t.labels,
        honor_labels: job.honor_labels,
        honor_timestamps: job.honor_timestamps,
    };
    let mut state = convert::TargetState::default();
    let mut warn = Throttle::new(Duration::from_secs(30));
    let mut tick = tokio::time::interval(job.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        tel.scrapes.inc();
        let started = Instant::now();
        let auth = match job.auth.as_ref().map(AuthSource::header).transpose() {
            Ok(a) => a,
            Err(e) => {
                tel.failure("auth").inc();
                if let Some(held) = warn.ready() {
                    tracing::warn!(component = %tel.ctx.id, job = %job.name, error = %e, earlier = held, "Cannot read the scrape credentials.");
                }
                continue;
            }
        };
        let fetched =
            scrape::fetch(&client, &url, auth.as_deref(), job.timeout, job.body_limit).await;
        let now = unix_nanos();
        let result = match fetched {
            Ok((text, om)) => parse::parse(&text, om).map_err(|e| ("parse", e.to_string())),
            Err(e) => Err((e.reason(), e.to_string())),
        };
        let duration = started.elapsed().as_secs_f64();
        let batch = match result {
            Ok(families) => {
                tel.samples.add(convert::sample_count(&families) as u64);
                let scraped = convert::relabel_samples(families, &job.metric_relabel, &info);
                state.convert(&scraped, &info, now, duration)
            }
            Err((reason, msg)) => {
                tel.failure(reason).inc();
                if let Some(held) = warn.ready() {
                    tracing::warn!(component = %tel.ctx.id, job = %job.name, target = %t.url, reason, error = %msg, earlier = held, "Scrape failed; up is 0 and the target's series are marked stale.");
                }
                state.failed(&info, now, duration)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            r = out.send(Signal::Metrics(Arc::new(vec![batch]))) => {
                if r.is_err() { return; }
            }
        }
    }
    // Removed by service discovery (not shutdown): its series end now.
    if !tel.ctx.shutdown.is_cancelled() {
        let _ = out
            .send(Signal::Metrics(Arc::new(vec![
                state.gone(&info, unix_nanos())
            ])))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(yaml: &str) -> Result<Vec<Arc<Job>>, DecodeError> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let c: PrometheusReceiverConfig = config::decode(&v)?;
        compile(&c.config)
    }

    #[test]
    fn collector_shape_and_targets() {
        let j = jobs(
            r#"
config:
  global: { scrape_interval: 30s }
  scrape_configs:
    - job_name: app
      scrape_interval: 5s
      params: { module: [a, b] }
      body_size_limit: 10MB
      static_configs:
        - targets: ["127.0.0.1:8000", "127.0.0.1:8001"]
          labels: { env: prod }
      relabel_configs:
        - { source_labels: [__address__], regex: '.*:8001', action: drop }
        - { target_label: team, replacement: evals }
      metric_relabel_configs:
        - { source_labels: [__name__], regex: 'python_.*', action: drop }
"#,
        )
        .unwrap();
        assert_eq!(j[0].interval, Duration::from_secs(5));
        assert_eq!(
            j[0].timeout,
            Duration::from_secs(5),
            "min(global timeout, interval)"
        );
        assert_eq!(j[0].body_limit, 10 << 20);
        let groups = static_groups(&j[0]);
        let t = targets_of(&j[0], &groups);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].url, "http://127.0.0.1:8000/metrics?module=a&module=b");
        assert_eq!(t[0].instance, "127.0.0.1:8000");
        assert_eq!(t[0].job, "app");
        assert_eq!(
            t[0].labels,
            vec![
                ("env".to_string(), "prod".to_string()),
                ("team".into(), "evals".into())
            ]
        );
    }

    #[test]
    fn bad_configs() {
        for (y, key) in [
            ("{config: {scrape_configs: [{job_name: a, scrape_interval: 1s, scrape_timeout: 2s}]}}", "scrape_timeout"),
            ("{config: {scrape_configs: [{job_name: a}, {job_name: a}]}}", "job_name"),
            ("{config: {scrape_configs: [{job_name: a, scheme: ftp}]}}", "scheme"),
            ("{config: {scrape_configs: [{job_name: a, tls_config: {insecure_skip_verify: true}}]}}", "insecure_skip_verify"),
            ("{config: {scrape_configs: [{job_name: a, basic_auth: {username: u}, authorization: {credentials: x}}]}}", "authorization"),
            ("{config: {scrape_configs: [{job_name: a, relabel_configs: [{action: keep}]}]}}", "relabel_configs[0]"),
        ] {
            let e = jobs(y).err().unwrap_or_else(|| panic!("accepted: {y}"));
            assert!(e.to_string().contains(key), "{y}: {e}");
        }
        assert!(jobs("{config: {scrape_configs: [{job_name: a, nope: 1}]}}").is_err());
    }

    #[test]
    fn auth_headers() {
        let b = AuthSource::Basic("u".into(), Some(Secret::default()), None);
        assert_eq!(b.header().unwrap(), "Basic dTo=");
        let dir = std::env::temp_dir().join(format!("celeriac-prom-auth-{}", std::process::id()));
        std::fs::write(&dir, "tok\n").unwrap();
        let t = AuthSource::Bearer("Bearer".into(), None, Some(dir.clone()));
        assert_eq!(t.header().unwrap(), "Bearer tok");
        let _ = std::fs::remove_file(dir);
    }
}
