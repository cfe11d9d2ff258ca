use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::prompb::{Label, Sample, TimeSeries, WriteRequest};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn num(attrs: Vec<KeyValue>, v: f64, t_ms: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t_ms * 1_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn metric(name: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn counter(name: &str, pts: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        metric::Data::Sum(Sum {
            data_points: pts,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
    )
}

fn batch(metrics: Vec<Metric>) -> Vec<ResourceMetrics> {
    vec![ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![
                s("service.name", "celery"),
                s("service.instance.id", "agent-1"),
                s("host.name", "h1"),
            ],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn table(shards: usize) -> SeriesTable {
    let ext: BTreeMap<String, String> = [("cluster".to_string(), "eu".to_string())].into();
    SeriesTable::new(&ext, false, shards, Duration::from_secs(60))
}

/// Run one batch; every sample as `name{k=v,...} value @ts`, sorted by shard then order.
fn run(t: &mut SeriesTable, b: &[ResourceMetrics], now_ms: i64, now: Instant) -> Vec<Queued> {
    let mut out = vec![Vec::new(); t.shards];
    t.apply(b, now_ms, now, &mut out);
    out.into_iter().flatten().collect()
}

fn render(q: &Queued) -> String {
    let labels: Vec<String> =
        q.0.iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
    format!("{} {} @{}", labels.join(","), q.1.value, q.1.timestamp)
}

fn rendered(mut v: Vec<Queued>) -> Vec<String> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.iter().map(render).collect()
}

#[test]
fn counters_gauges_and_sums() {
    let mut t = table(1);
    let b = batch(vec![
        counter(
            "celery_task_succeeded",
            vec![num(vec![s("name", "add"), s("hostname", "w1")], 3.0, 1000)],
        ),
        metric(
            "celery.queue-length",
            metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    attributes: vec![s("queue_name", "celery")],
                    time_unix_nano: 1_000_000_000,
                    value: Some(number_data_point::Value::AsInt(7)),
                    ..Default::default()
                }],
            }),
        ),
        metric(
            "active",
            metric::Data::Sum(Sum {
                data_points: vec![num(vec![], -2.0, 1000)],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: false,
            }),
        ),
    ]);
    let got = rendered(run(&mut t, &b, 5000, Instant::now()));
    assert_eq!(
        got,
        [
            "__name__=active,cluster=eu,instance=agent-1,job=celery -2 @1000",
            "__name__=celery_queue_length,cluster=eu,instance=agent-1,job=celery,queue_name=celery 7 @1000",
            "__name__=celery_task_succeeded_total,cluster=eu,hostname=w1,instance=agent-1,job=celery,name=add 3 @1000",
        ]
    );
}

#[test]
fn histograms_and_summaries() {
    let mut t = table(1);
    let b = batch(vec![
        metric(
            "celery_task_runtime",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![s("name", "add")],
                    time_unix_nano: 2_000_000_000,
                    count: 6,
                    sum: Some(4.25),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.005, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        ),
        metric(
            "rpc",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: 2_000_000_000,
                    count: 10,
                    sum: 12.5,
                    quantile_values: vec![ValueAtQuantile {
                        quantile: 0.5,
                        value: 1.0,
                    }],
                    ..Default::default()
                }],
            }),
        ),
    ]);
    let got = rendered(run(&mut t, &b, 5000, Instant::now()));
    let base = "cluster=eu,instance=agent-1,job=celery";
    assert_eq!(
        got,
        [
            format!("__name__=celery_task_runtime_bucket,{base},le=+Inf,name=add 6 @2000"),
            format!("__name__=celery_task_runtime_bucket,{base},le=0.005,name=add 1 @2000"),
            format!("__name__=celery_task_runtime_bucket,{base},le=1,name=add 3 @2000"),
            format!("__name__=celery_task_runtime_count,{base},name=add 6 @2000"),
            format!("__name__=celery_task_runtime_sum,{base},name=add 4.25 @2000"),
            format!("__name__=rpc,{base},quantile=0.5 1 @2000"),
            format!("__name__=rpc_count,{base} 10 @2000"),
            format!("__name__=rpc_sum,{base} 12.5 @2000"),
        ]
    );
}

#[test]
fn labels_are_sorted_and_unique() {
    let mut t = SeriesTable::new(&BTreeMap::new(), true, 1, Duration::from_secs(60));
    let b = batch(vec![counter(
        "x",
        vec![num(
            vec![
                s("Zeta", "1"),
                s("a.b", "dot"),
                s("a-b", "dash"),
                s("__name__", "evil"),
                s("job", "override"),
            ],
            1.0,
            1000,
        )],
    )]);
    let got = run(&mut t, &b, 5000, Instant::now());
    let names: Vec<&str> = got[0].0.iter().map(|l| l.name.as_str()).collect();
    // Byte order: upper case before `_` before lower case.
    assert_eq!(
        names,
        ["Zeta", "__name__", "a_b", "host_name", "instance", "job"]
    );
    assert_eq!(got[0].0[1].value, "x_total");
    assert_eq!(got[0].0[2].value, "dash;dot");
    assert_eq!(got[0].0[5].value, "override");
}

#[test]
fn samples_of_a_series_stay_in_one_shard_in_timestamp_order() {
    let shards = 4;
    let mut t = table(shards);
    let now = Instant::now();
    let mut per_series: HashMap<Arc<[Label]>, (usize, Vec<i64>)> = HashMap::new();
    let names: Vec<String> = (0..50).map(|i| format!("task{i}")).collect();
    let mut record = |t: &mut SeriesTable, ts_ms: u64| {
        let b = batch(vec![counter(
            "c",
            names
                .iter()
                .map(|n| num(vec![s("name", n)], ts_ms as f64, ts_ms))
                .collect(),
        )]);
        let mut out = vec![Vec::new(); shards];
        t.apply(&b, 0, now, &mut out);
        for (i, shard) in out.into_iter().enumerate() {
            for (labels, sample) in shard {
                assert_eq!(i, shard_of(&labels, shards));
                let e = per_series.entry(labels).or_insert((i, Vec::new()));
                assert_eq!(e.0, i, "a series moved shards");
                e.1.push(sample.timestamp);
            }
        }
    };
    for ts in [1000, 2000, 1500, 2000, 3000] {
        record(&mut t, ts);
    }
    assert_eq!(per_series.len(), 50);
    let used: std::collections::HashSet<usize> = per_series.values().map(|v| v.0).collect();
    assert!(used.len() > 1, "50 series should use several shards");
    for (_, ts) in per_series.values() {
        // 1500 is older than 2000 (dropped); the second 2000 is a duplicate (skipped).
        assert_eq!(ts, &vec![1000, 2000, 3000]);
    }
    assert_eq!(t.stats.out_of_order, 50);
}

#[test]
fn staleness_markers() {
    let mut t = SeriesTable::new(&BTreeMap::new(), false, 2, Duration::from_secs(10));
    let t0 = Instant::now();
    let two = |ts: u64, hosts: &[&str]| {
        batch(vec![metric(
            "celery_worker_up",
            metric::Data::Gauge(Gauge {
                data_points: hosts
                    .iter()
                    .map(|h| num(vec![s("hostname", h)], 1.0, ts))
                    .collect(),
            }),
        )])
    };
    assert_eq!(run(&mut t, &two(1000, &["a", "b"]), 1000, t0).len(), 2);
    // `b` disappears; it is stale only once unseen for stale_after.
    let got = run(
        &mut t,
        &two(2000, &["a"]),
        2000,
        t0 + Duration::from_secs(5),
    );
    assert_eq!(got.len(), 1);
    let got = run(
        &mut t,
        &two(12_000, &["a"]),
        12_000,
        t0 + Duration::from_secs(11),
    );
    assert_eq!(got.len(), 2);
    let marker = got
        .iter()
        .find(|q| q.0.iter().any(|l| l.value == "b"))
        .expect("marker for b");
    assert_eq!(marker.1.value.to_bits(), STALE_NAN_BITS);
    assert_eq!(marker.1.timestamp, 12_000);
    assert!(is_stale_marker(marker.1.value));
    assert_eq!(t.len(), 1);
    assert_eq!(t.stats.stale_markers, 1);
    // The input stops altogether: the timer's expire() ends `a` too, after its last sample.
    let mut out = vec![Vec::new(); 2];
    t.expire(5, t0 + Duration::from_secs(30), &mut out);
    let all: Vec<Queued> = out.into_iter().flatten().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.value.to_bits(), STALE_NAN_BITS);
    assert_eq!(all[0].1.timestamp, 12_001);
    assert!(t.is_empty());
}

#[test]
fn no_recorded_value_ends_the_series_and_real_nans_stay_real() {
    let mut t = table(1);
    let t0 = Instant::now();
    let g = |flags: u32, v: f64, ts: u64| {
        let mut p = num(vec![], v, ts);
        p.flags = flags;
        batch(vec![metric(
            "g",
            metric::Data::Gauge(Gauge {
                data_points: vec![p],
            }),
        )])
    };
    let got = run(&mut t, &g(0, f64::from_bits(STALE_NAN_BITS), 1000), 0, t0);
    assert!(got[0].1.value.is_nan());
    assert!(!is_stale_marker(got[0].1.value));
    let got = run(&mut t, &g(prom::NO_RECORDED_VALUE, 0.0, 2000), 0, t0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.value.to_bits(), STALE_NAN_BITS);
    assert_eq!(got[0].1.timestamp, 2000);
    assert!(t.is_empty());
}

#[test]
fn unsupported_points_are_counted() {
    let mut t = table(1);
    let b = batch(vec![metric(
        "d",
        metric::Data::Sum(Sum {
            data_points: vec![num(vec![], 1.0, 1), num(vec![], 2.0, 1)],
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        }),
    )]);
    assert!(run(&mut t, &b, 0, Instant::now()).is_empty());
    assert_eq!(t.stats.unsupported, 2);
}

#[test]
fn direct_encoding_equals_the_message_and_survives_snappy() {
    let mut t = table(1);
    let b = batch(vec![
        counter("a", vec![num(vec![s("name", "x")], 1.5, 1000)]),
        counter("b", vec![num(vec![], 0.0, 1000)]),
    ]);
    let q = run(&mut t, &b, 0, Instant::now());
    let mut buf = Vec::new();
    encode_request(&q, &mut buf);
    let want = WriteRequest {
        timeseries: q
            .iter()
            .map(|(l, s)| TimeSeries {
                labels: l.to_vec(),
                samples: vec![*s],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    };
    assert_eq!(buf, want.encode_to_vec());
    let compressed = snap::raw::Encoder::new().compress_vec(&buf).unwrap();
    // Block format: starts with the varint of the uncompressed length, no stream header.
    assert_ne!(compressed[0], 0xff);
    let back = snap::raw::Decoder::new()
        .decompress_vec(&compressed)
        .unwrap();
    assert_eq!(WriteRequest::decode(&back[..]).unwrap(), want);
}

#[tokio::test]
async fn full_queue_drops_oldest() {
    let shard = Shard::new();
    let item = |ts: i64| -> Queued {
        (
            Arc::from(vec![]),
            Sample {
                value: 0.0,
                timestamp: ts,
            },
        )
    };
    let mut v: Vec<Queued> = (0..5).map(item).collect();
    assert_eq!(shard.push(&mut v, 3), 2);
    assert!(v.is_empty());
    let got = shard.take(2).await.unwrap();
    assert_eq!(
        got.iter().map(|q| q.1.timestamp).collect::<Vec<_>>(),
        [2, 3]
    );
    shard.close();
    assert_eq!(shard.take(10).await.unwrap().len(), 1);
    assert!(shard.take(10).await.is_none());
}

#[test]
fn retry_after() {
    assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon"), None);
}

/// prometheusremotewriteexporter (config.go): namespace, add_metric_suffixes,
/// target_info.enabled, tls.insecure.
#[test]
fn collector_settings() {
    let counter_named = |t: &mut SeriesTable| {
        let b = batch(vec![counter("jobs", vec![num(vec![], 1.0, 1000)])]);
        let got = run(t, &b, 5000, Instant::now());
        got[0]
            .0
            .iter()
            .find(|l| l.name == "__name__")
            .unwrap()
            .value
            .clone()
    };
    let mut t = SeriesTable::new(&BTreeMap::new(), false, 1, Duration::from_secs(60))
        .with_names("ns", true);
    assert_eq!(counter_named(&mut t), "ns_jobs_total");
    let mut t =
        SeriesTable::new(&BTreeMap::new(), false, 1, Duration::from_secs(60)).with_names("", false);
    assert_eq!(counter_named(&mut t), "jobs");
    let bad = |y: &str| crate::component::rejected_key(build, y);
    assert_eq!(bad("endpoint: http://cortex:9009/api/v1/push\nnamespace: x\nadd_metric_suffixes: false\ntarget_info: {enabled: false}\ntls: {insecure: true}"), None);
    assert_eq!(
        bad("endpoint: https://x/api/v1/push\ntls: {insecure: true}").as_deref(),
        Some("tls.insecure")
    );
    assert_eq!(
        bad("target_info: {enabled: true}").as_deref(),
        Some("target_info.enabled")
    );
}

#[test]
fn config() {
    let v: Value = serde_yaml_ng::from_str(
        "endpoint: http://prom:9090/api/v1/write\ntimeout: 2s\nheaders: {X-Scope-OrgID: t}\nexternal_labels: {cluster: eu}\nresource_to_telemetry_conversion: {enabled: true}\nmax_samples_per_send: 500\nstale_after: 30s\nbasic_auth: {username: u, password: p}\nremote_write_queue: {queue_size: 1000, num_consumers: 2}\nretry_on_failure: {enabled: false, initial_interval: 10ms, max_interval: 1s, max_elapsed_time: 0s}\n",
    )
    .unwrap();
    let cfg: RemoteWriteConfig = crate::config::decode(&v).unwrap();
    assert_eq!(cfg.max_samples_per_send, 500);
    assert_eq!(cfg.remote_write_queue.num_consumers, 2);
    assert!(!cfg.retry_on_failure.enabled);
    // Credentials never show in debug output (and so in logs).
    assert!(!format!("{cfg:?}").contains("password: \"p\""));
    assert!(format!("{cfg:?}").contains("<redacted>"));
    assert_eq!(auth_header(&cfg).unwrap().to_str().unwrap(), "Basic dTpw");
    assert!(build(&v).is_ok());
    assert!(build(&Value::Null).is_ok());
    let bad = |y: &str| crate::component::rejected_key(build, y);
    assert_eq!(
        bad("endpoint: ftp://x/api/v1/write").as_deref(),
        Some("endpoint")
    );
    assert_eq!(
        bad("endpoint: http://x/api/v1/write\ntls: {ca_file: /x.pem}").as_deref(),
        Some("tls")
    );
    assert_eq!(
        bad("endpoint: https://x/api/v1/write\ntls: {ca_file: /nonexistent.pem}").as_deref(),
        Some("tls.ca_file")
    );
    assert_eq!(bad("endpoint: 'not a url'").as_deref(), Some("endpoint"));
    assert_eq!(
        bad("endpoint: http://u:p@x/api/v1/write").as_deref(),
        Some("endpoint")
    );
    assert_eq!(
        bad("headers: {Content-Type: text/plain}").as_deref(),
        Some("headers.Content-Type")
    );
    assert_eq!(
        bad("external_labels: {__x: y}").as_deref(),
        Some("external_labels.__x")
    );
    assert_eq!(
        bad("max_samples_per_send: 0").as_deref(),
        Some("max_samples_per_send")
    );
    assert_eq!(
        bad("bearer_token: t\nbasic_auth: {username: u}").as_deref(),
        Some("bearer_token")
    );
    assert_eq!(
        bad("remote_write_queue: {num_consumers: 0}").as_deref(),
        Some("remote_write_queue.num_consumers")
    );
    assert_eq!(bad("stale_after: 0s").as_deref(), Some("stale_after"));
    assert_eq!(bad("nope: 1").as_deref(), Some("nope"));
}
