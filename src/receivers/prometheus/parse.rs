//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text, parsed into metric
//! families.
//!
//! Why not a crate: `prometheus-parse` (the one maintained-looking choice) knows no OpenMetrics,
//! no `_created`, no escapes in `# HELP`, and drops samples it cannot place; the OpenMetrics
//! parsers on crates.io are unmaintained. The format is small and line-based, so this module
//! parses it in one pass over the bytes, with no regex and no allocation per token beyond the
//! strings kept, and is tested against prometheus_client's real output and against garbage.
//!
//! Accepted: `# HELP`, `# TYPE`, `# UNIT`, `# EOF` (OpenMetrics; text after it is an error),
//! other comments ignored; samples `name{l="v",...} value [timestamp]` with `\\`, `\"`, `\n`
//! escapes, values `NaN`, `+Inf`, `-Inf` and Go float syntax; exemplars (` # {...} v`) are
//! skipped. Timestamps are milliseconds in the text format and seconds in OpenMetrics. A sample
//! joins the family whose `# TYPE` it follows when its name is the family's name or the name plus
//! a suffix of that type (`_total`, `_created`, `_bucket`, `_count`, `_sum`, `_gcount`, `_gsum`,
//! `_info`); counters declared with `_total` in the text format also take `<base>_created`.
//! Any other sample starts an untyped family of its own. A malformed line fails the whole scrape
//! (as Prometheus does), with the line number.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "gaugehistogram" => Kind::GaugeHistogram,
            "summary" => Kind::Summary,
            "info" => Kind::Info,
            "stateset" => Kind::StateSet,
            "untyped" | "unknown" => Kind::Unknown,
            _ => return None,
        })
    }

    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total", "_created"],
            Kind::Histogram => &["_bucket", "_count", "_sum", "_created"],
            Kind::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            Kind::Summary => &["_count", "_sum", "_created"],
            Kind::Info => &["_info"],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (`foo_bucket`, `foo_total`, ...).
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the exposition gave one.
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    pub unit: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Go's strconv.ParseFloat as the formats use it.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => return Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let t = s.strip_prefix('+').unwrap_or(s);
    if t.is_empty()
        || !t
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+' | b'_'))
    {
        return None;
    }
    if t.contains('_') {
        return t.replace('_', "").parse().ok();
    }
    t.parse().ok()
}

/// Parse a whole exposition. `openmetrics` selects OpenMetrics rules (timestamps in seconds,
/// `# EOF` required).
pub fn parse(text: &str, openmetrics: bool) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    // Index of the family the next samples may join (the last # TYPE/# HELP seen).
    let mut current: Option<usize> = None;
    let mut eof = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if eof {
            if line.is_empty() {
                continue;
            }
            return err(line_no, "content after # EOF");
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        if let Some(c) = trimmed.strip_prefix('#') {
            let c = c.trim_start_matches([' ', '\t']);
            if c == "EOF" {
                eof = true;
                continue;
            }
            let mut parts = c.splitn(3, [' ', '\t']);
            let kw = parts.next().unwrap_or("");
            if !matches!(kw, "HELP" | "TYPE" | "UNIT") {
                continue; // a plain comment
            }
            let name = parts.next().unwrap_or("");
            let rest = parts.next().unwrap_or("").trim_start_matches([' ', '\t']);
            if name.is_empty()
                || !is_name_start(name.as_bytes()[0])
                || !name.bytes().all(is_name_char)
            {
                return err(line_no, format!("bad metric name {name:?} in # {kw}"));
            }
            let idx = match families.iter().rposition(|f| f.name == name) {
                Some(ix) if current == Some(ix) => ix,
                Some(ix) if families[ix].samples.is_empty() => ix,
                Some(_) if kw == "TYPE" => {
                    return err(line_no, format!("second # TYPE for {name}"));
                }
                _ => {
                    families.push(Family {
                        name: name.to_string(),
                        kind: Kind::Unknown,
                        help: String::new(),
                        unit: String::new(),
                        samples: Vec::new(),
                    });
                    families.len() - 1
                }
            };
            let f = &mut families[idx];
            match kw {
                "HELP" => f.help = unescape_help(rest),
                "UNIT" => f.unit = rest.trim().to_string(),
                _ => {
                    f.kind = Kind::parse(rest.trim()).ok_or_else(|| ParseError {
                        line: line_no,
                        msg: format!("unknown metric type {:?}", rest.trim()),
                    })?;
                }
            }
            current = Some(idx);
            continue;
        }
        let s = sample(trimmed, openmetrics).map_err(|m| ParseError {
            line: line_no,
            msg: m,
        })?;
        let joins = current.filter(|&ix| belongs(&families[ix], &s.name));
        match joins {
            Some(ix) => families[ix].samples.push(s),
            None => {
                // An untyped sample; consecutive samples of one name share a family.
                match families.last_mut() {
                    Some(f) if f.kind == Kind::Unknown && f.name == s.name && current.is_none() => {
                        f.samples.push(s)
                    }
                    _ => {
                        families.push(Family {
                            name: s.name.clone(),
                            kind: Kind::Unknown,
                            help: String::new(),
                            unit: String::new(),
                            samples: vec![s],
                        });
                        current = None;
                    }
                }
            }
        }
    }
    if openmetrics && !eof {
        return err(
            text.split('\n').count(),
            "OpenMetrics exposition without # EOF",
        );
    }
    Ok(families)
}

fn belongs(f: &Family, name: &str) -> bool {
    if name == f.name {
        return true;
    }
    if let Some(suffix) = name.strip_prefix(f.name.as_str()) {
        if f.kind.suffixes().contains(&suffix) {
            return true;
        }
    }
    // Text format counter `foo_total` with `foo_created`.
    f.kind == Kind::Counter
        && f.name
            .strip_suffix("_total")
            .is_some_and(|base| name.strip_prefix(base) == Some("_created"))
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One sample line.
fn sample(line: &str, openmetrics: bool) -> Result<Sample, String> {
    let b = line.as_bytes();
    let mut i = 0;
    if b.is_empty() || !is_name_start(b[0]) {
        return Err(format!("not a sample: {:?}", truncate(line)));
    }
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    let name = line[..i].to_string();
    let mut labels = Vec::new();
    if b.get(i) == Some(&b'{') {
        i += 1;
        loop {
            while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
                i += 1;
            }
            match b.get(i) {
                Some(b'}') => {
                    i += 1;
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let start = i;
            if !b
                .get(i)
                .copied()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            {
                return Err(format!("bad label name in {:?}", truncate(line)));
            }
            while b
                .get(i)
                .copied()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                i += 1;
            }
            let lname = &line[start..i];
            while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
                i += 1;
            }
            if b.get(i) != Some(&b'=') {
                return Err(format!("expected = after label {lname}"));
            }
            i += 1;
            while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
                i += 1;
            }
            if b.get(i) != Some(&b'"') {
                return Err(format!("expected \" to open the value of label {lname}"));
            }
            i += 1;
            let mut value = String::new();
            let mut seg = i;
            loop {
                match b.get(i) {
                    None => return Err(format!("unterminated value of label {lname}")),
                    Some(b'"') => {
                        value.push_str(&line[seg..i]);
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        value.push_str(&line[seg..i]);
                        match b.get(i + 1) {
                            Some(b'n') => value.push('\n'),
                            Some(b'\\') => value.push('\\'),
                            Some(b'"') => value.push('"'),
                            _ => return Err(format!("bad escape in the value of label {lname}")),
                        }
                        i += 2;
                        seg = i;
                    }
                    Some(_) => i += 1,
                }
            }
            if labels.iter().any(|(k, _): &(String, String)| k == lname) {
                return Err(format!("label {lname} given twice"));
            }
            labels.push((lname.to_string(), value));
            while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
                i += 1;
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected , or }} after label {lname}")),
            }
        }
    }
    let rest = &line[i..];
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("expected a value after {name}"));
    }
    // Exemplar (OpenMetrics): everything from " # " on.
    let rest = match rest.find(" # ") {
        Some(x) => &rest[..x],
        None => rest,
    };
    let mut fields = rest.split_ascii_whitespace();
    let v = fields
        .next()
        .ok_or_else(|| format!("no value for {name}"))?;
    let value = parse_value(v).ok_or_else(|| format!("bad value {v:?} for {name}"))?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(t) if openmetrics => {
            let secs = parse_value(t)
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("bad timestamp {t:?}"))?;
            Some((secs * 1000.0).round() as i64)
        }
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("bad timestamp {t:?}"))?,
        ),
    };
    if fields.next().is_some() {
        return Err(format!("unexpected text after the sample of {name}"));
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// prometheus_client 0.26's text output for the evaluation app (counter with _created,
    /// histogram, gauge).
    const CLIENT: &str = r#"# HELP evaluation_tasks_total Evaluations run, by status.
# TYPE evaluation_tasks_total counter
evaluation_tasks_total{status="ok"} 3.0
evaluation_tasks_total{status="error"} 1.0
# HELP evaluation_tasks_created Evaluations run, by status.
# TYPE evaluation_tasks_created gauge
evaluation_tasks_created{status="ok"} 1.7650000001e+09
evaluation_tasks_created{status="error"} 1.7650000002e+09
# HELP evaluation_duration_seconds Time per evaluation.
# TYPE evaluation_duration_seconds histogram
evaluation_duration_seconds_bucket{le="0.01"} 2.0
evaluation_duration_seconds_bucket{le="0.05"} 3.0
evaluation_duration_seconds_bucket{le="+Inf"} 4.0
evaluation_duration_seconds_count 4.0
evaluation_duration_seconds_sum 0.25
# HELP evaluation_duration_seconds_created Time per evaluation.
# TYPE evaluation_duration_seconds_created gauge
evaluation_duration_seconds_created 1.765e+09
# HELP evaluation_queue_depth Steps of the last evaluation.
# TYPE evaluation_queue_depth gauge
evaluation_queue_depth 3.0
"#;

    #[test]
    fn prometheus_client_text() {
        let f = parse(CLIENT, false).unwrap();
        let names: Vec<_> = f.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            [
                ("evaluation_tasks_total", Kind::Counter),
                ("evaluation_tasks_created", Kind::Gauge),
                ("evaluation_duration_seconds", Kind::Histogram),
                ("evaluation_duration_seconds_created", Kind::Gauge),
                ("evaluation_queue_depth", Kind::Gauge),
            ]
        );
        assert_eq!(f[0].samples[1].labels, [("status".into(), "error".into())]);
        assert_eq!(f[2].samples.len(), 5);
        assert_eq!(f[2].samples[2].value, f64::INFINITY.min(4.0));
        assert_eq!(f[0].help, "Evaluations run, by status.");
    }

    #[test]
    fn openmetrics_with_created_exemplars_and_eof() {
        let text = "# TYPE evaluation_tasks counter\n# HELP evaluation_tasks Runs.\nevaluation_tasks_total{status=\"ok\"} 3.0 # {trace_id=\"abc\"} 1.0 1765000000.5\nevaluation_tasks_created{status=\"ok\"} 1765000000.1\n# TYPE x info\nx_info{v=\"1\"} 1\n# EOF\n";
        let f = parse(text, true).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].samples.len(), 2);
        assert_eq!(f[0].samples[1].name, "evaluation_tasks_created");
        assert!(parse("a 1\n", true).is_err(), "no # EOF");
        assert!(parse("# EOF\na 1\n", true).is_err());
        let t = parse("a 1 1765000000.25\n# EOF\n", true).unwrap();
        assert_eq!(t[0].samples[0].timestamp_ms, Some(1_765_000_000_250));
    }

    #[test]
    fn escapes_timestamps_and_special_values() {
        let f = parse(
            "# HELP m a \\\\ b\\nc\nm{a=\"x\\\"y\\\\z\\n\",b=\"\"} NaN 1700000000000\nm{a=\"2\"} -Inf\nn +Inf\n",
            false,
        )
        .unwrap();
        assert_eq!(f[0].help, "a \\ b\nc");
        assert_eq!(f[0].samples[0].labels[0].1, "x\"y\\z\n");
        assert!(f[0].samples[0].value.is_nan());
        assert_eq!(f[0].samples[0].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(f[0].samples[1].value, f64::NEG_INFINITY);
        assert_eq!(f[1].name, "n");
    }

    #[test]
    fn garbage_is_a_line_numbered_error_never_a_panic() {
        for bad in [
            "m{a=\"1\" 2\n",
            "m{a=1} 2\n",
            "m{a=\"1\",a=\"2\"} 2\n",
            "m 1 2 3\n",
            "m abc\n",
            "m\n",
            "{a=\"1\"} 2\n",
            "# TYPE m nonsense\n",
            "m{a=\"\\q\"} 1\n",
            "<html>oops</html>\n",
            "m{a=\"x\n",
        ] {
            let e = parse(bad, false).unwrap_err();
            assert_eq!(e.line, 1, "{bad:?}: {e}");
        }
        // Fuzz-ish: every prefix and many byte mutations of a real page parse or fail cleanly.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for cut in 0..CLIENT.len() {
            if CLIENT.is_char_boundary(cut) {
                let _ = parse(&CLIENT[..cut], false);
            }
        }
        let bytes = CLIENT.as_bytes();
        for _ in 0..3000 {
            let mut m = bytes.to_vec();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % m.len();
                m[at] = (seed >> 32) as u8;
            }
            let _ = parse(&String::from_utf8_lossy(&m), seed % 2 == 0);
        }
    }
}
