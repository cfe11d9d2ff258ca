//! The `debug` exporter's text, rule by rule against the collector's source
//! (exporter/debugexporter/internal/otlptext and internal/normal, and their testdata).

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

use super::text::*;
use super::*;

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v,
        ..Default::default()
    }
}

fn any(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

/// 2020-02-11 20:26:12 UTC, the collector's test timestamps.
const T0: u64 = 1_581_452_772_000_000_000;

fn two_spans() -> Vec<ResourceSpans> {
    let a = Span {
        trace_id: (1..=16).collect(),
        span_id: (0x11..=0x18).collect(),
        name: "operationA".into(),
        trace_state: "ot=th:0".into(),
        start_time_unix_nano: T0 + 321,
        end_time_unix_nano: T0 + 1_000_000_789,
        status: Some(Status {
            code: 2,
            message: "status-cancelled".into(),
        }),
        dropped_attributes_count: 1,
        dropped_events_count: 1,
        events: vec![
            span::Event {
                time_unix_nano: T0 + 1_000_000_123,
                name: "event-with-attr".into(),
                attributes: vec![kv("span-event-attr", s("span-event-attr-val"))],
                dropped_attributes_count: 2,
            },
            span::Event {
                time_unix_nano: T0 + 1_000_000_123,
                name: "event".into(),
                attributes: vec![],
                dropped_attributes_count: 2,
            },
        ],
        ..Default::default()
    };
    let b = Span {
        name: "operationB".into(),
        kind: 3,
        start_time_unix_nano: T0 + 321,
        end_time_unix_nano: T0 + 1_000_000_789,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("retries", any(any_value::Value::IntValue(3))),
        ],
        dropped_links_count: 3,
        links: vec![span::Link {
            attributes: vec![kv("span-link-attr", s("span-link-attr-val"))],
            dropped_attributes_count: 4,
            ..Default::default()
        }],
        ..Default::default()
    };
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("resource-attr", s("resource-attr-val-1"))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![a, b],
            ..Default::default()
        }],
        ..Default::default()
    }]
}

/// otlptext/traces.go + databuffer.go (`logAttr` is `    %-15s: %s`; attributes of events and
/// links are indented under their `     -> Attributes:` header), as in
/// otlptext/testdata/traces/two_spans.out.
#[test]
fn detailed_traces_follow_otlptext() {
    let expected = "\
ResourceSpans #0
Resource SchemaURL: 
Resource attributes:
     -> resource-attr: Str(resource-attr-val-1)
ScopeSpans #0
ScopeSpans SchemaURL: 
InstrumentationScope  
Span #0
    Trace ID       : 0102030405060708090a0b0c0d0e0f10
    Parent ID      : 
    ID             : 1112131415161718
    Name           : operationA
    Kind           : Unspecified
    TraceState     : ot=th:0
    Start time     : 2020-02-11 20:26:12.000000321 +0000 UTC
    End time       : 2020-02-11 20:26:13.000000789 +0000 UTC
    Status code    : Error
    Status message : status-cancelled
    DroppedAttributesCount: 1
    DroppedEventsCount: 1
    DroppedLinksCount: 0
Events:
SpanEvent #0
     -> Name: event-with-attr
     -> Timestamp: 2020-02-11 20:26:13.000000123 +0000 UTC
     -> DroppedAttributesCount: 2
     -> Attributes::
          -> span-event-attr: Str(span-event-attr-val)
SpanEvent #1
     -> Name: event
     -> Timestamp: 2020-02-11 20:26:13.000000123 +0000 UTC
     -> DroppedAttributesCount: 2
Span #1
    Trace ID       : 
    Parent ID      : 
    ID             : 
    Name           : operationB
    Kind           : Client
    Start time     : 2020-02-11 20:26:12.000000321 +0000 UTC
    End time       : 2020-02-11 20:26:13.000000789 +0000 UTC
    Status code    : Unset
    Status message : 
    DroppedAttributesCount: 0
    DroppedEventsCount: 0
    DroppedLinksCount: 3
Attributes:
     -> http.method: Str(GET)
     -> retries: Int(3)
Links:
SpanLink #0
     -> Trace ID: 
     -> ID: 
     -> TraceState: 
     -> DroppedAttributesCount: 4
     -> Attributes::
          -> span-link-attr: Str(span-link-attr-val)
";
    let got = detailed_traces(&two_spans());
    assert_eq!(got, expected, "\n{got}");
    let sig = Signal::Traces(Arc::new(two_spans()));
    assert_eq!(dump(&sig, Verbosity::Detailed).unwrap(), expected);
    assert_eq!(dump(&sig, Verbosity::Basic), None);
}

/// normal/traces.go + common.go: `name traceid spanid k=v ...`; resource `[schema]` and
/// attributes, scope ` name@version [schema]` (normal/traces_test.go).
#[test]
fn normal_traces_follow_internal_normal() {
    let mut rs = two_spans();
    rs[0].schema_url = "https://opentelemetry.io/resource-schema-url".into();
    rs[0].resource.as_mut().unwrap().attributes = vec![
        kv("resourceKey1", s("resourceValue1")),
        kv("resourceKey2", any(any_value::Value::BoolValue(false))),
    ];
    rs[0].scope_spans[0].scope = Some(InstrumentationScope {
        name: "scope-name".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scopeKey1", s("scopeValue1"))],
        ..Default::default()
    });
    rs[0].scope_spans[0].schema_url = "http://opentelemetry.io/scope-schema-url".into();
    assert_eq!(
        normal_traces(&rs),
        "ResourceTraces #0 [https://opentelemetry.io/resource-schema-url] resourceKey1=resourceValue1 resourceKey2=false
ScopeTraces #0 scope-name@1.2.3 [http://opentelemetry.io/scope-schema-url] scopeKey1=scopeValue1
operationA 0102030405060708090a0b0c0d0e0f10 1112131415161718
operationB   http.method=GET retries=3
"
    );
}

fn one_log() -> Vec<ResourceLogs> {
    vec![ResourceLogs {
        resource: Some(Resource {
            attributes: vec![kv("resource-attr", s("resource-attr-val-1"))],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord {
                time_unix_nano: T0 + 1_000_000_789,
                severity_number: 9,
                severity_text: "Info".into(),
                body: s("This is a log message"),
                attributes: vec![
                    kv("app", s("server")),
                    kv("instance_num", any(any_value::Value::IntValue(1))),
                ],
                trace_id: vec![8, 4, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                span_id: vec![1, 2, 4, 8, 0, 0, 0, 0],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }]
}

/// otlptext/logs.go, as in otlptext/testdata/logs/one_record.out.
#[test]
fn detailed_logs_follow_otlptext() {
    assert_eq!(
        detailed_logs(&one_log()),
        "ResourceLog #0
Resource SchemaURL: 
Resource attributes:
     -> resource-attr: Str(resource-attr-val-1)
ScopeLogs #0
ScopeLogs SchemaURL: 
InstrumentationScope  
LogRecord #0
ObservedTimestamp: 1970-01-01 00:00:00 +0000 UTC
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
SeverityText: Info
SeverityNumber: Info(9)
Body: Str(This is a log message)
Attributes:
     -> app: Str(server)
     -> instance_num: Int(1)
Trace ID: 08040201000000000000000000000000
Span ID: 0102040800000000
Flags: 0
"
    );
    // normal/logs.go: `body k=v ...`.
    assert_eq!(
        normal_logs(&one_log()),
        "ResourceLog #0 resource-attr=resource-attr-val-1\nScopeLog #0\nThis is a log message app=server instance_num=1\n"
    );
}

fn metrics() -> Vec<ResourceMetrics> {
    let attrs = vec![kv("state", s("user")), kv("cpu", s("0"))];
    vec![ResourceMetrics {
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![
                Metric {
                    name: "system.cpu.time".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: attrs.clone(),
                            time_unix_nano: T0,
                            value: Some(number_data_point::Value::AsDouble(123.456)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "queue.length".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsInt(7)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                },
                Metric {
                    name: "http.server.request.duration".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            attributes: vec![
                                kv(
                                    "http.response.status_code",
                                    any(any_value::Value::IntValue(200)),
                                ),
                                kv("http.request.method", s("GET")),
                            ],
                            count: 1340,
                            sum: Some(99.573),
                            min: Some(0.017),
                            max: Some(8.13),
                            bucket_counts: vec![1324, 13, 0, 2, 1],
                            explicit_bounds: vec![0.125, 0.5, 1.0, 3.0],
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                    })),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    }]
}

/// normal/metrics.go, as in normal/metrics_test.go: `name{k=v,...} value`, histograms as
/// `count= sum= min= max= le<bound>=<count> ... <+Inf count>`.
#[test]
fn normal_metrics_follow_internal_normal() {
    assert_eq!(
        normal_metrics(&metrics()),
        "ResourceMetrics #0
ScopeMetrics #0
system.cpu.time{state=user,cpu=0} 123.456
queue.length{} 7
http.server.request.duration{http.response.status_code=200,http.request.method=GET} count=1340 sum=99.573 min=0.017 max=8.13 le0.125=1324 le0.5=13 le1=0 le3=2 1
"
    );
}

/// otlptext/metrics.go + databuffer.go logMetricDescriptor/logNumberDataPoints/
/// logHistogramDataPoints (`%f`: six decimals).
#[test]
fn detailed_metrics_follow_otlptext() {
    let got = detailed_metrics(&metrics());
    let expected_start = "ResourceMetrics #0
Resource SchemaURL: 
ScopeMetrics #0
ScopeMetrics SchemaURL: 
InstrumentationScope  
Metric #0
Descriptor:
     -> Name: system.cpu.time
     -> Description: 
     -> Unit: s
     -> DataType: Sum
     -> IsMonotonic: true
     -> AggregationTemporality: Cumulative
NumberDataPoints #0
Data point attributes:
     -> state: Str(user)
     -> cpu: Str(0)
StartTimestamp: 1970-01-01 00:00:00 +0000 UTC
Timestamp: 2020-02-11 20:26:12 +0000 UTC
Value: 123.456000
Metric #1
Descriptor:
     -> Name: queue.length
     -> Description: 
     -> Unit: 
     -> DataType: Gauge
NumberDataPoints #0
StartTimestamp: 1970-01-01 00:00:00 +0000 UTC
Timestamp: 1970-01-01 00:00:00 +0000 UTC
Value: 7
Metric #2
";
    assert!(got.starts_with(expected_start), "\n{got}");
    assert!(got.contains("\nCount: 1340\nSum: 99.573000\nMin: 0.017000\nMax: 8.130000\nExplicitBounds #0: 0.125000\nExplicitBounds #1: 0.500000\nExplicitBounds #2: 1.000000\nExplicitBounds #3: 3.000000\nBuckets #0, Count: 1324\n"), "\n{got}");
    assert!(got.ends_with("Buckets #4, Count: 1\n"), "\n{got}");
}

/// pcommon Value.AsString / otlptext valueToString for every type.
#[test]
fn values_print_like_pdata() {
    let map = any(any_value::Value::KvlistValue(KeyValueList {
        values: vec![kv("a", any(any_value::Value::IntValue(1)))],
    }));
    let arr = any(any_value::Value::ArrayValue(ArrayValue {
        values: vec![
            s("x").unwrap(),
            any(any_value::Value::BoolValue(true)).unwrap(),
        ],
    }));
    let mut b = String::new();
    for v in [
        s("x"),
        any(any_value::Value::DoubleValue(1.5)),
        any(any_value::Value::DoubleValue(3.0)),
        map,
        arr,
        any(any_value::Value::BytesValue(vec![1, 2, 3])),
        Some(AnyValue { value: None }),
    ] {
        b.push_str(&as_string(v.as_ref()));
        b.push('|');
    }
    assert_eq!(b, "x|1.5|3|{\"a\":1}|[\"x\",true]|AQID||");
    assert_eq!(go_float(1e21), "1e+21");
    assert_eq!(go_float(0.00001), "1e-05");
    assert_eq!(go_float(78.901234567), "78.901234567");
    assert_eq!(go_timestamp(0), "1970-01-01 00:00:00 +0000 UTC");
}

/// zap's sampler (the debug exporter's `sampling_initial`/`sampling_thereafter`): per second,
/// the first N pass, then every M-th.
#[test]
fn sampling_follows_zap() {
    let mut s = Sampler::new(2, 3);
    let t = s.tick;
    let passed: Vec<bool> = (0..8).map(|_| s.pass(t)).collect();
    assert_eq!(passed, [true, true, false, false, true, false, false, true]);
    assert!(
        s.pass(t + Duration::from_secs(1)),
        "a new second starts over"
    );
    let mut none = Sampler::new(1, 0);
    assert!(none.pass(t));
    assert!(!none.pass(t));
}

#[test]
fn settings_and_the_logging_alias() {
    let v = |y: &str| -> Value { serde_yaml_ng::from_str(y).unwrap() };
    assert!(build(&Value::Null).is_ok());
    assert!(build(&v(
        "{verbosity: normal, sampling_initial: 5, sampling_thereafter: 200}"
    ))
    .is_ok());
    assert_eq!(
        build(&v("verbosity: loud")).err().unwrap().path,
        "verbosity"
    );
    assert_eq!(
        build(&v("{use_internal_logger: false, output_paths: [/tmp/x]}"))
            .err()
            .unwrap()
            .path,
        "output_paths"
    );
    assert!(build_logging(&v("loglevel: debug")).is_ok());
    assert!(build_logging(&v("verbosity: detailed")).is_ok());
    assert_eq!(
        build_logging(&v("loglevel: loud")).err().unwrap().path,
        "loglevel"
    );
}
