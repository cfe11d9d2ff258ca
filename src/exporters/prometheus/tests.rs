use super::*;
use crate::otlp::kv;
use crate::telemetry::Counter;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, any_value::Value::StringValue(v.into()))
}

fn num(attrs: Vec<KeyValue>, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: 1,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn metric(name: &str, help: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        description: help.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn batch(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> Vec<ResourceMetrics> {
    vec![ResourceMetrics {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn sum(
    monotonic: bool,
    temporality: AggregationTemporality,
    pts: Vec<NumberDataPoint>,
) -> metric::Data {
    metric::Data::Sum(Sum {
        data_points: pts,
        aggregation_temporality: temporality as i32,
        is_monotonic: monotonic,
    })
}

fn page(cfg: &PrometheusConfig, metrics: Vec<Metric>) -> (String, ConvertStats) {
    page_with_resource(cfg, vec![], metrics)
}

fn page_with_resource(
    cfg: &PrometheusConfig,
    resource: Vec<KeyValue>,
    metrics: Vec<Metric>,
) -> (String, ConvertStats) {
    let mut store = Store::new(cfg.metric_expiration).with_timestamps(cfg.send_timestamps);
    let now = Instant::now();
    let stats = apply(&converter(cfg), &mut store, &batch(resource, metrics), now);
    let mut out = String::new();
    store.render(&mut out, now);
    (out, stats)
}

#[test]
fn counter_gets_total_once() {
    let cfg = PrometheusConfig::default();
    let (text, _) = page(
        &cfg,
        vec![
            metric(
                "celery_task_succeeded",
                "Tasks that succeeded.",
                sum(
                    true,
                    AggregationTemporality::Cumulative,
                    vec![num(vec![s("name", "add"), s("hostname", "w1")], 3.0)],
                ),
            ),
            metric(
                "already_total",
                "",
                sum(
                    true,
                    AggregationTemporality::Cumulative,
                    vec![num(vec![], 1.5)],
                ),
            ),
        ],
    );
    assert_eq!(
        text,
        "# TYPE already_total counter\n\
         already_total 1.5\n\
         # HELP celery_task_succeeded_total Tasks that succeeded.\n\
         # TYPE celery_task_succeeded_total counter\n\
         celery_task_succeeded_total{hostname=\"w1\",name=\"add\"} 3\n"
    );
}

/// prometheusexporter (config.go): namespace, add_metric_suffixes, send_timestamps.
#[test]
fn collector_naming_settings() {
    let counter = || {
        vec![metric(
            "jobs",
            "",
            sum(
                true,
                AggregationTemporality::Cumulative,
                vec![NumberDataPoint {
                    time_unix_nano: 1_700_000_000_123_000_000,
                    ..num(vec![], 2.0)
                }],
            ),
        )]
    };
    let cfg = PrometheusConfig {
        namespace: "promexample".into(),
        ..PrometheusConfig::default()
    };
    let (text, _) = page(&cfg, counter());
    assert_eq!(
        text,
        "# TYPE promexample_jobs_total counter\npromexample_jobs_total 2\n"
    );
    let cfg = PrometheusConfig {
        add_metric_suffixes: false,
        send_timestamps: true,
        ..PrometheusConfig::default()
    };
    let (text, _) = page(&cfg, counter());
    assert_eq!(text, "# TYPE jobs counter\njobs 2 1700000000123\n");
    let bad = |y: &str| crate::component::rejected_key(build, y);
    assert_eq!(
        bad("enable_open_metrics: true").as_deref(),
        Some("enable_open_metrics")
    );
    assert_eq!(
        bad("target_info: {enabled: true}").as_deref(),
        Some("target_info.enabled")
    );
    assert!(bad("namespace: x\nsend_timestamps: true\nadd_metric_suffixes: false\nenable_open_metrics: false\ntarget_info: {enabled: false}").is_none());
}

#[test]
fn gauges_and_non_monotonic_sums() {
    let cfg = PrometheusConfig::default();
    let (text, _) = page(
        &cfg,
        vec![
            metric(
                "celery_queue_length",
                "Messages waiting.",
                metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        attributes: vec![s("queue_name", "celery")],
                        value: Some(number_data_point::Value::AsInt(7)),
                        ..Default::default()
                    }],
                }),
            ),
            metric(
                "celery.worker.tasks-active",
                "",
                sum(
                    false,
                    AggregationTemporality::Cumulative,
                    vec![num(vec![], -2.0)],
                ),
            ),
        ],
    );
    assert_eq!(
        text,
        "# HELP celery_queue_length Messages waiting.\n\
         # TYPE celery_queue_length gauge\n\
         celery_queue_length{queue_name=\"celery\"} 7\n\
         # TYPE celery_worker_tasks_active gauge\n\
         celery_worker_tasks_active -2\n"
    );
}

#[test]
fn histogram_buckets_are_cumulative() {
    let cfg = PrometheusConfig::default();
    let h = metric::Data::Histogram(Histogram {
        data_points: vec![HistogramDataPoint {
            attributes: vec![s("name", "add"), s("le", "x")],
            count: 6,
            sum: Some(4.25),
            bucket_counts: vec![1, 2, 0, 3],
            explicit_bounds: vec![0.005, 1.0, 2.5],
            ..Default::default()
        }],
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
    });
    let (text, _) = page(
        &cfg,
        vec![metric("celery_task_runtime", "Task runtime.", h)],
    );
    assert_eq!(
        text,
        "# HELP celery_task_runtime Task runtime.\n\
         # TYPE celery_task_runtime histogram\n\
         celery_task_runtime_bucket{exported_le=\"x\",le=\"0.005\",name=\"add\"} 1\n\
         celery_task_runtime_bucket{exported_le=\"x\",le=\"1\",name=\"add\"} 3\n\
         celery_task_runtime_bucket{exported_le=\"x\",le=\"2.5\",name=\"add\"} 3\n\
         celery_task_runtime_bucket{exported_le=\"x\",le=\"+Inf\",name=\"add\"} 6\n\
         celery_task_runtime_sum{exported_le=\"x\",name=\"add\"} 4.25\n\
         celery_task_runtime_count{exported_le=\"x\",name=\"add\"} 6\n"
    );
}

#[test]
fn summary_quantiles() {
    let cfg = PrometheusConfig::default();
    let sm = metric::Data::Summary(Summary {
        data_points: vec![SummaryDataPoint {
            count: 10,
            sum: 12.5,
            quantile_values: vec![
                ValueAtQuantile {
                    quantile: 0.5,
                    value: 1.0,
                },
                ValueAtQuantile {
                    quantile: 0.99,
                    value: 3.5,
                },
            ],
            ..Default::default()
        }],
    });
    let (text, _) = page(&cfg, vec![metric("rpc_latency", "", sm)]);
    assert_eq!(
        text,
        "# TYPE rpc_latency summary\n\
         rpc_latency{quantile=\"0.5\"} 1\n\
         rpc_latency{quantile=\"0.99\"} 3.5\n\
         rpc_latency_sum 12.5\n\
         rpc_latency_count 10\n"
    );
}

#[test]
fn unsupported_points_are_counted() {
    let cfg = PrometheusConfig::default();
    let (text, stats) = page(
        &cfg,
        vec![
            metric(
                "d",
                "",
                sum(
                    true,
                    AggregationTemporality::Delta,
                    vec![num(vec![], 1.0), num(vec![], 2.0)],
                ),
            ),
            metric(
                "e",
                "",
                metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint::default()],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
            metric(
                "h",
                "",
                metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint::default()],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            ),
        ],
    );
    assert_eq!(text, "");
    assert_eq!(
        stats,
        ConvertStats {
            unsupported: 4,
            invalid: 0
        }
    );
}

#[test]
fn labels_are_sanitized_escaped_and_joined() {
    let cfg = PrometheusConfig {
        const_labels: [("env".to_string(), "prod".to_string())].into(),
        ..Default::default()
    };
    let (text, _) = page(
        &cfg,
        vec![metric(
            "9lives.x",
            "Line one\nback\\slash",
            metric::Data::Gauge(Gauge {
                data_points: vec![num(
                    vec![
                        s("a.b", "dot"),
                        s("a-b", "dash"),
                        s("quote", "say \"hi\"\\\n"),
                        kv("int", any_value::Value::IntValue(-3)),
                        kv("dbl", any_value::Value::DoubleValue(0.25)),
                        kv("ok", any_value::Value::BoolValue(true)),
                        s("1st", "x"),
                        s("empty", ""),
                        s("env", "dev"),
                    ],
                    1.0,
                )],
            }),
        )],
    );
    assert_eq!(
        text,
        "# HELP _9lives_x Line one\\nback\\\\slash\n\
         # TYPE _9lives_x gauge\n\
         _9lives_x{a_b=\"dash;dot\",dbl=\"0.25\",env=\"dev\",int=\"-3\",key_1st=\"x\",ok=\"true\",quote=\"say \\\"hi\\\"\\\\\\n\"} 1\n"
    );
}

#[test]
fn resource_attributes_only_when_enabled() {
    let res = vec![
        s("service.name", "shop"),
        s("service.instance.id", "w1:42"),
        s("host.name", "h"),
    ];
    let g = || {
        metric(
            "g",
            "",
            metric::Data::Gauge(Gauge {
                data_points: vec![num(vec![], 1.0)],
            }),
        )
    };
    let (off, _) = page_with_resource(&PrometheusConfig::default(), res.clone(), vec![g()]);
    assert_eq!(off, "# TYPE g gauge\ng 1\n");
    let on_cfg = PrometheusConfig {
        resource_to_telemetry_conversion: true,
        ..Default::default()
    };
    let (on, _) = page_with_resource(&on_cfg, res, vec![g()]);
    assert_eq!(
        on,
        "# TYPE g gauge\ng{host_name=\"h\",instance=\"w1:42\",job=\"shop\"} 1\n"
    );
}

#[test]
fn no_recorded_value_removes_the_series() {
    let cfg = PrometheusConfig::default();
    let mut store = Store::new(cfg.metric_expiration);
    let conv = converter(&cfg);
    let now = Instant::now();
    let g = |flags: u32| {
        let mut p = num(vec![s("q", "a")], 5.0);
        p.flags = flags;
        batch(
            vec![],
            vec![metric(
                "g",
                "",
                metric::Data::Gauge(Gauge {
                    data_points: vec![p, num(vec![s("q", "b")], 1.0)],
                }),
            )],
        )
    };
    apply(&conv, &mut store, &g(0), now);
    assert_eq!(store.len(), 2);
    apply(&conv, &mut store, &g(prom::NO_RECORDED_VALUE), now);
    let mut out = String::new();
    store.render(&mut out, now);
    assert_eq!(out, "# TYPE g gauge\ng{q=\"b\"} 1\n");
}

fn g(name: &str) -> Meta<'_> {
    Meta {
        name,
        kind: Kind::Gauge,
        help: "",
    }
}

#[test]
fn series_expire() {
    let mut store = Store::new(Duration::from_secs(60));
    let t0 = Instant::now();
    store.update(g("a"), vec![], Sample::Number(1.0), 1, t0);
    store.update(
        g("b"),
        vec![],
        Sample::Number(2.0),
        1,
        t0 + Duration::from_secs(30),
    );
    let at = |store: &Store, t: Instant| {
        let mut out = String::new();
        store.render(&mut out, t);
        out
    };
    assert_eq!(
        at(&store, t0 + Duration::from_secs(60)),
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n"
    );
    // `a` is past its expiration: hidden at once, removed by the sweep.
    assert_eq!(
        at(&store, t0 + Duration::from_secs(61)),
        "# TYPE b gauge\nb 2\n"
    );
    store.sweep(t0 + Duration::from_secs(61));
    assert_eq!(store.len(), 1);
    // An update keeps a series alive.
    store.update(
        g("b"),
        vec![],
        Sample::Number(3.0),
        2,
        t0 + Duration::from_secs(80),
    );
    store.sweep(t0 + Duration::from_secs(130));
    assert_eq!(
        at(&store, t0 + Duration::from_secs(130)),
        "# TYPE b gauge\nb 3\n"
    );
    store.sweep(t0 + Duration::from_secs(141));
    assert!(store.is_empty());
}

#[test]
fn older_points_do_not_overwrite_newer_ones() {
    let mut store = Store::new(Duration::from_secs(60));
    let t = Instant::now();
    store.update(g("a"), vec![], Sample::Number(2.0), 20, t);
    store.update(g("a"), vec![], Sample::Number(1.0), 10, t);
    let mut out = String::new();
    store.render(&mut out, t);
    assert_eq!(out, "# TYPE a gauge\na 2\n");
}

#[test]
fn value_and_bound_formatting() {
    let f = |v: f64| {
        let mut s = String::new();
        format_value(&mut s, v);
        s
    };
    assert_eq!(f(3.0), "3");
    assert_eq!(f(-0.5), "-0.5");
    assert_eq!(f(1e20), "1e20");
    assert_eq!(f(1.5e-7), "1.5e-7");
    assert_eq!(f(f64::NAN), "NaN");
    assert_eq!(f(f64::NEG_INFINITY), "-Inf");
    let b = |v: f64| {
        let mut s = String::new();
        prom::format_bound(&mut s, v);
        s
    };
    assert_eq!(b(0.005), "0.005");
    assert_eq!(b(10.0), "10");
    assert_eq!(b(f64::INFINITY), "+Inf");
}

#[test]
fn config() {
    let v: Value = serde_yaml_ng::from_str(
        "endpoint: 0.0.0.0:9999\nmetric_expiration: 1m\nconst_labels: {env: prod}\nresource_to_telemetry_conversion: {enabled: true}\n",
    )
    .unwrap();
    let cfg: PrometheusConfig = config::decode(&v).unwrap();
    assert_eq!(cfg.endpoint.port(), 9999);
    assert_eq!(cfg.metric_expiration, Duration::from_secs(60));
    assert!(cfg.resource_to_telemetry_conversion);
    assert!(build(&Value::Null).is_ok());
    let bad = |y: &str| crate::component::rejected_key(build, y);
    assert_eq!(
        bad("const_labels: {\"a-b\": x}").as_deref(),
        Some("const_labels.a-b")
    );
    assert_eq!(
        bad("metric_expiration: 0s").as_deref(),
        Some("metric_expiration")
    );
    assert_eq!(bad("nope: 1").as_deref(), Some("nope"));
    assert_eq!(
        bad("resource_to_telemetry_conversion: 3").as_deref(),
        Some("resource_to_telemetry_conversion")
    );
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    resp
}

#[tokio::test]
async fn serves_the_page_over_http() {
    use crate::telemetry::Telemetry;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let exporter = Box::new(PrometheusExporter {
        cfg: PrometheusConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        },
        bound: Some(tx),
    });
    let ctx = Context {
        id: "exporters/prometheus".into(),
        shutdown: CancellationToken::new(),
        telemetry: Telemetry::new(),
        ready: Default::default(),
    };
    let telemetry = ctx.telemetry.clone();
    let (in_tx, in_rx) = async_channel::bounded(4);
    let run = tokio::spawn(exporter.run(ctx, Input::new(in_rx, Counter::default())));
    let addr = rx.await.unwrap();

    let g = metric(
        "celery_queue_length",
        "Messages waiting.",
        metric::Data::Gauge(Gauge {
            data_points: vec![num(vec![s("queue_name", "celery")], 4.0)],
        }),
    );
    let e = metric(
        "e",
        "",
        metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default()],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    );
    in_tx
        .send(Signal::Metrics(Arc::new(batch(vec![], vec![g, e]))).into())
        .await
        .unwrap();

    let mut resp = String::new();
    for _ in 0..100 {
        resp = http_get(addr, "/metrics").await;
        if resp.contains("celery_queue_length{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{resp}"
    );
    assert!(
        resp.ends_with(
            "# HELP celery_queue_length Messages waiting.\n\
         # TYPE celery_queue_length gauge\n\
         celery_queue_length{queue_name=\"celery\"} 4\n"
        ),
        "{resp}"
    );
    assert!(telemetry.render().contains(
        "celeriac_exporter_dropped_items_total{component=\"exporters/prometheus\",reason=\"unsupported\"} 1\n"
    ));
    assert!(http_get(addr, "/").await.contains("href=\"/metrics\""));
    assert!(http_get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

    // Input closed: the exporter stops its server, waits for it, and returns. (Connecting
    // afterwards proves nothing: a parallel test may have been given the freed port.)
    drop(in_tx);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bind_failure_is_reported() {
    use crate::telemetry::Telemetry;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let exporter = Box::new(PrometheusExporter {
        cfg: PrometheusConfig {
            endpoint: taken.local_addr().unwrap(),
            ..Default::default()
        },
        bound: None,
    });
    let ctx = Context {
        id: "exporters/prometheus".into(),
        shutdown: CancellationToken::new(),
        telemetry: Telemetry::new(),
        ready: Default::default(),
    };
    let (_tx, rx) = async_channel::bounded(1);
    let res = exporter.run(ctx, Input::new(rx, Counter::default())).await;
    assert!(matches!(res, Err(ComponentError::Bind { .. })), "{res:?}");
}
