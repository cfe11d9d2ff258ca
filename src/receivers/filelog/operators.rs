//! The `filelog` receiver's `operators`, written as the collector's stanza operators are:
//! `json_parser`, `regex_parser` (both with `timestamp` and `severity` sub-parsers,
//! `parse_from`, `parse_to`, `on_error`), `move`, `remove` and `add`. They run in the order
//! listed, each on the entry the previous one produced (stanza's default chaining).
//!
//! Fields are named as in stanza: `body`, `body.key`, `attributes.key`, `resource.key`, with
//! `attributes["key.with.dots"]` for keys containing dots; nested keys walk maps.
//!
//! `on_error`: `send` (default: the entry goes on unchanged, the error is counted and warned
//! about), `send_quiet` (counted, not warned), `drop` / `drop_quiet` (the entry is dropped,
//! counted). A line that is not valid JSON under `json_parser` therefore stays as the body.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use serde::{Deserialize, Serialize};

use super::timefmt::TimeParser;
use crate::config::DecodeError;

/// One log entry as the operators see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub record: LogRecord,
    pub resource: Vec<KeyValue>,
}

/// A stanza field: where in an entry a value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Body(Vec<String>),
    Attributes(Vec<String>),
    Resource(Vec<String>),
}

impl Field {
    pub fn parse(s: &str) -> Result<Field, String> {
        let s = s.trim();
        let (root, rest) = match s.find(['.', '[']) {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let mut keys = Vec::new();
        let mut r = rest;
        while !r.is_empty() {
            if let Some(x) = r.strip_prefix('.') {
                let end = x.find(['.', '[']).unwrap_or(x.len());
                if end == 0 {
                    return Err(format!("empty key in field {s:?}"));
                }
                keys.push(x[..end].to_string());
                r = &x[end..];
            } else if let Some(x) = r.strip_prefix('[') {
                let x = x.trim_start();
                let q = x
                    .chars()
                    .next()
                    .filter(|c| *c == '"' || *c == '\'')
                    .ok_or_else(|| format!("expected a quoted key after [ in field {s:?}"))?;
                let x = &x[1..];
                let end = x
                    .find(q)
                    .ok_or_else(|| format!("unterminated key in field {s:?}"))?;
                keys.push(x[..end].to_string());
                let after = x[end + 1..].trim_start();
                r = after
                    .strip_prefix(']')
                    .ok_or_else(|| format!("expected ] in field {s:?}"))?;
            } else {
                return Err(format!("cannot read field {s:?}"));
            }
        }
        match root {
            "body" => Ok(Field::Body(keys)),
            "attributes" => Ok(Field::Attributes(keys)),
            "resource" => Ok(Field::Resource(keys)),
            other => Err(format!(
                "field {s:?} must start with body, attributes or resource (not {other:?})"
            )),
        }
    }
}

fn sv(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn get_in<'a>(kvs: &'a [KeyValue], keys: &[String]) -> Option<&'a AnyValue> {
    let (first, rest) = keys.split_first()?;
    let v = kvs
        .iter()
        .rev()
        .find(|kv| &kv.key == first)?
        .value
        .as_ref()?;
    if rest.is_empty() {
        return Some(v);
    }
    match v.value.as_ref()? {
        any_value::Value::KvlistValue(l) => get_in(&l.values, rest),
        _ => None,
    }
}

fn take_in(kvs: &mut Vec<KeyValue>, keys: &[String]) -> Option<AnyValue> {
    let (first, rest) = keys.split_first()?;
    let i = kvs.iter().rposition(|kv| &kv.key == first)?;
    if rest.is_empty() {
        return kvs.remove(i).value;
    }
    match kvs[i].value.as_mut()?.value.as_mut()? {
        any_value::Value::KvlistValue(l) => take_in(&mut l.values, rest),
        _ => None,
    }
}

fn set_in(kvs: &mut Vec<KeyValue>, keys: &[String], value: AnyValue) {
    let Some((first, rest)) = keys.split_first() else {
        return;
    };
    let i = match kvs.iter().rposition(|kv| &kv.key == first) {
        Some(i) => i,
        None => {
            kvs.push(KeyValue {
                key: first.clone(),
                value: None,
                ..Default::default()
            });
            kvs.len() - 1
        }
    };
    if rest.is_empty() {
        kvs[i].value = Some(value);
        return;
    }
    let slot = kvs[i].value.get_or_insert_with(AnyValue::default);
    if !matches!(slot.value, Some(any_value::Value::KvlistValue(_))) {
        slot.value = Some(any_value::Value::KvlistValue(KeyValueList::default()));
    }
    if let Some(any_value::Value::KvlistValue(l)) = slot.value.as_mut() {
        set_in(&mut l.values, rest, value);
    }
}

fn body_map(e: &mut Entry) -> &mut Vec<KeyValue> {
    let body = e.record.body.get_or_insert_with(AnyValue::default);
    if !matches!(body.value, Some(any_value::Value::KvlistValue(_))) {
        body.value = Some(any_value::Value::KvlistValue(KeyValueList::default()));
    }
    match body.value.as_mut() {
        Some(any_value::Value::KvlistValue(l)) => &mut l.values,
        _ => unreachable!("just made a map"),
    }
}

impl Entry {
    pub fn get(&self, f: &Field) -> Option<&AnyValue> {
        match f {
            Field::Body(k) if k.is_empty() => self.record.body.as_ref(),
            Field::Body(k) => match self.record.body.as_ref()?.value.as_ref()? {
                any_value::Value::KvlistValue(l) => get_in(&l.values, k),
                _ => None,
            },
            Field::Attributes(k) => get_in(&self.record.attributes, k),
            Field::Resource(k) => get_in(&self.resource, k),
        }
    }

    /// The whole attribute or resource map (a field without keys).
    fn whole(&mut self, f: &Field) -> Option<&mut Vec<KeyValue>> {
        match f {
            Field::Attributes(k) if k.is_empty() => Some(&mut self.record.attributes),
            Field::Resource(k) if k.is_empty() => Some(&mut self.resource),
            _ => None,
        }
    }

    pub fn take(&mut self, f: &Field) -> Option<AnyValue> {
        if let Some(map) = self.whole(f) {
            if map.is_empty() {
                return None;
            }
            let values = std::mem::take(map);
            return Some(AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
            });
        }
        match f {
            Field::Body(k) if k.is_empty() => self.record.body.take(),
            Field::Body(k) => match self.record.body.as_mut()?.value.as_mut()? {
                any_value::Value::KvlistValue(l) => take_in(&mut l.values, k),
                _ => None,
            },
            Field::Attributes(k) => take_in(&mut self.record.attributes, k),
            Field::Resource(k) => take_in(&mut self.resource, k),
        }
    }

    pub fn set(&mut self, f: &Field, v: AnyValue) {
        if let Some(map) = self.whole(f) {
            // A map replaces the whole set; anything else cannot be a set of attributes.
            if let Some(any_value::Value::KvlistValue(l)) = v.value {
                *map = l.values;
            }
            return;
        }
        match f {
            Field::Body(k) if k.is_empty() => self.record.body = Some(v),
            Field::Body(k) => set_in(body_map(self), k, v),
            Field::Attributes(k) => set_in(&mut self.record.attributes, k, v),
            Field::Resource(k) => set_in(&mut self.resource, k, v),
        }
    }

    /// Merge the map `kvs` into `f` (parsers' `parse_to`).
    fn merge(&mut self, f: &Field, kvs: Vec<KeyValue>) {
        let target: &mut Vec<KeyValue> = match f {
            Field::Body(k) if k.is_empty() => body_map(self),
            Field::Attributes(k) if k.is_empty() => &mut self.record.attributes,
            Field::Resource(k) if k.is_empty() => &mut self.resource,
            _ => {
                self.set(
                    f,
                    AnyValue {
                        value: Some(any_value::Value::KvlistValue(KeyValueList { values: kvs })),
                    },
                );
                return;
            }
        };
        for kv in kvs {
            match target.iter_mut().find(|t| t.key == kv.key) {
                Some(t) => t.value = kv.value,
                None => target.push(kv),
            }
        }
    }
}

/// The text of a value, for parsers that read strings.
pub fn as_text(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::BytesValue(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

// ---- configuration --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Send,
    SendQuiet,
    Drop,
    DropQuiet,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    #[serde(default)]
    pub parse_from: Option<String>,
    #[serde(default)]
    pub layout_type: Option<String>,
    #[serde(default)]
    pub layout: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SeverityConfig {
    #[serde(default)]
    pub parse_from: Option<String>,
    /// `default` (stanza's names) or `none`.
    #[serde(default)]
    pub preset: Option<String>,
    /// Severity name → one value or a list of values that mean it.
    #[serde(default)]
    pub mapping: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    pub overwrite_text: bool,
}

/// One entry of `operators:` as written in YAML.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_yaml_ng::Value>,
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_expr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<SeverityConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_yaml_ng::Value>,
}

// ---- built operators ------------------------------------------------------------------------

pub struct SeverityParser {
    from: Field,
    /// Lower-cased text → (number, the severity's name).
    map: Vec<(String, SeverityNumber)>,
    overwrite_text: bool,
}

pub struct TimestampParser {
    from: Field,
    parser: TimeParser,
}

pub enum Op {
    Json {
        from: Field,
        to: Field,
        on_error: OnError,
        ts: Option<TimestampParser>,
        sev: Option<SeverityParser>,
    },
    Regex {
        from: Field,
        to: Field,
        on_error: OnError,
        re: regex::Regex,
        ts: Option<TimestampParser>,
        sev: Option<SeverityParser>,
    },
    Move {
        from: Field,
        to: Field,
    },
    Remove {
        field: Field,
    },
    Add {
        field: Field,
        value: AnyValue,
    },
}

/// Why an operator could not process an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The entry goes on (unchanged by this operator); counted.
    Sent {
        op: &'static str,
        reason: String,
        quiet: bool,
    },
    /// The entry is dropped; counted.
    Dropped {
        op: &'static str,
        reason: String,
        quiet: bool,
    },
}

fn sev_name(n: SeverityNumber) -> &'static str {
    match n as i32 {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "",
    }
}

fn sev_from_name(name: &str) -> Option<SeverityNumber> {
    use SeverityNumber as S;
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => S::Trace,
        "trace2" => S::Trace2,
        "trace3" => S::Trace3,
        "trace4" => S::Trace4,
        "debug" => S::Debug,
        "debug2" => S::Debug2,
        "debug3" => S::Debug3,
        "debug4" => S::Debug4,
        "info" => S::Info,
        "info2" => S::Info2,
        "info3" => S::Info3,
        "info4" => S::Info4,
        "warn" => S::Warn,
        "warn2" => S::Warn2,
        "warn3" => S::Warn3,
        "warn4" => S::Warn4,
        "error" => S::Error,
        "error2" => S::Error2,
        "error3" => S::Error3,
        "error4" => S::Error4,
        "fatal" => S::Fatal,
        "fatal2" => S::Fatal2,
        "fatal3" => S::Fatal3,
        "fatal4" => S::Fatal4,
        _ => return None,
    })
}

impl SeverityParser {
    fn build(c: &SeverityConfig, at: &str) -> Result<SeverityParser, DecodeError> {
        let from = field(at, "severity.parse_from", c.parse_from.as_deref())?;
        let mut map = Vec::new();
        match c.preset.as_deref().unwrap_or("default") {
            "default" => {
                use SeverityNumber as S;
                for (k, n) in [
                    ("trace", S::Trace),
                    ("debug", S::Debug),
                    ("info", S::Info),
                    ("notice", S::Info2),
                    ("warn", S::Warn),
                    ("warning", S::Warn),
                    ("error", S::Error),
                    ("err", S::Error),
                    ("critical", S::Fatal),
                    ("crit", S::Fatal),
                    ("fatal", S::Fatal),
                    ("emergency", S::Fatal2),
                    ("alert", S::Fatal3),
                ] {
                    map.push((k.to_string(), n));
                }
            }
            "none" => {}
            other => {
                return Err(DecodeError::new(
                    format!("{at}.severity.preset"),
                    format!("unknown preset {other:?} (default or none)"),
                ))
            }
        }
        for (name, values) in &c.mapping {
            let n = sev_from_name(name).ok_or_else(|| {
                DecodeError::new(
                    format!("{at}.severity.mapping.{name}"),
                    "not a severity (trace, debug, info, warn, error, fatal, optionally with 2-4)",
                )
            })?;
            let list = match values {
                serde_yaml_ng::Value::Sequence(s) => s.clone(),
                v => vec![v.clone()],
            };
            for v in list {
                let text = match v {
                    serde_yaml_ng::Value::String(s) => s,
                    serde_yaml_ng::Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(DecodeError::new(
                            format!("{at}.severity.mapping.{name}"),
                            "values must be strings or numbers",
                        ))
                    }
                };
                map.retain(|(k, _)| *k != text.to_ascii_lowercase());
                map.insert(0, (text.to_ascii_lowercase(), n));
            }
        }
        Ok(SeverityParser {
            from,
            map,
            overwrite_text: c.overwrite_text,
        })
    }

    fn apply(&self, e: &mut Entry) -> Result<(), String> {
        let Some(v) = e.get(&self.from).and_then(as_text) else {
            return Err("severity field missing".into());
        };
        let key = v.trim().to_ascii_lowercase();
        let n = self
            .map
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| *n)
            .ok_or_else(|| format!("unknown severity {v:?}"))?;
        e.record.severity_number = n as i32;
        e.record.severity_text = if self.overwrite_text {
            sev_name(n).to_string()
        } else {
            v
        };
        Ok(())
    }
}

impl TimestampParser {
    fn build(c: &TimestampConfig, at: &str) -> Result<TimestampParser, DecodeError> {
        let from = field(at, "timestamp.parse_from", c.parse_from.as_deref())?;
        let parser = TimeParser::new(
            c.layout_type.as_deref().unwrap_or("strptime"),
            c.layout.as_deref(),
            c.location.as_deref(),
        )
        .map_err(|m| DecodeError::new(format!("{at}.timestamp"), m))?;
        Ok(TimestampParser { from, parser })
    }

    fn apply(&self, e: &mut Entry) -> Result<(), String> {
        let Some(v) = e.get(&self.from) else {
            return Err("timestamp field missing".into());
        };
        let ns = match v.value.as_ref() {
            Some(any_value::Value::IntValue(i)) => self.parser.parse_number(*i as f64),
            Some(any_value::Value::DoubleValue(d)) => self.parser.parse_number(*d),
            _ => {
                let t = as_text(v).ok_or("timestamp is not text")?;
                self.parser.parse(&t)
            }
        }?;
        e.record.time_unix_nano = ns;
        Ok(())
    }
}

fn field(at: &str, key: &str, s: Option<&str>) -> Result<Field, DecodeError> {
    let s = s.ok_or_else(|| DecodeError::new(format!("{at}.{key}"), "required"))?;
    Field::parse(s).map_err(|m| DecodeError::new(format!("{at}.{key}"), m))
}

fn field_or(at: &str, key: &str, s: Option<&str>, default: &str) -> Result<Field, DecodeError> {
    field(at, key, Some(s.unwrap_or(default)))
}

/// A YAML value as an OTLP value (`add`).
fn yaml_to_any(v: &serde_yaml_ng::Value) -> Result<AnyValue, String> {
    use serde_yaml_ng::Value as Y;
    let value = match v {
        Y::String(s) => {
            if s.trim_start().starts_with("EXPR(") {
                return Err("EXPR(...) values are not supported; give a literal".into());
            }
            any_value::Value::StringValue(s.clone())
        }
        Y::Bool(b) => any_value::Value::BoolValue(*b),
        Y::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Y::Sequence(s) => {
            any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: s.iter().map(yaml_to_any).collect::<Result<_, _>>()?,
            })
        }
        Y::Mapping(m) => {
            let mut values = Vec::new();
            for (k, v) in m {
                let key = k.as_str().ok_or("map keys must be strings")?.to_string();
                values.push(KeyValue {
                    key,
                    value: Some(yaml_to_any(v)?),
                    ..Default::default()
                });
            }
            any_value::Value::KvlistValue(KeyValueList { values })
        }
        Y::Null => return Ok(AnyValue::default()),
        Y::Tagged(_) => return Err("tagged values are not supported".into()),
    };
    Ok(AnyValue { value: Some(value) })
}

/// A JSON value as an OTLP value (`json_parser`).
pub fn json_to_any(v: serde_json::Value) -> AnyValue {
    use serde_json::Value as J;
    let value = match v {
        J::Null => return AnyValue::default(),
        J::Bool(b) => any_value::Value::BoolValue(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => any_value::Value::StringValue(s),
        J::Array(a) => {
            any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: a.into_iter().map(json_to_any).collect(),
            })
        }
        J::Object(m) => any_value::Value::KvlistValue(KeyValueList {
            values: m
                .into_iter()
                .map(|(key, v)| KeyValue {
                    key,
                    value: Some(json_to_any(v)),
                    ..Default::default()
                })
                .collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

impl Op {
    /// Build operator number `i` of `operators`.
    pub fn build(c: &OperatorConfig, i: usize) -> Result<Op, DecodeError> {
        let at = format!("operators[{i}]");
        if c.output.is_some() {
            return Err(DecodeError::new(
                format!("{at}.output"),
                "operators run in the order listed; routing with output is not supported",
            ));
        }
        if c.if_expr.is_some() {
            return Err(DecodeError::new(
                format!("{at}.if"),
                "conditions (if) are not supported",
            ));
        }
        let unexpected = |key: &str, present: bool| -> Result<(), DecodeError> {
            if present {
                Err(DecodeError::new(
                    format!("{at}.{key}"),
                    format!("not a setting of {}", c.kind),
                ))
            } else {
                Ok(())
            }
        };
        let parser_parts = || -> Result<_, DecodeError> {
            Ok((
                field_or(&at, "parse_from", c.parse_from.as_deref(), "body")?,
                field_or(&at, "parse_to", c.parse_to.as_deref(), "attributes")?,
                c.on_error.unwrap_or_default(),
                c.timestamp
                    .as_ref()
                    .map(|t| TimestampParser::build(t, &at))
                    .transpose()?,
                c.severity
                    .as_ref()
                    .map(|s| SeverityParser::build(s, &at))
                    .transpose()?,
            ))
        };
        match c.kind.as_str() {
            "json_parser" => {
                unexpected("regex", c.regex.is_some())?;
                let (from, to, on_error, ts, sev) = parser_parts()?;
                Ok(Op::Json {
                    from,
                    to,
                    on_error,
                    ts,
                    sev,
                })
            }
            "regex_parser" => {
                let text = c
                    .regex
                    .as_deref()
                    .ok_or_else(|| DecodeError::new(format!("{at}.regex"), "required"))?;
                let re = regex::Regex::new(text)
                    .map_err(|e| DecodeError::new(format!("{at}.regex"), e.to_string()))?;
                if re.capture_names().flatten().next().is_none() {
                    return Err(DecodeError::new(
                        format!("{at}.regex"),
                        "needs at least one named group, as (?P<name>...)",
                    ));
                }
                let (from, to, on_error, ts, sev) = parser_parts()?;
                Ok(Op::Regex {
                    from,
                    to,
                    on_error,
                    re,
                    ts,
                    sev,
                })
            }
            "move" => Ok(Op::Move {
                from: field(&at, "from", c.from.as_deref())?,
                to: field(&at, "to", c.to.as_deref())?,
            }),
            "remove" => Ok(Op::Remove {
                field: field(&at, "field", c.field.as_deref())?,
            }),
            "add" => {
                let v = c
                    .value
                    .as_ref()
                    .ok_or_else(|| DecodeError::new(format!("{at}.value"), "required"))?;
                Ok(Op::Add {
                    field: field(&at, "field", c.field.as_deref())?,
                    value: yaml_to_any(v)
                        .map_err(|m| DecodeError::new(format!("{at}.value"), m))?,
                })
            }
            other => Err(DecodeError::new(
                format!("{at}.type"),
                format!(
                    "unknown operator {other:?} (json_parser, regex_parser, move, remove, add)"
                ),
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Json { .. } => "json_parser",
            Op::Regex { .. } => "regex_parser",
            Op::Move { .. } => "move",
            Op::Remove { .. } => "remove",
            Op::Add { .. } => "add",
        }
    }

    /// Process one entry in place.
    pub fn apply(&self, e: &mut Entry) -> Result<(), OpError> {
        let op = self.name();
        let fail = |on_error: OnError, reason: String| match on_error {
            OnError::Send => OpError::Sent {
                op,
                reason,
                quiet: false,
            },
            OnError::SendQuiet => OpError::Sent {
                op,
                reason,
                quiet: true,
            },
            OnError::Drop => OpError::Dropped {
                op,
                reason,
                quiet: false,
            },
            OnError::DropQuiet => OpError::Dropped {
                op,
                reason,
                quiet: true,
            },
        };
        match self {
            Op::Json {
                from,
                to,
                on_error,
                ts,
                sev,
            } => {
                let text = e
                    .get(from)
                    .and_then(as_text)
                    .ok_or_else(|| fail(*on_error, "nothing to parse".into()))?;
                let kvs = match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(m)) => m
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(json_to_any(v)),
                            ..Default::default()
                        })
                        .collect(),
                    Ok(_) => return Err(fail(*on_error, "not a JSON object".into())),
                    Err(err) => return Err(fail(*on_error, format!("not JSON: {err}"))),
                };
                e.merge(to, kvs);
                sub_parsers(e, ts, sev).map_err(|r| fail(*on_error, r))
            }
            Op::Regex {
                from,
                to,
                on_error,
                re,
                ts,
                sev,
            } => {
                let text = e
                    .get(from)
                    .and_then(as_text)
                    .ok_or_else(|| fail(*on_error, "nothing to parse".into()))?;
                let caps = re
                    .captures(&text)
                    .ok_or_else(|| fail(*on_error, "regex does not match".into()))?;
                let kvs = re
                    .capture_names()
                    .flatten()
                    .filter_map(|n| {
                        caps.name(n).map(|m| KeyValue {
                            key: n.to_string(),
                            value: Some(sv(m.as_str())),
                            ..Default::default()
                        })
                    })
                    .collect();
                e.merge(to, kvs);
                sub_parsers(e, ts, sev).map_err(|r| fail(*on_error, r))
            }
            Op::Move { from, to } => {
                let v = e.take(from).ok_or_else(|| OpError::Sent {
                    op,
                    reason: "field to move is missing".into(),
                    quiet: false,
                })?;
                e.set(to, v);
                Ok(())
            }
            Op::Remove { field } => e.take(field).map(drop).ok_or_else(|| OpError::Sent {
                op,
                reason: "field to remove is missing".into(),
                quiet: false,
            }),
            Op::Add { field, value } => {
                e.set(field, value.clone());
                Ok(())
            }
        }
    }
}

fn sub_parsers(
    e: &mut Entry,
    ts: &Option<TimestampParser>,
    sev: &Option<SeverityParser>,
) -> Result<(), String> {
    let mut err = None;
    if let Some(t) = ts {
        if let Err(r) = t.apply(e) {
            err = Some(format!("timestamp: {r}"));
        }
    }
    if let Some(s) = sev {
        if let Err(r) = s.apply(e) {
            err.get_or_insert(format!("severity: {r}"));
        }
    }
    err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests;
