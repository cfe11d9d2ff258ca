//! One scrape → OTLP metrics, as the collector's `prometheus` receiver shapes them, and the
//! per-target memory that makes staleness work.
//!
//! * counters → cumulative monotonic Sums named as exposed (`foo_total`), start time from
//!   `foo_created` (in the family, OpenMetrics; or the separate `foo_created` gauge that
//!   prometheus_client writes in the text format), else from when the series was first seen
//!   (reset to the scrape time when the value goes down);
//! * histograms → cumulative Histograms (bucket counts de-accumulated, `+Inf` from `_count`),
//!   summaries → Summaries, both with `_created` start times; gauges, untyped, info, stateset
//!   and gauge-histogram samples → Gauges of the sample's name;
//! * the resource: `service.name` = `job`, `service.instance.id` = `instance`; other target
//!   labels and the sample's labels are point attributes;
//! * `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling`, `scrape_series_added` per scrape;
//! * a series present in the previous scrape and absent now (or every series of a target that
//!   failed or went away) is sent once more flagged `NO_RECORDED_VALUE`, which the remote-write
//!   exporter turns into Prometheus's staleness marker.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, Sum, Summary,
    SummaryDataPoint,
};

use super::parse::{Family, Kind};
use super::relabel::{self, Labels, Rule};
use crate::otlp::{self, str_kv as kv};

const NO_RECORDED_VALUE: u32 = 1;

/// What one scrape produced, before conversion: the families after metric relabeling.
pub struct Scraped {
    pub families: Vec<Family>,
    pub samples_scraped: usize,
    pub samples_post_relabel: usize,
}

/// Per target: the last point of every series (for staleness) and first-seen start times.
#[derive(Default)]
pub struct TargetState {
    last: HashMap<String, Metric>,
    starts: HashMap<String, (u64, f64)>,
}

pub struct TargetInfo<'a> {
    pub job: &'a str,
    pub instance: &'a str,
    /// Target labels other than job/instance (and no `__` ones).
    pub labels: &'a Labels,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
}

fn series_key(name: &str, attrs: &[KeyValue]) -> String {
    let mut k = String::with_capacity(64);
    k.push_str(name);
    for a in attrs {
        k.push('\u{0}');
        k.push_str(&a.key);
        k.push('=');
        if let Some(any_value::Value::StringValue(s)) =
            a.value.as_ref().and_then(|v| v.value.as_ref())
        {
            k.push_str(s);
        }
    }
    k
}

/// Apply `metric_relabel_configs` and honor_labels to every sample; count what stays.
pub fn relabel_samples(
    mut families: Vec<Family>,
    rules: &[Rule],
    target: &TargetInfo<'_>,
) -> Scraped {
    let mut scraped = 0;
    let mut kept = 0;
    for f in &mut families {
        let samples = std::mem::take(&mut f.samples);
        scraped += samples.len();
        for mut s in samples {
            // Target labels against exposed ones.
            let mut labels: Labels = Vec::with_capacity(s.labels.len() + target.labels.len() + 1);
            labels.push(("__name__".into(), std::mem::take(&mut s.name)));
            for (k, v) in s.labels.drain(..) {
                let clash = matches!(k.as_str(), "job" | "instance")
                    || target.labels.iter().any(|(t, _)| *t == k);
                if clash && !target.honor_labels {
                    labels.push((format!("exported_{k}"), v));
                } else {
                    labels.push((k, v));
                }
            }
            for (k, v) in target.labels {
                if !labels.iter().any(|(n, _)| n == k) {
                    labels.push((k.clone(), v.clone()));
                }
            }
            if !rules.is_empty() {
                // Relabel rules see job and instance too.
                labels.push(("job".into(), target.job.into()));
                labels.push(("instance".into(), target.instance.into()));
                if !relabel::process(rules, &mut labels) {
                    continue;
                }
                labels.retain(|(k, v)| {
                    !((k == "job" && v == target.job) || (k == "instance" && v == target.instance))
                });
            }
            let Some(pos) = labels.iter().position(|(k, _)| k == "__name__") else {
                continue;
            };
            s.name = labels.remove(pos).1;
            labels.retain(|(k, v)| !k.starts_with("__") && !v.is_empty());
            labels.sort();
            s.labels = labels;
            f.samples.push(s);
            kept += 1;
        }
    }
    Scraped {
        families,
        samples_scraped: scraped,
        samples_post_relabel: kept,
    }
}

fn attrs_of(labels: &Labels, skip: Option<&str>) -> Vec<KeyValue> {
    labels
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .map(|(k, v)| kv(k, v))
        .collect()
}

/// A histogram or summary family's metric.
fn family_metric(f: &Family, data: metric::Data) -> Metric {
    Metric {
        name: f.name.clone(),
        description: f.help.clone(),
        unit: f.unit.clone(),
        data: Some(data),
        ..Default::default()
    }
}

fn labels_without(labels: &Labels, skip: &str) -> Labels {
    labels.iter().filter(|(k, _)| k != skip).cloned().collect()
}

/// The samples of one histogram or summary series (its labels without `le` / `quantile`).
#[derive(Default)]
struct Acc {
    /// `(le, cumulative count)` buckets or `(quantile, value)` pairs.
    points: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
    created: Option<f64>,
    ts: Option<i64>,
}

/// A histogram's or summary's samples as series, in first-seen order: a sample named
/// `<family><point_suffix>` is a point keyed by its label `point_label`.
fn accumulate(f: &Family, point_suffix: &str, point_label: &str) -> Vec<(Labels, Acc)> {
    let mut accs: Vec<(Labels, Acc)> = Vec::new();
    for s in &f.samples {
        let ls = labels_without(&s.labels, point_label);
        let i = match accs.iter().position(|(l, _)| *l == ls) {
            Some(i) => i,
            None => {
                accs.push((ls, Acc::default()));
                accs.len() - 1
            }
        };
        let a = &mut accs[i].1;
        a.ts = a.ts.or(s.timestamp_ms);
        match &s.name[f.name.len().min(s.name.len())..] {
            suffix if suffix == point_suffix => {
                if let Some(p) = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == point_label)
                    .and_then(|(_, v)| super::parse::parse_value(v))
                {
                    a.points.push((p, s.value));
                }
            }
            "_count" => a.count = Some(s.value),
            "_sum" => a.sum = Some(s.value),
            "_created" => a.created = Some(s.value),
            _ => {}
        }
    }
    accs
}

impl TargetState {
    /// Start time of a cumulative series: its `_created` (seconds) when that is valid, else
    /// [`Self::start_for`].
    fn start_of(&mut self, key: &str, created: Option<f64>, value: f64, now: u64) -> u64 {
        match created.filter(|c| c.is_finite() && *c > 0.0) {
            Some(c) => (c * 1e9) as u64,
            None => self.start_for(key, value, now),
        }
    }

    /// Start time for a cumulative series without `_created`: first seen, reset on decrease.
    fn start_for(&mut self, key: &str, value: f64, now: u64) -> u64 {
        match self.starts.get_mut(key) {
            Some((start, last)) => {
                if value < *last {
                    *start = now.saturating_sub(1_000_000);
                }
                *last = value;
                *start
            }
            None => {
                self.starts.insert(key.to_string(), (now, value));
                now
            }
        }
    }

    /// Convert a successful scrape; `now` in Unix nanoseconds.
    pub fn convert(
        &mut self,
        scraped: &Scraped,
        target: &TargetInfo<'_>,
        now: u64,
        duration_s: f64,
    ) -> ResourceMetrics {
        let ts = |s: &Option<i64>| match s {
            Some(ms) if target.honor_timestamps && *ms > 0 => *ms as u64 * 1_000_000,
            _ => now,
        };
        // `<base>_created` gauges (text format) by (base, labels).
        let mut created: HashMap<(String, Labels), f64> = HashMap::new();
        for f in &scraped.families {
            for s in &f.samples {
                if let Some(base) = s.name.strip_suffix("_created") {
                    created.insert((base.to_string(), s.labels.clone()), s.value);
                }
            }
        }
        let mut metrics: Vec<Metric> = Vec::new();
        let mut current: HashMap<String, Metric> = HashMap::new();
        let mut series_added = 0usize;
        let mut push = |state: &mut TargetState, m: Metric, key: String| {
            if !state.last.contains_key(&key) {
                series_added += 1;
            }
            current.insert(key, m.clone());
            metrics.push(m);
        };
        for f in &scraped.families {
            match f.kind {
                Kind::Counter => {
                    let base = f.name.strip_suffix("_total").unwrap_or(&f.name);
                    for s in &f.samples {
                        if s.name.ends_with("_created") {
                            continue;
                        }
                        let name = if s.name == base || s.name == f.name {
                            s.name.clone()
                        } else {
                            format!("{base}_total")
                        };
                        let attrs = attrs_of(&s.labels, None);
                        let key = series_key(&name, &attrs);
                        let start = self.start_of(
                            &key,
                            created.get(&(base.to_string(), s.labels.clone())).copied(),
                            s.value,
                            now,
                        );
                        let m = Metric {
                            name,
                            description: f.help.clone(),
                            unit: f.unit.clone(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: vec![NumberDataPoint {
                                    attributes: attrs,
                                    start_time_unix_nano: start,
                                    time_unix_nano: ts(&s.timestamp_ms),
                                    value: Some(number_data_point::Value::AsDouble(s.value)),
                                    ..Default::default()
                                }],
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        };
                        push(self, m, key);
                    }
                }
                Kind::Histogram => {
                    for (ls, mut a) in accumulate(f, "_bucket", "le") {
                        a.points.sort_by(|x, y| x.0.total_cmp(&y.0));
                        let count = a
                            .count
                            .or_else(|| a.points.iter().find(|b| b.0 == f64::INFINITY).map(|b| b.1))
                            .unwrap_or(0.0);
                        let finite: Vec<(f64, f64)> = a
                            .points
                            .iter()
                            .copied()
                            .filter(|b| b.0.is_finite())
                            .collect();
                        let mut prev = 0.0;
                        let mut counts = Vec::with_capacity(finite.len() + 1);
                        for (_, c) in &finite {
                            counts.push((c - prev).max(0.0) as u64);
                            prev = *c;
                        }
                        counts.push((count - prev).max(0.0) as u64);
                        let attrs = attrs_of(&ls, None);
                        let key = series_key(&f.name, &attrs);
                        let created = a
                            .created
                            .or_else(|| created.get(&(f.name.clone(), ls.clone())).copied());
                        let start = self.start_of(&key, created, count, now);
                        let m = family_metric(
                            f,
                            metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    attributes: attrs,
                                    start_time_unix_nano: start,
                                    time_unix_nano: ts(&a.ts),
                                    count: count as u64,
                                    sum: a.sum,
                                    bucket_counts: counts,
                                    explicit_bounds: finite.iter().map(|b| b.0).collect(),
                                    ..Default::default()
                                }],
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            }),
                        );
                        push(self, m, key);
                    }
                }
                Kind::Summary => {
                    for (ls, a) in accumulate(f, "", "quantile") {
                        let attrs = attrs_of(&ls, None);
                        let key = series_key(&f.name, &attrs);
                        let count = a.count.unwrap_or(0.0);
                        let created = a
                            .created
                            .or_else(|| created.get(&(f.name.clone(), ls.clone())).copied());
                        let start = self.start_of(&key, created, count, now);
                        let m = family_metric(
                            f,
                            metric::Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    attributes: attrs,
                                    start_time_unix_nano: start,
                                    time_unix_nano: ts(&a.ts),
                                    count: count as u64,
                                    sum: a.sum.unwrap_or(0.0),
                                    quantile_values: a
                                        .points
                                        .iter()
                                        .map(|(q, v)| ValueAtQuantile {
                                            quantile: *q,
                                            value: *v,
                                        })
                                        .collect(),
                                    ..Default::default()
                                }],
                            }),
                        );
                        push(self, m, key);
                    }
                }
                _ => {
                    for s in &f.samples {
                        let attrs = attrs_of(&s.labels, None);
                        let key = series_key(&s.name, &attrs);
                        let m = gauge(
                            &s.name,
                            &f.help,
                            &f.unit,
                            attrs,
                            ts(&s.timestamp_ms),
                            s.value,
                        );
                        push(self, m, key);
                    }
                }
            }
        }
        let stale = self.stale_except(&current, now);
        metrics.extend(stale);
        self.last = current;
        self.starts.retain(|k, _| self.last.contains_key(k));
        metrics.extend(scrape_metrics(
            target,
            now,
            1.0,
            duration_s,
            Some((
                scraped.samples_scraped,
                scraped.samples_post_relabel,
                series_added,
            )),
        ));
        resource(target, metrics)
    }

    /// A failed scrape (or a target gone): `up` 0 and every known series stale.
    pub fn failed(
        &mut self,
        target: &TargetInfo<'_>,
        now: u64,
        duration_s: f64,
    ) -> ResourceMetrics {
        let mut metrics = self.stale_except(&HashMap::new(), now);
        self.last.clear();
        self.starts.clear();
        metrics.extend(scrape_metrics(target, now, 0.0, duration_s, None));
        resource(target, metrics)
    }

    /// The target went away: every series stale, `up` included.
    pub fn gone(&mut self, target: &TargetInfo<'_>, now: u64) -> ResourceMetrics {
        let mut metrics = self.stale_except(&HashMap::new(), now);
        self.last.clear();
        for mut m in scrape_metrics(target, now, 0.0, 0.0, Some((0, 0, 0))) {
            mark_stale(&mut m, now);
            metrics.push(m);
        }
        resource(target, metrics)
    }

    fn stale_except(&self, keep: &HashMap<String, Metric>, now: u64) -> Vec<Metric> {
        self.last
            .iter()
            .filter(|(k, _)| !keep.contains_key(*k))
            .map(|(_, m)| {
                let mut m = m.clone();
                mark_stale(&mut m, now);
                m
            })
            .collect()
    }
}

fn mark_stale(m: &mut Metric, now: u64) {
    match m.data.as_mut() {
        Some(metric::Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| {
            p.flags |= NO_RECORDED_VALUE;
            p.value = None;
            p.time_unix_nano = now;
        }),
        Some(metric::Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| {
            p.flags |= NO_RECORDED_VALUE;
            p.value = None;
            p.time_unix_nano = now;
        }),
        Some(metric::Data::Histogram(h)) => h.data_points.iter_mut().for_each(|p| {
            p.flags |= NO_RECORDED_VALUE;
            p.time_unix_nano = now;
        }),
        Some(metric::Data::Summary(s)) => s.data_points.iter_mut().for_each(|p| {
            p.flags |= NO_RECORDED_VALUE;
            p.time_unix_nano = now;
        }),
        _ => {}
    }
}

fn gauge(name: &str, help: &str, unit: &str, attrs: Vec<KeyValue>, t: u64, v: f64) -> Metric {
    Metric {
        name: name.into(),
        description: help.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: attrs,
                time_unix_nano: t,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn scrape_metrics(
    target: &TargetInfo<'_>,
    now: u64,
    up: f64,
    duration_s: f64,
    counts: Option<(usize, usize, usize)>,
) -> Vec<Metric> {
    let attrs = || attrs_of(target.labels, None);
    let mut v = vec![
        gauge("up", "The scraping was successful.", "", attrs(), now, up),
        gauge(
            "scrape_duration_seconds",
            "Duration of the scrape.",
            "s",
            attrs(),
            now,
            duration_s,
        ),
    ];
    let (scraped, post, added) = counts.unwrap_or((0, 0, 0));
    for (name, help, val) in [
        (
            "scrape_samples_scraped",
            "The number of samples the target exposed.",
            scraped,
        ),
        (
            "scrape_samples_post_metric_relabeling",
            "The number of samples remaining after metric relabeling was applied.",
            post,
        ),
        (
            "scrape_series_added",
            "The approximate number of new series in this scrape.",
            added,
        ),
    ] {
        v.push(gauge(name, help, "", attrs(), now, val as f64));
    }
    v
}

fn resource(target: &TargetInfo<'_>, metrics: Vec<Metric>) -> ResourceMetrics {
    otlp::resource_metrics(
        vec![
            kv("service.name", target.job),
            kv("service.instance.id", target.instance),
        ],
        "celeriac.prometheus",
        metrics,
    )
}

/// Samples parsed, for benches and counters.
pub fn sample_count(f: &[Family]) -> usize {
    f.iter().map(|f| f.samples.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn target(labels: &Labels) -> TargetInfo<'_> {
        TargetInfo {
            job: "app",
            instance: "127.0.0.1:9000",
            labels,
            honor_labels: false,
            honor_timestamps: true,
        }
    }

    fn by_name<'a>(rm: &'a ResourceMetrics, n: &str) -> Vec<&'a Metric> {
        rm.scope_metrics[0]
            .metrics
            .iter()
            .filter(|m| m.name == n)
            .collect()
    }

    const PAGE: &str = "# TYPE evaluation_tasks_total counter\nevaluation_tasks_total{status=\"ok\"} 3.0\nevaluation_tasks_total{status=\"bad\"} 1.0\n# TYPE evaluation_tasks_created gauge\nevaluation_tasks_created{status=\"ok\"} 1765000000.5\n# TYPE d histogram\nd_bucket{le=\"0.1\"} 2\nd_bucket{le=\"1\"} 3\nd_bucket{le=\"+Inf\"} 4\nd_count 4\nd_sum 2.5\n# TYPE s summary\ns{quantile=\"0.5\"} 0.2\ns_count 7\ns_sum 3\n# TYPE g gauge\ng{instance=\"x\"} 5\n";

    #[test]
    fn shapes_start_times_and_staleness() {
        let tl: Labels = vec![("env".into(), "test".into())];
        let t = target(&tl);
        let mut st = TargetState::default();
        let fam = parse(PAGE, false).unwrap();
        let sc = relabel_samples(fam, &[], &t);
        assert_eq!(sc.samples_scraped, 12);
        let rm = st.convert(&sc, &t, 2_000_000_000_000_000_000, 0.01);
        let c = by_name(&rm, "evaluation_tasks_total");
        assert_eq!(c.len(), 2);
        let Some(metric::Data::Sum(s)) = &c[0].data else {
            panic!()
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.data_points[0].start_time_unix_nano,
            1_765_000_000_500_000_000
        );
        let Some(metric::Data::Sum(s)) = &c[1].data else {
            panic!()
        };
        assert_eq!(
            s.data_points[0].start_time_unix_nano, 2_000_000_000_000_000_000,
            "first seen"
        );
        let h = by_name(&rm, "d");
        let Some(metric::Data::Histogram(h)) = &h[0].data else {
            panic!()
        };
        assert_eq!(h.data_points[0].bucket_counts, [2, 1, 1]);
        assert_eq!(h.data_points[0].explicit_bounds, [0.1, 1.0]);
        assert_eq!(h.data_points[0].count, 4);
        let g = by_name(&rm, "g");
        let Some(metric::Data::Gauge(g)) = &g[0].data else {
            panic!()
        };
        let keys: Vec<_> = g.data_points[0]
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        assert_eq!(keys, ["env", "exported_instance"], "honor_labels: false");
        assert_eq!(by_name(&rm, "up").len(), 1);
        let samples = by_name(&rm, "scrape_samples_scraped");
        let Some(metric::Data::Gauge(g)) = &samples[0].data else {
            panic!()
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(12.0))
        );

        // Next scrape without `g` and without the "bad" counter: both go stale, once.
        let page2 = PAGE
            .replace("g{instance=\"x\"} 5\n", "")
            .replace("evaluation_tasks_total{status=\"bad\"} 1.0\n", "");
        let sc = relabel_samples(parse(&page2, false).unwrap(), &[], &t);
        let rm = st.convert(&sc, &t, 2_000_000_001_000_000_000, 0.01);
        let g = by_name(&rm, "g");
        assert_eq!(g.len(), 1);
        let Some(metric::Data::Gauge(gg)) = &g[0].data else {
            panic!()
        };
        assert_eq!(gg.data_points[0].flags, NO_RECORDED_VALUE);
        assert_eq!(
            by_name(&rm, "evaluation_tasks_total").len(),
            2,
            "one live, one stale"
        );
        let rm = st.convert(&sc, &t, 2_000_000_002_000_000_000, 0.01);
        assert!(by_name(&rm, "g").is_empty(), "stale only once");
        // A failed scrape: up 0 and everything stale.
        let rm = st.failed(&t, 2_000_000_003_000_000_000, 0.5);
        let up = by_name(&rm, "up");
        let Some(metric::Data::Gauge(u)) = &up[0].data else {
            panic!()
        };
        assert_eq!(
            u.data_points[0].value,
            Some(number_data_point::Value::AsDouble(0.0))
        );
        assert!(by_name(&rm, "d").iter().all(|m| matches!(&m.data, Some(metric::Data::Histogram(h)) if h.data_points[0].flags == NO_RECORDED_VALUE)));
    }

    #[test]
    fn metric_relabel_drops_and_rewrites() {
        let rules = relabel::build_all(
            &serde_yaml_ng::from_str::<Vec<relabel::RelabelConfig>>(
                "[{source_labels: [__name__], regex: 'd_.*|s.*', action: drop}, {source_labels: [status], target_label: outcome}]",
            )
            .unwrap(),
            "m",
        )
        .unwrap();
        let tl: Labels = Vec::new();
        let t = target(&tl);
        let sc = relabel_samples(parse(PAGE, false).unwrap(), &rules, &t);
        assert_eq!(sc.samples_post_relabel, 12 - 5 - 3);
        let c = &sc.families[0].samples[0];
        assert!(c.labels.contains(&("outcome".into(), "ok".into())));
    }
}
