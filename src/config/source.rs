//! Where a config comes from: `--config` URIs resolved and merged as the OpenTelemetry
//! Collector's confmap resolver does (confmap/resolver.go, confmap/provider/*, otelcol/flags.go).
//!
//! * A URI without a scheme (or with a Windows drive letter) is a file; `file:PATH`,
//!   `env:VAR` (the whole config in a variable) and `yaml:TEXT` are the other schemes.
//! * Every retrieved document must be a mapping (empty is fine). Keys containing `::` are
//!   paths (`exporters::debug::verbosity: basic`), split into nested mappings.
//! * Documents merge left to right: a mapping merges key by key into a mapping, any other value
//!   (lists and null included) replaces what was there (koanf `maps.Merge`, the collector's
//!   default; lists are not appended).
//! * `--set key.path=value` is the URI `yaml:key::path: value` placed after every `--config`.
//!
//! `${…}` references are expanded afterwards, over the merged result (see [`super::expand`]).

use super::{Diagnostics, Value};

/// The `yaml:` URI the collector makes of `--set k.a=v` (otelcol/flags.go).
pub fn set_to_uri(set: &str) -> Result<String, String> {
    let (k, v) = set
        .split_once('=')
        .ok_or_else(|| format!("--set {set}: missing equal sign"))?;
    Ok(format!(
        "yaml:{}: {}",
        k.trim().replace('.', "::"),
        v.trim()
    ))
}

/// Retrieve every URI (recording each text for `file:line:col`) and merge them in order.
/// `None` when one cannot be read or parsed (the reason is in `d`).
pub fn resolve(uris: &[String], d: &mut Diagnostics) -> Option<Value> {
    let mut merged = Value::Mapping(Default::default());
    let mut ok = true;
    for uri in uris {
        match retrieve(uri, d) {
            Some(v) => merge(&mut merged, v),
            None => ok = false,
        }
    }
    ok.then_some(merged)
}

fn retrieve(uri: &str, d: &mut Diagnostics) -> Option<Value> {
    let drive_letter = uri.len() >= 2
        && uri.as_bytes()[0].is_ascii_alphabetic()
        && uri.as_bytes()[1] == b':'
        && (uri.len() == 2 || matches!(uri.as_bytes()[2], b'\\' | b'/'));
    let (scheme, opaque) = if drive_letter || !uri.contains(':') {
        ("file", uri)
    } else {
        match super::expand::split_scheme(uri) {
            Some(x) => x,
            None => {
                d.add_source(uri, "");
                d.error("", format!("invalid config URI {uri:?}"));
                return None;
            }
        }
    };
    let (name, text) = match scheme {
        "file" => match std::fs::read_to_string(opaque) {
            Ok(t) => (opaque.to_string(), t),
            Err(e) => {
                d.add_source(opaque, "");
                d.error("", format!("cannot read the config file: {e}"));
                return None;
            }
        },
        "env" => {
            match std::env::var(opaque) {
                Ok(t) => (uri.to_string(), t),
                Err(_) => {
                    d.add_source(uri, "");
                    d.warn("", format!("environment variable {opaque} is not set; it adds nothing to the config"));
                    (uri.to_string(), String::new())
                }
            }
        }
        "yaml" => (uri.to_string(), opaque.to_string()),
        other => {
            d.add_source(uri, "");
            d.error(
                "",
                format!("unsupported scheme {other:?} on config URI {uri:?}: use a path, file:, env: or yaml:"),
            );
            return None;
        }
    };
    d.add_source(&name, &text);
    let v = super::parse_yaml(&text, d)?;
    match v {
        Value::Null => Some(Value::Mapping(Default::default())),
        Value::Mapping(_) => Some(unflatten(v)),
        _ => {
            d.error(
                "",
                "the config must be a mapping with `receivers`, `exporters` and `service`",
            );
            None
        }
    }
}

/// Split `a::b::c` keys into nested mappings, at every level.
fn unflatten(v: Value) -> Value {
    let Value::Mapping(m) = v else {
        return match v {
            Value::Sequence(items) => Value::Sequence(items.into_iter().map(unflatten).collect()),
            other => other,
        };
    };
    let mut out = Value::Mapping(Default::default());
    for (k, x) in m {
        let x = unflatten(x);
        let nested = match k.as_str() {
            Some(key) if key.contains("::") => key
                .split("::")
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .fold(x, |acc, part| {
                    let mut one = serde_yaml_ng::Mapping::new();
                    one.insert(Value::String(part.to_string()), acc);
                    Value::Mapping(one)
                }),
            _ => {
                let mut one = serde_yaml_ng::Mapping::new();
                one.insert(k, x);
                Value::Mapping(one)
            }
        };
        merge(&mut out, nested);
    }
    out
}

/// koanf `maps.Merge(src, dest)`: mappings merge recursively, anything else replaces.
pub fn merge(dest: &mut Value, src: Value) {
    match (dest, src) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(existing @ Value::Mapping(_)) if matches!(v, Value::Mapping(_)) => {
                        merge(existing, v)
                    }
                    Some(existing) => *existing = v,
                    None => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (dest, src) => *dest = src,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    /// confmap/internal merge (koanf maps.Merge): maps join, scalars and lists are replaced,
    /// a later null replaces a mapping.
    #[test]
    fn merge_rules() {
        let mut a = y("a: {x: 1, y: [1, 2]}\nb: {c: 1}\nkeep: 1\n");
        merge(&mut a, y("a: {y: [3], z: 2}\nb: ~\n"));
        assert_eq!(a, y("a: {x: 1, y: [3], z: 2}\nb: ~\nkeep: 1\n"));
    }

    /// confmap.NewFromStringMap with KeyDelimiter `::`; yamlprovider's own example.
    #[test]
    fn yaml_uri_paths_unflatten() {
        let mut d = Diagnostics::empty();
        let v = resolve(
            &["yaml:exporters::debug::verbosity: basic".to_string()],
            &mut d,
        )
        .unwrap();
        assert_eq!(v, y("exporters: {debug: {verbosity: basic}}"));
        // Names with a `/` stay one key.
        let v = resolve(
            &["yaml:exporters::otlp_http/foo::timeout: 2s".to_string()],
            &mut d,
        )
        .unwrap();
        assert_eq!(v, y("exporters: {otlp_http/foo: {timeout: 2s}}"));
    }

    /// otelcol/flags.go: `--set a.b=c` is `yaml:a::b: c`, after the `--config`s.
    #[test]
    fn set_flag() {
        assert_eq!(
            set_to_uri("processors.batch.timeout=2s").unwrap(),
            "yaml:processors::batch::timeout: 2s"
        );
        assert_eq!(set_to_uri(" a.b = x=y ").unwrap(), "yaml:a::b: x=y");
        assert!(set_to_uri("nothing").is_err());
    }

    /// resolver.go: a URI without scheme is a file; env: holds a whole document; unknown
    /// schemes are refused; later sources win.
    #[test]
    fn schemes_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "receivers: {otlp: {protocols: {grpc: ~}}}\nk: file\n").unwrap();
        std::env::set_var("CELERIAC_T_WHOLE", "k: env\nextra: 1\n");
        let mut d = Diagnostics::empty();
        let v = resolve(
            &[
                f.display().to_string(),
                "env:CELERIAC_T_WHOLE".to_string(),
                format!("file:{}", f.display()),
            ],
            &mut d,
        )
        .unwrap();
        assert_eq!(v.get("k"), Some(&Value::String("file".into())));
        assert_eq!(v.get("extra"), Some(&Value::Number(1.into())));
        let mut d = Diagnostics::empty();
        assert!(resolve(&["http://example.com/c.yaml".to_string()], &mut d).is_none());
        assert!(
            d.render().contains("unsupported scheme \"http\""),
            "{}",
            d.render()
        );
        let mut d = Diagnostics::empty();
        assert!(resolve(&["yaml:- a\n- b".to_string()], &mut d).is_none());
    }
}
