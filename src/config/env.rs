//! `${env:VAR}` and `${env:VAR:-default}` expansion in string values (`$$` is a literal `$`).
//!
//! A value that is exactly one reference is re-read as a YAML scalar after expansion, so
//! `port: ${env:PORT}` yields a number, as in the OpenTelemetry Collector.

use super::{Diagnostics, Value};

pub fn expand(v: Value, d: &mut Diagnostics) -> Value {
    expand_at(v, "", d)
}

fn expand_at(v: Value, path: &str, d: &mut Diagnostics) -> Value {
    match v {
        Value::String(s) if s.contains('$') => match expand_str(&s) {
            Ok((out, missing, whole)) => {
                for var in missing {
                    d.warn(
                        path,
                        format!("environment variable {var} is not set; using an empty string"),
                    );
                }
                if whole {
                    serde_yaml_ng::from_str::<Value>(&out)
                        .ok()
                        .filter(|v| {
                            !matches!(v, Value::Mapping(_) | Value::Sequence(_) | Value::Null)
                                || out.trim().is_empty()
                        })
                        .map(|v| {
                            if matches!(v, Value::Null) {
                                Value::String(out.clone())
                            } else {
                                v
                            }
                        })
                        .unwrap_or(Value::String(out))
                } else {
                    Value::String(out)
                }
            }
            Err(msg) => {
                d.error(path, msg);
                Value::String(s)
            }
        },
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .enumerate()
                .map(|(i, x)| expand_at(x, &format!("{path}[{i}]"), d))
                .collect(),
        ),
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .map(|(k, x)| {
                    let child = match k.as_str() {
                        Some(key) if path.is_empty() => key.to_string(),
                        Some(key) => format!("{path}.{key}"),
                        None => path.to_string(),
                    };
                    let x = expand_at(x, &child, d);
                    (k, x)
                })
                .collect(),
        ),
        other => other,
    }
}

/// Returns (expanded, unset variable names, whether the input was exactly one reference).
fn expand_str(s: &str) -> Result<(String, Vec<String>, bool), String> {
    let mut out = String::with_capacity(s.len());
    let mut missing = Vec::new();
    let mut rest = s;
    let mut refs = 0;
    let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            let inner = &body[..end];
            let spec = inner.strip_prefix("env:").ok_or_else(|| {
                format!(
                    "`${{{inner}}}`: only `${{env:VAR}}` and `${{env:VAR:-default}}` are supported"
                )
            })?;
            let (name, default) = match spec.split_once(":-") {
                Some((n, dflt)) => (n, Some(dflt)),
                None => (spec, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`${{{inner}}}`: `{name}` is not a valid environment variable name"
                ));
            }
            match std::env::var(name) {
                Ok(val) if !val.is_empty() || default.is_none() => out.push_str(&val),
                _ => match default {
                    Some(dflt) => out.push_str(dflt),
                    None => missing.push(name.to_string()),
                },
            }
            refs += 1;
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok((out, missing, whole && refs == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references() {
        std::env::set_var("CELERIAC_T_HOST", "redis.local");
        let (s, missing, whole) = expand_str("redis://${env:CELERIAC_T_HOST}:6379/0").unwrap();
        assert_eq!(s, "redis://redis.local:6379/0");
        assert!(missing.is_empty());
        assert!(!whole);
        let (s, _, whole) = expand_str("${env:CELERIAC_T_UNSET_X:-9540}").unwrap();
        assert_eq!(s, "9540");
        assert!(whole);
        let (s, missing, _) = expand_str("a${env:CELERIAC_T_UNSET_Y}b").unwrap();
        assert_eq!(s, "ab");
        assert_eq!(missing, vec!["CELERIAC_T_UNSET_Y".to_string()]);
        assert_eq!(expand_str("cost $$5").unwrap().0, "cost $5");
        assert!(expand_str("${file:/x}").is_err());
        assert!(expand_str("${env:A").is_err());
    }

    #[test]
    fn whole_reference_becomes_typed() {
        std::env::set_var("CELERIAC_T_PORT", "9540");
        let mut d = Diagnostics::new("t", "");
        let v = expand(Value::String("${env:CELERIAC_T_PORT}".into()), &mut d);
        assert_eq!(v, Value::Number(9540.into()));
    }
}
