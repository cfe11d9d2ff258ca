//! OTLP metrics → Prometheus series: the naming, label and type rules that the `prometheus`
//! (scrape) and `prometheus_remote_write` exporters share. Not a component.
//!
//! Conversion follows the collector's Prometheus exporters, except that unit suffixes are never
//! added: celeriac's metric names already match celery-exporter's (`celery_task_runtime` is a
//! histogram in seconds, with no `_seconds`).
//!
//! * names are sanitized to `[a-zA-Z_:][a-zA-Z0-9_:]*` (invalid characters become `_`, a leading
//!   digit gets a `_` prefix);
//! * a monotonic cumulative Sum is a `counter` named with `_total` (appended only if missing);
//!   a non-monotonic Sum and a Gauge are `gauge`s;
//! * an explicit-bucket Histogram is `_bucket{le=...}` (cumulative counts, `le="+Inf"` = count),
//!   `_sum` (when the point has one) and `_count`; a Summary is `{quantile=...}`, `_sum`, `_count`
//!   (see [`for_each_series`]);
//! * exponential histograms and delta temporality are not supported: their points are counted in
//!   [`ConvertStats::unsupported`] (the exporters count them as dropped, `reason="unsupported"`);
//! * data point attributes become labels (names sanitized to `[a-zA-Z_][a-zA-Z0-9_]*`, values
//!   rendered as strings, empty values left out, keys that collide after sanitizing joined with
//!   `;` in the order of the original keys). A point attribute named `le` on a histogram or
//!   `quantile` on a summary becomes `exported_le` / `exported_quantile`;
//! * a point flagged `NO_RECORDED_VALUE` ends its series ([`Point::no_recorded_value`]).
//!
//! Resource attributes ([`ResourceLabels`]): `service.name` → `job` (prefixed with
//! `service.namespace/` when set), `service.instance.id` → `instance`, the others sanitized.
//! Label precedence when names collide: data point attributes, then resource attributes, then
//! the exporter's constant labels (`const_labels`, `external_labels`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, SummaryDataPoint,
};
use serde::{Deserialize, Deserializer};

use crate::otlp::any_to_string;

/// `DataPointFlags::NoRecordedValueMask`.
pub const NO_RECORDED_VALUE: u32 = 1;

/// Sorted `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// The value of one data point.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Number(f64),
    Histogram {
        /// `(upper bound, cumulative count)` for the finite bounds.
        buckets: Vec<(f64, u64)>,
        sum: Option<f64>,
        count: u64,
    },
    Summary {
        /// `(quantile, value)`.
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
}

/// What identifies a metric family: exposed name, type and help text.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub help: &'a str,
}

/// One converted data point.
#[derive(Debug)]
pub struct Point<'a> {
    pub meta: Meta<'a>,
    /// Sorted, unique, no empty names or values; without `__name__`, `le`, `quantile`.
    pub labels: Labels,
    pub sample: Sample,
    pub time_unix_nano: u64,
    /// The point is flagged `NO_RECORDED_VALUE`: its series ends (`sample` carries no value).
    pub no_recorded_value: bool,
}

/// Every series of a point, as `(name suffix, extra label, value)`: the number itself;
/// `_bucket{le}` per finite bound then `le="+Inf"`, `_sum` (when set) and `_count` for a
/// histogram; `{quantile}` per quantile, `_sum` and `_count` for a summary.
pub fn for_each_series(
    sample: &Sample,
    mut f: impl FnMut(&'static str, Option<(&str, &str)>, f64),
) {
    match sample {
        Sample::Number(v) => f("", None, *v),
        Sample::Histogram {
            buckets,
            sum,
            count,
        } => {
            let mut bound = String::new();
            for (le, c) in buckets {
                bound.clear();
                format_bound(&mut bound, *le);
                f("_bucket", Some(("le", &bound)), *c as f64);
            }
            f("_bucket", Some(("le", "+Inf")), *count as f64);
            if let Some(sum) = sum {
                f("_sum", None, *sum);
            }
            f("_count", None, *count as f64);
        }
        Sample::Summary {
            quantiles,
            sum,
            count,
        } => {
            let mut q = String::new();
            for (quantile, v) in quantiles {
                q.clear();
                format_bound(&mut q, *quantile);
                f("", Some(("quantile", &q)), *v);
            }
            f("_sum", None, *sum);
            f("_count", None, *count as f64);
        }
    }
}

/// A bucket bound or quantile the way Prometheus writes it: `0.005`, `1`, `2.5`, `+Inf`.
pub fn format_bound(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `true` or the collector's `{ enabled: true }` (for `resource_to_telemetry_conversion`).
pub fn bool_or_enabled<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Enabled {
        #[serde(default)]
        enabled: bool,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Bool(bool),
        Struct(Enabled),
    }
    match Form::deserialize(d) {
        Ok(Form::Bool(b)) => Ok(b),
        Ok(Form::Struct(e)) => Ok(e.enabled),
        Err(_) => Err(serde::de::Error::custom(
            "expected true, false or { enabled: true|false }",
        )),
    }
}

/// Check constant labels from the config (`const_labels`, `external_labels`).
pub fn check_label_names(
    key: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), crate::config::DecodeError> {
    for name in labels.keys() {
        if !is_label_name(name) || name.starts_with("__") {
            return Err(crate::config::DecodeError::new(
                format!("{key}.{name}"),
                "not a valid label name: expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __",
            ));
        }
    }
    Ok(())
}

/// Which resource attributes become labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceLabels {
    /// None (a scrape: Prometheus adds `job` and `instance` itself).
    Ignore,
    /// `job` and `instance` only (remote write: there is no scrape target).
    JobInstance,
    /// All of them (`resource_to_telemetry_conversion`).
    All,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Points of unsupported types or temporalities.
    pub unsupported: u64,
    /// Points of metrics whose name sanitizes to nothing.
    pub invalid: u64,
}

/// Turns OTLP metrics into [`Point`]s, per an exporter's settings.
pub struct Converter {
    const_labels: Vec<(String, String)>,
    resource: ResourceLabels,
    /// `namespace_` before every metric name (the collector's `namespace`).
    prefix: String,
    /// Append `_total` to monotonic sums (the collector's `add_metric_suffixes`, default on).
    suffixes: bool,
}

impl Converter {
    /// `const_labels` must hold valid label names (see [`check_label_names`]).
    pub fn new(const_labels: &BTreeMap<String, String>, resource: ResourceLabels) -> Self {
        Converter {
            const_labels: const_labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            resource,
            prefix: String::new(),
            suffixes: true,
        }
    }

    /// The collector's `namespace` and `add_metric_suffixes` settings.
    pub fn with_names(mut self, namespace: &str, add_metric_suffixes: bool) -> Self {
        let ns = sanitize_metric_name(namespace);
        self.prefix = if ns.is_empty() {
            String::new()
        } else {
            format!("{ns}_")
        };
        self.suffixes = add_metric_suffixes;
        self
    }

    /// Convert one batch, handing every point to `f` in input order.
    pub fn convert(&self, batch: &[ResourceMetrics], mut f: impl FnMut(Point<'_>)) -> ConvertStats {
        let mut stats = ConvertStats::default();
        for rm in batch {
            // Labels every point of this resource starts from.
            let mut base: BTreeMap<String, String> = self.const_labels.iter().cloned().collect();
            if self.resource != ResourceLabels::Ignore {
                if let Some(res) = &rm.resource {
                    let mut labels = resource_labels(&res.attributes);
                    if self.resource == ResourceLabels::JobInstance {
                        labels.retain(|k, _| k == "job" || k == "instance");
                    }
                    base.extend(labels);
                }
            }
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    convert_metric(self, m, &base, &mut stats, &mut f);
                }
            }
        }
        stats
    }
}

fn convert_metric(
    conv: &Converter,
    m: &Metric,
    base: &BTreeMap<String, String>,
    stats: &mut ConvertStats,
    f: &mut impl FnMut(Point<'_>),
) {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let Some(data) = &m.data else { return };
    let mut name = sanitize_metric_name(&m.name);
    if name.is_empty() {
        stats.invalid += points(data);
        return;
    }
    if !conv.prefix.is_empty() {
        name.insert_str(0, &conv.prefix);
    }
    fn meta<'a>(name: &'a str, kind: Kind, m: &'a Metric) -> Meta<'a> {
        Meta {
            name,
            kind,
            help: &m.description,
        }
    }
    match data {
        metric::Data::Gauge(g) => {
            for p in &g.data_points {
                number(meta(&name, Kind::Gauge, m), p, base, f);
            }
        }
        metric::Data::Sum(s) => {
            if s.aggregation_temporality != cumulative {
                stats.unsupported += s.data_points.len() as u64;
                return;
            }
            let kind = if s.is_monotonic {
                if conv.suffixes && !name.ends_with("_total") {
                    name.push_str("_total");
                }
                Kind::Counter
            } else {
                Kind::Gauge
            };
            for p in &s.data_points {
                number(meta(&name, kind, m), p, base, f);
            }
        }
        metric::Data::Histogram(h) => {
            if h.aggregation_temporality != cumulative {
                stats.unsupported += h.data_points.len() as u64;
                return;
            }
            for p in &h.data_points {
                histogram(meta(&name, Kind::Histogram, m), p, base, f);
            }
        }
        metric::Data::Summary(s) => {
            for p in &s.data_points {
                summary(meta(&name, Kind::Summary, m), p, base, f);
            }
        }
        metric::Data::ExponentialHistogram(h) => {
            stats.unsupported += h.data_points.len() as u64;
        }
    }
}

fn number(
    meta: Meta<'_>,
    p: &NumberDataPoint,
    base: &BTreeMap<String, String>,
    f: &mut impl FnMut(Point<'_>),
) {
    let no_recorded_value = p.flags & NO_RECORDED_VALUE != 0;
    let v = match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None if no_recorded_value => f64::NAN,
        None => return,
    };
    f(Point {
        meta,
        labels: point_labels(base, &p.attributes, None),
        sample: Sample::Number(v),
        time_unix_nano: p.time_unix_nano,
        no_recorded_value,
    });
}

fn histogram(
    meta: Meta<'_>,
    p: &HistogramDataPoint,
    base: &BTreeMap<String, String>,
    f: &mut impl FnMut(Point<'_>),
) {
    let mut cumulative = 0u64;
    let buckets = p
        .explicit_bounds
        .iter()
        .zip(&p.bucket_counts)
        .map(|(b, c)| {
            cumulative = cumulative.saturating_add(*c);
            (*b, cumulative)
        })
        // A +Inf or NaN bound is invalid in OTLP; `+Inf` is written from `count`.
        .filter(|(b, _)| b.is_finite() || *b == f64::NEG_INFINITY)
        .collect();
    f(Point {
        meta,
        labels: point_labels(base, &p.attributes, Some("le")),
        sample: Sample::Histogram {
            buckets,
            sum: p.sum,
            count: p.count,
        },
        time_unix_nano: p.time_unix_nano,
        no_recorded_value: p.flags & NO_RECORDED_VALUE != 0,
    });
}

fn summary(
    meta: Meta<'_>,
    p: &SummaryDataPoint,
    base: &BTreeMap<String, String>,
    f: &mut impl FnMut(Point<'_>),
) {
    f(Point {
        meta,
        labels: point_labels(base, &p.attributes, Some("quantile")),
        sample: Sample::Summary {
            quantiles: p
                .quantile_values
                .iter()
                .map(|q| (q.quantile, q.value))
                .collect(),
            sum: p.sum,
            count: p.count,
        },
        time_unix_nano: p.time_unix_nano,
        no_recorded_value: p.flags & NO_RECORDED_VALUE != 0,
    });
}

fn points(data: &metric::Data) -> u64 {
    (match data {
        metric::Data::Gauge(g) => g.data_points.len(),
        metric::Data::Sum(s) => s.data_points.len(),
        metric::Data::Histogram(h) => h.data_points.len(),
        metric::Data::ExponentialHistogram(h) => h.data_points.len(),
        metric::Data::Summary(s) => s.data_points.len(),
    }) as u64
}

/// Resource attributes as labels: `service.name` → `job` (`namespace/name` when
/// `service.namespace` is set), `service.instance.id` → `instance`, the rest sanitized.
pub fn resource_labels(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    let mut namespace = None;
    let mut service = None;
    let mut rest: Vec<(&str, String)> = Vec::with_capacity(attrs.len());
    for kv in attrs {
        let Some(v) = kv.value.as_ref().map(any_to_string) else {
            continue;
        };
        match kv.key.as_str() {
            "service.name" => service = Some(v),
            "service.namespace" => namespace = Some(v),
            "service.instance.id" => rest.push(("instance", v)),
            k => rest.push((k, v)),
        }
    }
    let mut out = join_labels(rest);
    match (namespace, service) {
        (Some(ns), Some(svc)) if !ns.is_empty() => {
            out.insert("job".to_string(), format!("{ns}/{svc}"));
        }
        (ns, Some(svc)) => {
            out.insert("job".to_string(), svc);
            if let Some(ns) = ns.filter(|ns| !ns.is_empty()) {
                out.insert("service_namespace".to_string(), ns);
            }
        }
        (Some(ns), None) => {
            out.insert("service_namespace".to_string(), ns);
        }
        (None, None) => {}
    }
    out.retain(|_, v| !v.is_empty());
    out
}

/// Sanitize keys; keys colliding after sanitizing get their values joined with `;`, in the
/// order of the original keys.
fn join_labels(mut pairs: Vec<(&str, String)>) -> BTreeMap<String, String> {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in pairs {
        if v.is_empty() {
            continue;
        }
        let Some(k) = sanitize_label_name(k) else {
            continue;
        };
        match out.get_mut(&k) {
            Some(existing) => {
                existing.push(';');
                existing.push_str(&v);
            }
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

/// The sorted labels of one point: `base` overridden by the point's attributes. `reserved`
/// (`le`, `quantile`) is renamed `exported_<reserved>`; `__name__` is never a label here.
fn point_labels(
    base: &BTreeMap<String, String>,
    attrs: &[KeyValue],
    reserved: Option<&str>,
) -> Labels {
    // Fast path (every point of celery_correlate): no base labels and plain attributes (valid,
    // distinct label names, string values, none reserved) are the labels as they are, sorted.
    // Runs once per point per batch, so skipping the BTreeMap and sanitizing copies matters.
    if base.is_empty() {
        let mut out: Labels = Vec::with_capacity(attrs.len());
        let mut plain = true;
        for kv in attrs {
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(v))
                    if reserved != Some(kv.key.as_str()) && is_label_name(&kv.key) =>
                {
                    if !v.is_empty() {
                        out.push((kv.key.clone(), v.clone()));
                    }
                }
                _ => {
                    plain = false;
                    break;
                }
            }
        }
        if plain {
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if out.windows(2).all(|w| w[0].0 != w[1].0) {
                return out;
            }
        }
    }
    let pairs: Vec<(&str, String)> = attrs
        .iter()
        .filter_map(|kv| Some((kv.key.as_str(), any_to_string(kv.value.as_ref()?))))
        .collect();
    let own = join_labels(pairs);
    if own.is_empty() && reserved.is_none_or(|r| !base.contains_key(r)) {
        return base.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    let mut all = base.clone();
    all.extend(own);
    all.remove("__name__");
    if let Some(r) = reserved {
        if let Some(v) = all.remove(r) {
            all.insert(format!("exported_{r}"), v);
        }
    }
    all.into_iter().collect()
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: invalid characters become `_`, a leading digit gets a `_`.
pub fn sanitize_metric_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: invalid characters become `_`, a leading digit gets `key_`.
/// `None` for an empty key.
pub fn sanitize_label_name(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 4);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push_str("key_");
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    Some(out)
}

pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::str_kv as s;
    use opentelemetry_proto::tonic::resource::v1::Resource;

    #[test]
    fn histogram_series_in_order() {
        let h = Sample::Histogram {
            buckets: vec![(0.5, 1), (1.0, 3)],
            sum: Some(2.0),
            count: 4,
        };
        let mut got = Vec::new();
        for_each_series(&h, |suffix, extra, v| {
            got.push(format!("{suffix}{extra:?}={v}"));
        });
        assert_eq!(
            got,
            [
                "_bucketSome((\"le\", \"0.5\"))=1",
                "_bucketSome((\"le\", \"1\"))=3",
                "_bucketSome((\"le\", \"+Inf\"))=4",
                "_sumNone=2",
                "_countNone=4"
            ]
        );
    }

    #[test]
    fn resource_modes_and_reserved_names() {
        let rm = ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "shop"),
                    s("service.namespace", "eu"),
                    s("service.instance.id", "w1"),
                    s("host.name", "h"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![opentelemetry_proto::tonic::metrics::v1::ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(metric::Data::Gauge(
                        opentelemetry_proto::tonic::metrics::v1::Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![s("__name__", "x"), s("job", "mine")],
                                value: Some(number_data_point::Value::AsInt(1)),
                                ..Default::default()
                            }],
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let ext: BTreeMap<String, String> = [("cluster".to_string(), "c1".to_string())].into();
        let labels = |mode| {
            let mut out = Vec::new();
            Converter::new(&ext, mode).convert(std::slice::from_ref(&rm), |p| out.push(p.labels));
            out.remove(0)
        };
        let l = |v: &[(&str, &str)]| -> Labels {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            labels(ResourceLabels::Ignore),
            l(&[("cluster", "c1"), ("job", "mine")])
        );
        assert_eq!(
            labels(ResourceLabels::JobInstance),
            l(&[("cluster", "c1"), ("instance", "w1"), ("job", "mine")])
        );
        assert_eq!(
            labels(ResourceLabels::All),
            l(&[
                ("cluster", "c1"),
                ("host_name", "h"),
                ("instance", "w1"),
                ("job", "mine")
            ])
        );
    }

    #[test]
    fn label_names() {
        assert!(is_label_name("_a1"));
        assert!(!is_label_name("1a"));
        assert_eq!(sanitize_label_name("1st.x").as_deref(), Some("key_1st_x"));
        assert_eq!(sanitize_metric_name("9lives.x-y"), "_9lives_x_y");
        let bad: BTreeMap<String, String> = [("__x".to_string(), "v".to_string())].into();
        assert_eq!(
            check_label_names("external_labels", &bad).unwrap_err().path,
            "external_labels.__x"
        );
    }
}
