//! `${…}` expansion in string values, rule for rule as the OpenTelemetry Collector's confmap
//! resolver does it (confmap/expand.go, confmap/resolver.go, confmap/provider/envprovider,
//! confmap/provider/fileprovider, otelcol/command.go). It runs once, over the merged config.
//!
//! * `${env:VAR}`, and `${VAR}` (the default scheme is `env`, as `otelcol` sets it);
//!   `${env:VAR:-default}` uses `default` only when VAR is *unset* (set-but-empty stays empty);
//!   an unset VAR without default expands to nothing, with a warning. Names must match
//!   `^[a-zA-Z_][a-zA-Z0-9_]*$`.
//! * `${file:path}` reads the file.
//! * `${yaml:text}` (rarely useful inline, but a provider like the others).
//! * A value that is exactly one reference takes the *typed* YAML value of what was read
//!   (`port: ${env:PORT}` is a number, `${file:x.yaml}` may be a whole mapping, an empty value is
//!   null); a reference inside a longer string is replaced by the raw text.
//! * Expansion repeats until nothing changes (values may refer to others; at most 1000 rounds),
//!   innermost reference first, so `${env:${env:NAME_OF_VAR}}` is rejected like the collector
//!   does (a `$` inside a reference is refused).
//! * `$${…}` is not expanded; after expansion every `$$` becomes `$`. An odd run of `$` before
//!   the first `${` of a string stops expansion of that whole string (the collector's findURI).
//! * Mapping keys are not expanded.

use std::collections::BTreeMap;

use super::{Diagnostics, Value};

/// The schemes celeriac resolves; the collector's `http:`/`https:` are refused by name.
const SCHEMES: [&str; 3] = ["env", "file", "yaml"];

/// Expand every string value of `v` (already merged from all `--config` sources). `originals`
/// receives, per key path, the text a whole-value reference read when it became a number or a
/// boolean: like the collector's ExpandedValue.Original, a string setting gets that text back
/// (`password: ${env:PIN}` with PIN=0123 is "0123", not 123).
pub fn expand(v: Value, d: &mut Diagnostics, originals: &mut BTreeMap<String, String>) -> Value {
    let mut cur = v;
    for _ in 0..1000 {
        let mut changed = false;
        let mut ctx = Ctx {
            d,
            changed: &mut changed,
            originals,
        };
        cur = ctx.value(cur, "");
        if !changed {
            for text in originals.values_mut() {
                *text = text.replace("$$", "$");
            }
            return unescape(cur);
        }
    }
    d.error(
        "",
        "too many recursive expansions of ${…} references (1000)",
    );
    cur
}

struct Ctx<'a> {
    d: &'a mut Diagnostics,
    changed: &'a mut bool,
    originals: &'a mut BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn value(&mut self, v: Value, path: &str) -> Value {
        match v {
            Value::String(s) if s.contains("${") && s.contains('}') => match find_and_expand(&s) {
                Ok(None) => Value::String(s),
                Ok(Some((out, warnings, text))) => {
                    for w in warnings {
                        self.d.warn(path, w);
                    }
                    *self.changed = true;
                    if matches!(out, Value::Number(_) | Value::Bool(_)) {
                        self.originals.insert(path.to_string(), text);
                    }
                    out
                }
                Err(msg) => {
                    self.d.error(path, msg);
                    Value::String(s)
                }
            },
            Value::Sequence(items) => Value::Sequence(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| self.value(x, &format!("{path}[{i}]")))
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
                        let x = self.value(x, &child);
                        (k, x)
                    })
                    .collect(),
            ),
            other => other,
        }
    }
}

/// The collector's findURI: the innermost `${…}` ending at the first `}`; `None` when there is
/// none or it is escaped by an odd number of `$` (which stops expansion of the whole string).
fn find_uri(input: &str) -> Option<(usize, usize)> {
    let mut base = 0;
    loop {
        let s = &input[base..];
        let close = s.find('}')?;
        let open = s[..=close].rfind("${");
        let Some(open) = open else {
            if !s[close + 1..].contains('}') {
                return None;
            }
            base += close + 1;
            continue;
        };
        let dollars = s[..open].bytes().rev().take_while(|&b| b == b'$').count();
        if dollars % 2 == 1 {
            return None;
        }
        return Some((base + open, base + close + 1));
    }
}

/// What one reference yields: its typed value and its raw text (for use inside a string).
struct Retrieved {
    value: Value,
    text: String,
}

/// The expanded value, warnings, and the raw text read.
type Expanded = (Value, Vec<String>, String);

/// Expand the first reference of `s`. `Ok(None)`: nothing to expand.
fn find_and_expand(s: &str) -> Result<Option<Expanded>, String> {
    let Some((a, b)) = find_uri(s) else {
        return Ok(None);
    };
    let mut warnings = Vec::new();
    let r = retrieve(&s[a..b], &mut warnings)?;
    if a == 0 && b == s.len() {
        return Ok(Some((r.value, warnings, r.text)));
    }
    let out = s.replace(&s[a..b], &r.text);
    Ok(Some((Value::String(out.clone()), warnings, out)))
}

/// Resolve one `${scheme:opaque}` (or `${VAR}`, scheme `env`).
fn retrieve(reference: &str, warnings: &mut Vec<String>) -> Result<Retrieved, String> {
    let inner = &reference[2..reference.len() - 1];
    let uri = if inner.contains(':') {
        inner.to_string()
    } else {
        format!("env:{inner}")
    };
    let (scheme, opaque) = split_scheme(&uri).ok_or_else(|| format!("invalid uri: {uri:?}"))?;
    if opaque.contains('$') {
        return Err(format!(
            "the uri \"{uri}\" contains unsupported characters ('$')"
        ));
    }
    match scheme {
        "env" => retrieve_env(opaque, warnings),
        "file" => {
            let text = std::fs::read_to_string(opaque)
                .map_err(|e| format!("unable to read the file {uri}: {e}"))?;
            Ok(from_yaml(text))
        }
        "yaml" => Ok(from_yaml(opaque.to_string())),
        other => Err(format!(
            "scheme \"{other}\" is not supported for uri \"{uri}\" (celeriac resolves {})",
            SCHEMES.join(", ")
        )),
    }
}

/// `scheme:opaque` with the collector's scheme pattern `[A-Za-z][A-Za-z0-9+.-]+`.
pub(super) fn split_scheme(uri: &str) -> Option<(&str, &str)> {
    let (scheme, opaque) = uri.split_once(':')?;
    let mut b = scheme.bytes();
    let first = b.next()?;
    let ok = first.is_ascii_alphabetic()
        && scheme.len() >= 2
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-'));
    ok.then_some((scheme, opaque))
}

fn valid_env_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// envprovider.Retrieve: the default applies only when the variable is unset.
fn retrieve_env(spec: &str, warnings: &mut Vec<String>) -> Result<Retrieved, String> {
    let (name, default) = match spec.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (spec, None),
    };
    if !valid_env_name(name) {
        return Err(format!(
            "environment variable \"{name}\" has invalid name: must match regex ^[a-zA-Z_][a-zA-Z0-9_]*$"
        ));
    }
    match std::env::var_os(name) {
        Some(val) => Ok(from_yaml(val.to_string_lossy().into_owned())),
        None => match default {
            // An empty default is an empty string, not null.
            Some("") => Ok(Retrieved {
                value: Value::String(String::new()),
                text: String::new(),
            }),
            Some(dflt) => Ok(from_yaml(dflt.to_string())),
            None => {
                warnings.push(format!(
                    "configuration references unset environment variable {name}"
                ));
                Ok(from_yaml(String::new()))
            }
        },
    }
}

/// confmap.NewRetrievedFromYAML: YAML-typed, except that a string keeps its raw text and text
/// that is not valid YAML is taken verbatim.
fn from_yaml(text: String) -> Retrieved {
    let value = match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::String(_)) | Err(_) => Value::String(text.clone()),
        Ok(v) => v,
    };
    Retrieved { value, text }
}

/// resolver.escapeDollarSigns: every `$$` in a string becomes `$`.
fn unescape(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains("$$") => Value::String(s.replace("$$", "$")),
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(unescape).collect()),
        Value::Mapping(m) => Value::Mapping(m.into_iter().map(|(k, x)| (k, unescape(x))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> (Value, String) {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut d = Diagnostics::new("t.yaml", yaml);
        let out = expand(v, &mut d, &mut BTreeMap::new());
        (out, d.render())
    }

    fn one(yaml_value: &str) -> (Value, String) {
        let (v, d) = run(&format!("k: {yaml_value}\n"));
        (v.get("k").cloned().unwrap_or(Value::Null), d)
    }

    /// otelcol/command.go sets the default scheme to `env`: `${VAR}` is `${env:VAR}`.
    #[test]
    fn bare_reference_is_env() {
        std::env::set_var("CELERIAC_X1", "abc");
        assert_eq!(one("${CELERIAC_X1}").0, Value::String("abc".into()));
        assert_eq!(one("${env:CELERIAC_X1}").0, Value::String("abc".into()));
    }

    /// envprovider/provider.go: `:-default` only when the variable is unset; set-but-empty
    /// stays empty (null as a whole value); an empty default is an empty string.
    #[test]
    fn env_default_only_when_unset() {
        std::env::remove_var("CELERIAC_UNSET_1");
        assert_eq!(
            one("${env:CELERIAC_UNSET_1:-4317}").0,
            Value::Number(4317.into())
        );
        std::env::set_var("CELERIAC_EMPTY_1", "");
        assert_eq!(one("${env:CELERIAC_EMPTY_1:-x}").0, Value::Null);
        assert_eq!(
            one("\"a${env:CELERIAC_EMPTY_1:-x}b\"").0,
            Value::String("ab".into())
        );
        assert_eq!(one("${env:CELERIAC_UNSET_1:-}").0, Value::String("".into()));
        // Unset, no default: nothing, with a warning (the collector logs one).
        let (v, d) = one("\"a${env:CELERIAC_UNSET_1}b\"");
        assert_eq!(v, Value::String("ab".into()));
        assert!(
            d.contains(
                "warning: configuration references unset environment variable CELERIAC_UNSET_1"
            ),
            "{d}"
        );
    }

    /// envprovider/provider.go + internal/envvar/pattern.go: invalid names are errors.
    #[test]
    fn env_name_validated() {
        let (_, d) = one("${env:1BAD}");
        assert!(
            d.contains("error: environment variable \"1BAD\" has invalid name"),
            "{d}"
        );
        // `${VAR:-x}` without scheme: `VAR` is taken as a scheme (expand.go newLocation), and
        // `_` is not allowed in one; a scheme-like name is an unsupported scheme.
        let (_, d) = one("${CELERIAC_X1:-x}");
        assert!(d.contains("error: invalid uri: \"CELERIAC_X1:-x\""), "{d}");
        let (_, d) = one("${PORT:-x}");
        assert!(d.contains("scheme \"PORT\" is not supported"), "{d}");
    }

    /// expand.go findAndExpandURI + provider.go NewRetrievedFromYAML: a whole-value reference
    /// is typed; inside a string the raw text is used.
    #[test]
    fn whole_value_is_typed_embedded_is_text() {
        std::env::set_var("CELERIAC_PORT_1", "4317");
        std::env::set_var("CELERIAC_BOOL_1", "true");
        std::env::set_var("CELERIAC_QUOTED_1", "\"x\"");
        assert_eq!(one("${env:CELERIAC_PORT_1}").0, Value::Number(4317.into()));
        assert_eq!(one("${env:CELERIAC_BOOL_1}").0, Value::Bool(true));
        // A YAML string keeps its raw text (quotes included), as NewRetrievedFromYAML does.
        assert_eq!(
            one("${env:CELERIAC_QUOTED_1}").0,
            Value::String("\"x\"".into())
        );
        assert_eq!(
            one("localhost:${env:CELERIAC_PORT_1}").0,
            Value::String("localhost:4317".into())
        );
    }

    /// fileprovider/provider.go: `${file:path}` reads YAML; a whole value may be a mapping.
    #[test]
    fn file_provider() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part.yaml");
        std::fs::write(&p, "endpoint: 0.0.0.0:4317\n").unwrap();
        let (v, d) = one(&format!("${{file:{}}}", p.display()));
        assert!(d.is_empty(), "{d}");
        assert_eq!(
            v.get("endpoint"),
            Some(&Value::String("0.0.0.0:4317".into()))
        );
        let t = dir.path().join("token");
        std::fs::write(&t, "s3cret").unwrap();
        assert_eq!(
            one(&format!("\"Bearer ${{file:{}}}\"", t.display())).0,
            Value::String("Bearer s3cret".into())
        );
        let (_, d) = one("${file:/nonexistent/celeriac}");
        assert!(
            d.contains("unable to read the file file:/nonexistent/celeriac"),
            "{d}"
        );
    }

    /// resolver.go escapeDollarSigns + expand.go findURI: `$$` is a literal `$`, `$${…}` is not
    /// expanded, and an escaped first reference leaves the whole string unexpanded.
    #[test]
    fn dollar_escapes() {
        std::env::set_var("CELERIAC_X2", "v");
        assert_eq!(one("\"cost $$5\"").0, Value::String("cost $5".into()));
        assert_eq!(
            one("$${env:CELERIAC_X2}").0,
            Value::String("${env:CELERIAC_X2}".into())
        );
        assert_eq!(one("$$${env:CELERIAC_X2}").0, Value::String("$v".into()));
        assert_eq!(
            one("\"$${env:CELERIAC_X2} ${env:CELERIAC_X2}\"").0,
            Value::String("${env:CELERIAC_X2} ${env:CELERIAC_X2}".into())
        );
        // A lone `$VAR` or an unterminated `${` is left alone.
        assert_eq!(one("$HOME").0, Value::String("$HOME".into()));
        assert_eq!(one("\"${env:A\"").0, Value::String("${env:A".into()));
    }

    /// expand.go expandValueRecursively: values are expanded until stable; several references
    /// in one string; a `$` inside a reference is refused.
    #[test]
    fn recursive_and_nested() {
        std::env::set_var("CELERIAC_INNER_1", "deep");
        std::env::set_var("CELERIAC_OUTER_1", "${env:CELERIAC_INNER_1}");
        assert_eq!(
            one("${env:CELERIAC_OUTER_1}").0,
            Value::String("deep".into())
        );
        assert_eq!(
            one("${env:CELERIAC_INNER_1}-${env:CELERIAC_INNER_1}").0,
            Value::String("deep-deep".into())
        );
        // Nested: the innermost reference first (findURI), then the outer one.
        std::env::set_var("deep", "named");
        assert_eq!(
            one("${env:${env:CELERIAC_INNER_1}}").0,
            Value::String("named".into())
        );
        let (_, d) = one("${env:a$b}");
        assert!(d.contains("unsupported characters ('$')"), "{d}");
        let (_, d) = one("${http://x}");
        assert!(d.contains("scheme \"http\" is not supported"), "{d}");
    }

    /// expand.go ExpandedValue{Value, Original}: a typed whole value keeps its text.
    #[test]
    fn typed_values_keep_their_text() {
        std::env::set_var("CELERIAC_PIN_1", "1230");
        let v: Value = serde_yaml_ng::from_str("a: {pin: \"${env:CELERIAC_PIN_1}\"}").unwrap();
        let mut d = Diagnostics::new("t.yaml", "");
        let mut originals = BTreeMap::new();
        let out = expand(v, &mut d, &mut originals);
        assert_eq!(
            out.get("a").unwrap().get("pin"),
            Some(&Value::Number(1230.into()))
        );
        assert_eq!(originals.get("a.pin").map(String::as_str), Some("1230"));
    }

    /// Keys are not expanded (expand.go expands map values only); sequences are.
    #[test]
    fn keys_untouched_items_expanded() {
        std::env::set_var("CELERIAC_X3", "q");
        let (v, _) = run("\"${env:CELERIAC_X3}\": [\"${env:CELERIAC_X3}\"]\n");
        let seq = v.get("${env:CELERIAC_X3}").unwrap();
        assert_eq!(seq, &Value::Sequence(vec![Value::String("q".into())]));
    }
}
