//! The text the collector's `debug` exporter prints for a batch, per verbosity: `normal` follows
//! `exporter/debugexporter/internal/normal` (one line per span, log record or data point),
//! `detailed` follows `internal/otlptext` (the full dump: `ResourceSpans #0`, `Span #0`,
//! `    Trace ID       : <32 hex>`, attributes as `     -> key: Str(value)`, ...). Go's value
//! formats are reproduced where they show: `time.Time.String()` for timestamps, `%f` as six
//! decimals, `%v` of a float as its shortest form.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, number_data_point, Exemplar, Metric, NumberDataPoint, ResourceMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

// ---- values as pdata prints them --------------------------------------------------------------

/// `pcommon.Value.Type().String()`.
fn type_name(v: &AnyValue) -> &'static str {
    match &v.value {
        None => "Empty",
        Some(any_value::Value::StringValue(_)) | Some(any_value::Value::StringValueStrindex(_)) => {
            "Str"
        }
        Some(any_value::Value::BoolValue(_)) => "Bool",
        Some(any_value::Value::IntValue(_)) => "Int",
        Some(any_value::Value::DoubleValue(_)) => "Double",
        Some(any_value::Value::ArrayValue(_)) => "Slice",
        Some(any_value::Value::KvlistValue(_)) => "Map",
        Some(any_value::Value::BytesValue(_)) => "Bytes",
    }
}

fn to_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::StringValueStrindex(i)) => J::from(*i),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => J::from(*d),
        Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(any_value::Value::KvlistValue(m)) => J::Object(
            m.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, to_json)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => J::String(b64(b)),
    }
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `pcommon.Value.AsString()`.
pub fn as_string(v: Option<&AnyValue>) -> String {
    let Some(v) = v else { return String::new() };
    match &v.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::StringValueStrindex(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => go_float(*d),
        Some(any_value::Value::BytesValue(b)) => b64(b),
        Some(_) => to_json(v).to_string(),
    }
}

/// otlptext's `valueToString`: `Str(x)`, `Int(5)`, `Map({"a":1})`.
fn value_to_string(v: Option<&AnyValue>) -> String {
    let name = v.map_or("Empty", type_name);
    format!("{name}({})", as_string(v))
}

/// Go's `%v` of a float64: the shortest representation (`1.5`, `3`, `1e+21`).
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        // Go: exponent with at least two digits, explicit sign.
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        return format!("{m}e{sign}{digits:0>2}");
    }
    format!("{f}")
}

/// pcommon `Timestamp.String()`: Go's `time.Time.String()` in UTC,
/// `2020-02-11 20:26:12.000000321 +0000 UTC`.
pub fn go_timestamp(nanos: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
    let s = humantime::format_rfc3339_nanos(t).to_string();
    let s = s.trim_end_matches('Z').replacen('T', " ", 1);
    let s = match s.split_once('.') {
        Some((secs, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                secs.to_string()
            } else {
                format!("{secs}.{frac}")
            }
        }
        None => s,
    };
    format!("{s} +0000 UTC")
}

/// pdata's `TraceID.String()`/`SpanID.String()`: lowercase hex, empty when all zero.
fn id_hex(id: &[u8]) -> String {
    if id.iter().all(|b| *b == 0) {
        return String::new();
    }
    id.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn span_kind(k: i32) -> &'static str {
    match k {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

fn status_code(c: i32) -> &'static str {
    match c {
        1 => "Ok",
        2 => "Error",
        _ => "Unset",
    }
}

/// plog `SeverityNumber.String()`.
fn severity(n: i32) -> String {
    const NAMES: [&str; 6] = ["Trace", "Debug", "Info", "Warn", "Error", "Fatal"];
    if !(1..=24).contains(&n) {
        return if n == 0 {
            "Unspecified".into()
        } else {
            format!("SeverityNumber({n})")
        };
    }
    let (group, step) = ((n - 1) / 4, (n - 1) % 4);
    let name = NAMES[group as usize];
    if step == 0 {
        name.into()
    } else {
        format!("{name}{}", step + 1)
    }
}

fn temporality(t: i32) -> &'static str {
    match t {
        1 => "Delta",
        2 => "Cumulative",
        _ => "Unspecified",
    }
}

// ---- detailed: internal/otlptext ---------------------------------------------------------------

/// otlptext's `dataBuffer`.
#[derive(Default)]
struct Buf(String);

impl Buf {
    fn entry(&mut self, line: impl AsRef<str>) {
        self.0.push_str(line.as_ref());
        self.0.push('\n');
    }

    /// `logAttr`: `    %-15s: %s`.
    fn attr(&mut self, name: &str, value: impl AsRef<str>) {
        self.entry(format!("    {name:<15}: {}", value.as_ref()));
    }

    /// `logAttributes`: nothing when empty; the prefix is indented by what precedes `->` in
    /// the header.
    fn attributes(&mut self, header: &str, attrs: &[KeyValue]) {
        if attrs.is_empty() {
            return;
        }
        self.entry(format!("{header}:"));
        let prefix = match header.split_once("->") {
            Some((indent, _)) => format!("{indent}     ->"),
            None => "     ->".to_string(),
        };
        for kv in attrs {
            self.entry(format!(
                "{prefix} {}: {}",
                kv.key,
                value_to_string(kv.value.as_ref())
            ));
        }
    }

    fn scope(&mut self, s: Option<&InstrumentationScope>) {
        let (name, version) = s.map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
        self.entry(format!("InstrumentationScope {name} {version}"));
        self.attributes(
            "InstrumentationScope attributes",
            s.map_or(&[][..], |s| &s.attributes),
        );
    }

    fn resource(&mut self, r: Option<&Resource>) {
        self.attributes("Resource attributes", r.map_or(&[][..], |r| &r.attributes));
    }

    fn exemplars(&mut self, ex: &[Exemplar]) {
        if ex.is_empty() {
            return;
        }
        self.entry("Exemplars:");
        for (i, e) in ex.iter().enumerate() {
            self.entry(format!("Exemplar #{i}"));
            self.entry(format!("     -> Trace ID: {}", id_hex(&e.trace_id)));
            self.entry(format!("     -> Span ID: {}", id_hex(&e.span_id)));
            self.entry(format!(
                "     -> Timestamp: {}",
                go_timestamp(e.time_unix_nano)
            ));
            match e.value {
                Some(exemplar::Value::AsInt(v)) => self.entry(format!("     -> Value: {v}")),
                Some(exemplar::Value::AsDouble(v)) => self.entry(format!("     -> Value: {v:.6}")),
                None => {}
            }
            self.attributes("     -> FilteredAttributes", &e.filtered_attributes);
        }
    }

    /// A data point's title, attributes and timestamps.
    fn point_head(&mut self, title: String, attributes: &[KeyValue], start: u64, time: u64) {
        self.entry(title);
        self.attributes("Data point attributes", attributes);
        self.entry(format!("StartTimestamp: {}", go_timestamp(start)));
        self.entry(format!("Timestamp: {}", go_timestamp(time)));
    }

    /// A histogram's optional sum, min and max.
    fn sum_min_max(&mut self, sum: Option<f64>, min: Option<f64>, max: Option<f64>) {
        if let Some(s) = sum {
            self.entry(format!("Sum: {s:.6}"));
        }
        if let Some(v) = min {
            self.entry(format!("Min: {v:.6}"));
        }
        if let Some(v) = max {
            self.entry(format!("Max: {v:.6}"));
        }
    }

    fn number_points(&mut self, ps: &[NumberDataPoint]) {
        for (i, p) in ps.iter().enumerate() {
            self.point_head(
                format!("NumberDataPoints #{i}"),
                &p.attributes,
                p.start_time_unix_nano,
                p.time_unix_nano,
            );
            match p.value {
                Some(number_data_point::Value::AsInt(v)) => self.entry(format!("Value: {v}")),
                Some(number_data_point::Value::AsDouble(v)) => self.entry(format!("Value: {v:.6}")),
                None => {}
            }
            self.exemplars(&p.exemplars);
        }
    }

    fn metric(&mut self, m: &Metric) {
        self.entry("Descriptor:");
        self.entry(format!("     -> Name: {}", m.name));
        self.entry(format!("     -> Description: {}", m.description));
        self.entry(format!("     -> Unit: {}", m.unit));
        let kind = match &m.data {
            None => "Empty",
            Some(metric::Data::Gauge(_)) => "Gauge",
            Some(metric::Data::Sum(_)) => "Sum",
            Some(metric::Data::Histogram(_)) => "Histogram",
            Some(metric::Data::ExponentialHistogram(_)) => "ExponentialHistogram",
            Some(metric::Data::Summary(_)) => "Summary",
        };
        self.entry(format!("     -> DataType: {kind}"));
        self.attributes("     -> Metadata", &m.metadata);
        match &m.data {
            None => {}
            Some(metric::Data::Gauge(g)) => self.number_points(&g.data_points),
            Some(metric::Data::Sum(s)) => {
                self.entry(format!("     -> IsMonotonic: {}", s.is_monotonic));
                self.entry(format!(
                    "     -> AggregationTemporality: {}",
                    temporality(s.aggregation_temporality)
                ));
                self.number_points(&s.data_points);
            }
            Some(metric::Data::Histogram(h)) => {
                self.entry(format!(
                    "     -> AggregationTemporality: {}",
                    temporality(h.aggregation_temporality)
                ));
                for (i, p) in h.data_points.iter().enumerate() {
                    self.point_head(
                        format!("HistogramDataPoints #{i}"),
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    self.entry(format!("Count: {}", p.count));
                    self.sum_min_max(p.sum, p.min, p.max);
                    for (j, b) in p.explicit_bounds.iter().enumerate() {
                        self.entry(format!("ExplicitBounds #{j}: {b:.6}"));
                    }
                    for (j, c) in p.bucket_counts.iter().enumerate() {
                        self.entry(format!("Buckets #{j}, Count: {c}"));
                    }
                    self.exemplars(&p.exemplars);
                }
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                self.entry(format!(
                    "     -> AggregationTemporality: {}",
                    temporality(h.aggregation_temporality)
                ));
                for (i, p) in h.data_points.iter().enumerate() {
                    self.point_head(
                        format!("ExponentialHistogramDataPoints #{i}"),
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    self.entry(format!("Count: {}", p.count));
                    self.sum_min_max(p.sum, p.min, p.max);
                    let factor = std::f64::consts::LN_2 * 2f64.powi(-p.scale);
                    if let Some(neg) = &p.negative {
                        for (j, c) in neg.bucket_counts.iter().enumerate().rev() {
                            let index = neg.offset as f64 + j as f64;
                            let lower = -((index + 1.0) * factor).exp();
                            let upper = -(index * factor).exp();
                            self.entry(format!("Bucket [{lower:.6}, {upper:.6}), Count: {c}"));
                        }
                    }
                    if p.zero_count != 0 {
                        self.entry(format!("Bucket [0, 0], Count: {}", p.zero_count));
                    }
                    if let Some(pos) = &p.positive {
                        for (j, c) in pos.bucket_counts.iter().enumerate() {
                            let index = pos.offset as f64 + j as f64;
                            let lower = (index * factor).exp();
                            let upper = ((index + 1.0) * factor).exp();
                            self.entry(format!("Bucket ({lower:.6}, {upper:.6}], Count: {c}"));
                        }
                    }
                    self.exemplars(&p.exemplars);
                }
            }
            Some(metric::Data::Summary(s)) => {
                for (i, p) in s.data_points.iter().enumerate() {
                    self.point_head(
                        format!("SummaryDataPoints #{i}"),
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    self.entry(format!("Count: {}", p.count));
                    self.entry(format!("Sum: {:.6}", p.sum));
                    for (j, q) in p.quantile_values.iter().enumerate() {
                        self.entry(format!(
                            "QuantileValue #{j}: Quantile {:.6}, Value {:.6}",
                            q.quantile, q.value
                        ));
                    }
                }
            }
        }
    }
}

/// otlptext `MarshalTraces`.
pub fn detailed_traces(rss: &[ResourceSpans]) -> String {
    let mut b = Buf::default();
    for (i, rs) in rss.iter().enumerate() {
        b.entry(format!("ResourceSpans #{i}"));
        b.entry(format!("Resource SchemaURL: {}", rs.schema_url));
        b.resource(rs.resource.as_ref());
        for (j, ss) in rs.scope_spans.iter().enumerate() {
            b.entry(format!("ScopeSpans #{j}"));
            b.entry(format!("ScopeSpans SchemaURL: {}", ss.schema_url));
            b.scope(ss.scope.as_ref());
            for (k, span) in ss.spans.iter().enumerate() {
                b.entry(format!("Span #{k}"));
                b.attr("Trace ID", id_hex(&span.trace_id));
                b.attr("Parent ID", id_hex(&span.parent_span_id));
                b.attr("ID", id_hex(&span.span_id));
                b.attr("Name", &span.name);
                b.attr("Kind", span_kind(span.kind));
                if !span.trace_state.is_empty() {
                    b.attr("TraceState", &span.trace_state);
                }
                b.attr("Start time", go_timestamp(span.start_time_unix_nano));
                b.attr("End time", go_timestamp(span.end_time_unix_nano));
                let (code, msg) = span
                    .status
                    .as_ref()
                    .map_or((0, ""), |s| (s.code, s.message.as_str()));
                b.attr("Status code", status_code(code));
                b.attr("Status message", msg);
                b.attr(
                    "DroppedAttributesCount",
                    span.dropped_attributes_count.to_string(),
                );
                b.attr("DroppedEventsCount", span.dropped_events_count.to_string());
                b.attr("DroppedLinksCount", span.dropped_links_count.to_string());
                b.attributes("Attributes", &span.attributes);
                if !span.events.is_empty() {
                    b.entry("Events:");
                    for (n, e) in span.events.iter().enumerate() {
                        b.entry(format!("SpanEvent #{n}"));
                        b.entry(format!("     -> Name: {}", e.name));
                        b.entry(format!(
                            "     -> Timestamp: {}",
                            go_timestamp(e.time_unix_nano)
                        ));
                        b.entry(format!(
                            "     -> DroppedAttributesCount: {}",
                            e.dropped_attributes_count
                        ));
                        b.attributes("     -> Attributes:", &e.attributes);
                    }
                }
                if !span.links.is_empty() {
                    b.entry("Links:");
                    for (n, l) in span.links.iter().enumerate() {
                        b.entry(format!("SpanLink #{n}"));
                        b.entry(format!("     -> Trace ID: {}", id_hex(&l.trace_id)));
                        b.entry(format!("     -> ID: {}", id_hex(&l.span_id)));
                        b.entry(format!("     -> TraceState: {}", l.trace_state));
                        b.entry(format!(
                            "     -> DroppedAttributesCount: {}",
                            l.dropped_attributes_count
                        ));
                        b.attributes("     -> Attributes:", &l.attributes);
                    }
                }
            }
        }
    }
    b.0
}

/// otlptext `MarshalLogs`.
pub fn detailed_logs(rls: &[ResourceLogs]) -> String {
    let mut b = Buf::default();
    for (i, rl) in rls.iter().enumerate() {
        b.entry(format!("ResourceLog #{i}"));
        b.entry(format!("Resource SchemaURL: {}", rl.schema_url));
        b.resource(rl.resource.as_ref());
        for (j, sl) in rl.scope_logs.iter().enumerate() {
            b.entry(format!("ScopeLogs #{j}"));
            b.entry(format!("ScopeLogs SchemaURL: {}", sl.schema_url));
            b.scope(sl.scope.as_ref());
            for (k, lr) in sl.log_records.iter().enumerate() {
                b.entry(format!("LogRecord #{k}"));
                b.entry(format!(
                    "ObservedTimestamp: {}",
                    go_timestamp(lr.observed_time_unix_nano)
                ));
                b.entry(format!("Timestamp: {}", go_timestamp(lr.time_unix_nano)));
                b.entry(format!("SeverityText: {}", lr.severity_text));
                b.entry(format!(
                    "SeverityNumber: {}({})",
                    severity(lr.severity_number),
                    lr.severity_number
                ));
                if !lr.event_name.is_empty() {
                    b.entry(format!("EventName: {}", lr.event_name));
                }
                b.entry(format!("Body: {}", value_to_string(lr.body.as_ref())));
                b.attributes("Attributes", &lr.attributes);
                b.entry(format!("Trace ID: {}", id_hex(&lr.trace_id)));
                b.entry(format!("Span ID: {}", id_hex(&lr.span_id)));
                b.entry(format!("Flags: {}", lr.flags));
            }
        }
    }
    b.0
}

/// otlptext `MarshalMetrics`.
pub fn detailed_metrics(rms: &[ResourceMetrics]) -> String {
    let mut b = Buf::default();
    for (i, rm) in rms.iter().enumerate() {
        b.entry(format!("ResourceMetrics #{i}"));
        b.entry(format!("Resource SchemaURL: {}", rm.schema_url));
        b.resource(rm.resource.as_ref());
        for (j, sm) in rm.scope_metrics.iter().enumerate() {
            b.entry(format!("ScopeMetrics #{j}"));
            b.entry(format!("ScopeMetrics SchemaURL: {}", sm.schema_url));
            b.scope(sm.scope.as_ref());
            for (k, m) in sm.metrics.iter().enumerate() {
                b.entry(format!("Metric #{k}"));
                b.metric(m);
            }
        }
    }
    b.0
}

// ---- normal: internal/normal -------------------------------------------------------------------

/// `writeAttributes`: `key=value` with `AsString` values.
fn kv_list(attrs: &[KeyValue]) -> Vec<String> {
    attrs
        .iter()
        .map(|kv| format!("{}={}", kv.key, as_string(kv.value.as_ref())))
        .collect()
}

/// `writeAttributesString`: ` a=1 b=2`, or nothing.
fn kv_suffix(attrs: &[KeyValue]) -> String {
    let v = kv_list(attrs);
    if v.is_empty() {
        String::new()
    } else {
        format!(" {}", v.join(" "))
    }
}

fn resource_details(schema_url: &str) -> String {
    if schema_url.is_empty() {
        String::new()
    } else {
        format!(" [{schema_url}]")
    }
}

/// `writeScopeDetails`: ` name@version [schema]`.
fn scope_details(s: Option<&InstrumentationScope>, schema_url: &str) -> String {
    let mut d = String::new();
    if let Some(s) = s {
        d.push_str(&s.name);
        if !s.version.is_empty() {
            d.push('@');
            d.push_str(&s.version);
        }
    }
    if !schema_url.is_empty() {
        if !d.is_empty() {
            d.push(' ');
        }
        let _ = write!(d, "[{schema_url}]");
    }
    if d.is_empty() {
        d
    } else {
        format!(" {d}")
    }
}

/// A normal-format resource header: `ResourceLog #0 [schema] a=1`.
fn resource_line(out: &mut String, title: &str, i: usize, schema_url: &str, r: Option<&Resource>) {
    let _ = writeln!(
        out,
        "{title} #{i}{}{}",
        resource_details(schema_url),
        kv_suffix(resource_attrs(r))
    );
}

/// A normal-format scope header: `ScopeLog #0 name@version [schema] a=1`.
fn scope_line(
    out: &mut String,
    title: &str,
    j: usize,
    scope: Option<&InstrumentationScope>,
    schema_url: &str,
) {
    let _ = writeln!(
        out,
        "{title} #{j}{}{}",
        scope_details(scope, schema_url),
        kv_suffix(scope_attrs(scope))
    );
}

fn resource_attrs(r: Option<&Resource>) -> &[KeyValue] {
    r.map_or(&[][..], |r| &r.attributes)
}

fn scope_attrs(s: Option<&InstrumentationScope>) -> &[KeyValue] {
    s.map_or(&[][..], |s| &s.attributes)
}

/// normal `MarshalTraces`: `name traceid spanid attr=value ...` per span.
pub fn normal_traces(rss: &[ResourceSpans]) -> String {
    let mut out = String::new();
    for (i, rs) in rss.iter().enumerate() {
        resource_line(
            &mut out,
            "ResourceTraces",
            i,
            &rs.schema_url,
            rs.resource.as_ref(),
        );
        for (j, ss) in rs.scope_spans.iter().enumerate() {
            scope_line(
                &mut out,
                "ScopeTraces",
                j,
                ss.scope.as_ref(),
                &ss.schema_url,
            );
            for span in &ss.spans {
                let _ = write!(
                    out,
                    "{} {} {}",
                    span.name,
                    id_hex(&span.trace_id),
                    id_hex(&span.span_id)
                );
                if !span.attributes.is_empty() {
                    let _ = write!(out, " {}", kv_list(&span.attributes).join(" "));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// normal `MarshalLogs`: `body attr=value ...` per record.
pub fn normal_logs(rls: &[ResourceLogs]) -> String {
    let mut out = String::new();
    for (i, rl) in rls.iter().enumerate() {
        resource_line(
            &mut out,
            "ResourceLog",
            i,
            &rl.schema_url,
            rl.resource.as_ref(),
        );
        for (j, sl) in rl.scope_logs.iter().enumerate() {
            scope_line(&mut out, "ScopeLog", j, sl.scope.as_ref(), &sl.schema_url);
            for lr in &sl.log_records {
                let _ = writeln!(
                    out,
                    "{} {}",
                    as_string(lr.body.as_ref()),
                    kv_list(&lr.attributes).join(" ")
                );
            }
        }
    }
    out
}

/// normal `MarshalMetrics`: `name{attr=value,...} value` per data point.
pub fn normal_metrics(rms: &[ResourceMetrics]) -> String {
    let mut out = String::new();
    for (i, rm) in rms.iter().enumerate() {
        resource_line(
            &mut out,
            "ResourceMetrics",
            i,
            &rm.schema_url,
            rm.resource.as_ref(),
        );
        for (j, sm) in rm.scope_metrics.iter().enumerate() {
            scope_line(
                &mut out,
                "ScopeMetrics",
                j,
                sm.scope.as_ref(),
                &sm.schema_url,
            );
            for m in &sm.metrics {
                let numbers = |out: &mut String, ps: &[NumberDataPoint]| {
                    for p in ps {
                        let v = match p.value {
                            Some(number_data_point::Value::AsInt(v)) => v.to_string(),
                            Some(number_data_point::Value::AsDouble(v)) => go_float(v),
                            None => String::new(),
                        };
                        let _ = writeln!(
                            out,
                            "{}{{{}}} {v}",
                            m.name,
                            kv_list(&p.attributes).join(",")
                        );
                    }
                };
                match &m.data {
                    Some(metric::Data::Gauge(g)) => numbers(&mut out, &g.data_points),
                    Some(metric::Data::Sum(s)) => numbers(&mut out, &s.data_points),
                    Some(metric::Data::Histogram(h)) => {
                        for p in &h.data_points {
                            let mut v = format!("count={}", p.count);
                            if let Some(s) = p.sum {
                                let _ = write!(v, " sum={}", go_float(s));
                            }
                            if let Some(s) = p.min {
                                let _ = write!(v, " min={}", go_float(s));
                            }
                            if let Some(s) = p.max {
                                let _ = write!(v, " max={}", go_float(s));
                            }
                            for (b, c) in p.bucket_counts.iter().enumerate() {
                                let bound = p
                                    .explicit_bounds
                                    .get(b)
                                    .map_or(String::new(), |x| format!("le{}=", go_float(*x)));
                                let _ = write!(v, " {bound}{c}");
                            }
                            let _ = writeln!(
                                out,
                                "{}{{{}}} {v}",
                                m.name,
                                kv_list(&p.attributes).join(",")
                            );
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        for p in &h.data_points {
                            let mut v = format!("count={}", p.count);
                            if let Some(s) = p.sum {
                                let _ = write!(v, " sum={}", go_float(s));
                            }
                            if let Some(s) = p.min {
                                let _ = write!(v, " min={}", go_float(s));
                            }
                            if let Some(s) = p.max {
                                let _ = write!(v, " max={}", go_float(s));
                            }
                            let factor = std::f64::consts::LN_2 * 2f64.powi(-p.scale);
                            if let Some(neg) = &p.negative {
                                for (j, c) in neg.bucket_counts.iter().enumerate().rev() {
                                    let index = neg.offset as f64 + j as f64;
                                    let _ =
                                        write!(v, " le{}={c}", go_float(-(index * factor).exp()));
                                }
                            }
                            if p.zero_count != 0 {
                                let _ = write!(v, " zero={}", p.zero_count);
                            }
                            if let Some(pos) = &p.positive {
                                for (j, c) in pos.bucket_counts.iter().enumerate() {
                                    let index = pos.offset as f64 + j as f64;
                                    let _ = write!(
                                        v,
                                        " le{}={c}",
                                        go_float(((index + 1.0) * factor).exp())
                                    );
                                }
                            }
                            let _ = writeln!(
                                out,
                                "{}{{{}}} {v}",
                                m.name,
                                kv_list(&p.attributes).join(",")
                            );
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        for p in &s.data_points {
                            let mut v = format!("count={} sum={:.6}", p.count, p.sum);
                            for q in &p.quantile_values {
                                let _ =
                                    write!(v, " q{}={}", go_float(q.quantile), go_float(q.value));
                            }
                            let _ = writeln!(
                                out,
                                "{}{{{}}} {v}",
                                m.name,
                                kv_list(&p.attributes).join(",")
                            );
                        }
                    }
                    None => {}
                }
            }
        }
    }
    out
}
