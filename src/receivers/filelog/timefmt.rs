//! Timestamps for the stanza `timestamp` sub-parser: `layout_type` `strptime` (default),
//! `gotime` (Go reference layouts, translated to the same directives) and `epoch` (`s`, `ms`,
//! `us`, `ns`, `s.ms`, `s.us`, `s.ns`). Times without an offset are UTC (`location` may only be
//! `UTC`).
//!
//! strptime directives: `%Y %y %m %d %e %H %I %p %M %S %f %L %z %Z %b %h %B %a %A %j %%`;
//! `%f`/`%L` read 1–9 fraction digits, `%z` reads `Z`, `±hh:mm`, `±hhmm` or `±hh`.

/// One compiled layout.
#[derive(Debug, Clone)]
pub enum TimeParser {
    Strptime(Vec<Tok>),
    Epoch(Epoch),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epoch {
    S,
    Ms,
    Us,
    Ns,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Lit(char),
    Year4,
    Year2,
    Month,
    Day,
    Hour24,
    Hour12,
    AmPm,
    Minute,
    Second,
    Frac,
    Offset,
    ZoneName,
    MonthName,
    WeekdayName,
    DayOfYear,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn compile_strptime(layout: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = layout.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(Tok::Lit(c));
            continue;
        }
        let d = it.next().ok_or("layout ends with %")?;
        out.push(match d {
            'Y' => Tok::Year4,
            'y' => Tok::Year2,
            'm' => Tok::Month,
            'd' | 'e' => Tok::Day,
            'H' => Tok::Hour24,
            'I' => Tok::Hour12,
            'p' => Tok::AmPm,
            'M' => Tok::Minute,
            'S' => Tok::Second,
            'f' | 'L' => Tok::Frac,
            'z' => Tok::Offset,
            'Z' => Tok::ZoneName,
            'b' | 'h' | 'B' => Tok::MonthName,
            'a' | 'A' => Tok::WeekdayName,
            'j' => Tok::DayOfYear,
            '%' => Tok::Lit('%'),
            other => return Err(format!("unsupported strptime directive %{other}")),
        });
    }
    Ok(out)
}

/// Go reference layout → strptime directives.
fn compile_gotime(layout: &str) -> Result<Vec<Tok>, String> {
    const TABLE: &[(&str, &[Tok])] = &[
        ("January", &[Tok::MonthName]),
        ("Monday", &[Tok::WeekdayName]),
        ("Z07:00", &[Tok::Offset]),
        ("-07:00", &[Tok::Offset]),
        ("Z0700", &[Tok::Offset]),
        ("-0700", &[Tok::Offset]),
        ("Z07", &[Tok::Offset]),
        ("-07", &[Tok::Offset]),
        ("2006", &[Tok::Year4]),
        ("Jan", &[Tok::MonthName]),
        ("Mon", &[Tok::WeekdayName]),
        ("MST", &[Tok::ZoneName]),
        ("002", &[Tok::DayOfYear]),
        ("01", &[Tok::Month]),
        ("02", &[Tok::Day]),
        ("_2", &[Tok::Day]),
        ("15", &[Tok::Hour24]),
        ("03", &[Tok::Hour12]),
        ("04", &[Tok::Minute]),
        ("05", &[Tok::Second]),
        ("06", &[Tok::Year2]),
        ("PM", &[Tok::AmPm]),
        ("pm", &[Tok::AmPm]),
    ];
    let mut out = Vec::new();
    let mut s = layout;
    'outer: while !s.is_empty() {
        // Fractional seconds: .000 / .999 / ,000 (any count).
        if let Some(rest) = s.strip_prefix(['.', ',']) {
            let n = rest
                .bytes()
                .take_while(|b| *b == b'0' || *b == b'9')
                .count();
            if n > 0 {
                out.push(Tok::Lit(s.chars().next().unwrap_or('.')));
                out.push(Tok::Frac);
                s = &rest[n..];
                continue;
            }
        }
        for (pat, toks) in TABLE {
            if let Some(rest) = s.strip_prefix(pat) {
                out.extend(toks.iter().cloned());
                s = rest;
                continue 'outer;
            }
        }
        let c = s.chars().next().ok_or("empty")?;
        out.push(Tok::Lit(c));
        s = &s[c.len_utf8()..];
    }
    Ok(out)
}

impl TimeParser {
    pub fn new(
        layout_type: &str,
        layout: Option<&str>,
        location: Option<&str>,
    ) -> Result<TimeParser, String> {
        if let Some(l) = location {
            if !l.eq_ignore_ascii_case("utc") {
                return Err(format!(
                    "location {l:?} is not supported (times without an offset are UTC)"
                ));
            }
        }
        let layout = layout.ok_or("layout is required")?;
        match layout_type {
            "strptime" => Ok(TimeParser::Strptime(compile_strptime(layout)?)),
            "gotime" => Ok(TimeParser::Strptime(compile_gotime(layout)?)),
            "epoch" => Ok(TimeParser::Epoch(match layout {
                "s" | "s.ms" | "s.us" | "s.ns" => Epoch::S,
                "ms" => Epoch::Ms,
                "us" => Epoch::Us,
                "ns" => Epoch::Ns,
                other => return Err(format!("unknown epoch layout {other:?}")),
            })),
            other => Err(format!(
                "unknown layout_type {other:?} (strptime, gotime, epoch)"
            )),
        }
    }

    /// A number (JSON field) under an epoch layout.
    pub fn parse_number(&self, v: f64) -> Result<u64, String> {
        match self {
            TimeParser::Epoch(e) => epoch(*e, v),
            TimeParser::Strptime(_) => self.parse(&v.to_string()),
        }
    }

    /// Unix nanoseconds.
    pub fn parse(&self, s: &str) -> Result<u64, String> {
        match self {
            TimeParser::Epoch(e) => epoch_text(*e, s.trim()),
            TimeParser::Strptime(toks) => strptime(toks, s),
        }
    }
}

fn epoch(e: Epoch, v: f64) -> Result<u64, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{v} is not a time"));
    }
    let ns = match e {
        Epoch::S => v * 1e9,
        Epoch::Ms => v * 1e6,
        Epoch::Us => v * 1e3,
        Epoch::Ns => v,
    };
    Ok(ns as u64)
}

/// Exact decimal epoch text (`1700000000.123456`), without float rounding.
fn epoch_text(e: Epoch, t: &str) -> Result<u64, String> {
    let bad = || format!("{t:?} is not a number");
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let scale: u32 = match e {
        Epoch::S => 9,
        Epoch::Ms => 6,
        Epoch::Us => 3,
        Epoch::Ns => 0,
    };
    let i: u64 = int.parse().map_err(|_| bad())?;
    let mut f = 0u64;
    for (k, b) in frac.bytes().take(scale as usize).enumerate() {
        f += u64::from(b - b'0') * 10u64.pow(scale - 1 - k as u32);
    }
    i.checked_mul(10u64.pow(scale))
        .and_then(|x| x.checked_add(f))
        .ok_or_else(bad)
}

fn digits(s: &[u8], i: &mut usize, min: usize, max: usize) -> Result<i64, String> {
    let start = *i;
    // %e pads with a space.
    while *i < s.len() && s[*i] == b' ' && *i - start < max - 1 {
        *i += 1;
    }
    let ds = *i;
    while *i < s.len() && s[*i].is_ascii_digit() && *i - ds < max {
        *i += 1;
    }
    if *i - ds < min {
        return Err(format!("expected a number at position {start}"));
    }
    std::str::from_utf8(&s[ds..*i])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bad number at position {start}"))
}

fn alpha<'a>(s: &'a [u8], i: &mut usize) -> &'a [u8] {
    let start = *i;
    while *i < s.len() && s[*i].is_ascii_alphabetic() {
        *i += 1;
    }
    &s[start..*i]
}

fn strptime(toks: &[Tok], text: &str) -> Result<u64, String> {
    let s = text.trim().as_bytes();
    let mut i = 0;
    let (mut y, mut mo, mut d, mut h, mut mi, mut sec) = (1970i64, 1i64, 1i64, 0i64, 0i64, 0i64);
    let mut frac_ns = 0i64;
    let mut off = 0i64;
    let mut pm: Option<bool> = None;
    let mut yday: Option<i64> = None;
    for t in toks {
        match t {
            Tok::Lit(c) => {
                let mut buf = [0u8; 4];
                let lit = c.encode_utf8(&mut buf).as_bytes();
                if s.get(i..i + lit.len()) != Some(lit) {
                    return Err(format!("expected {c:?} at position {i} of {text:?}"));
                }
                i += lit.len();
            }
            Tok::Year4 => y = digits(s, &mut i, 4, 4)?,
            Tok::Year2 => y = 2000 + digits(s, &mut i, 2, 2)?,
            Tok::Month => mo = digits(s, &mut i, 1, 2)?,
            Tok::Day => d = digits(s, &mut i, 1, 2)?,
            Tok::Hour24 | Tok::Hour12 => h = digits(s, &mut i, 1, 2)?,
            Tok::Minute => mi = digits(s, &mut i, 1, 2)?,
            Tok::Second => sec = digits(s, &mut i, 1, 2)?,
            Tok::DayOfYear => yday = Some(digits(s, &mut i, 1, 3)?),
            Tok::Frac => {
                let start = i;
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
                let n = i - start;
                if n == 0 {
                    return Err(format!("expected fractional seconds at position {start}"));
                }
                let take = n.min(9);
                let v: i64 = std::str::from_utf8(&s[start..start + take])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or("bad fraction")?;
                frac_ns = v * 10i64.pow((9 - take) as u32);
            }
            Tok::Offset => match s.get(i) {
                Some(b'Z') | Some(b'z') => i += 1,
                Some(b'+') | Some(b'-') => {
                    let sign = if s[i] == b'-' { -1 } else { 1 };
                    i += 1;
                    let hh = digits(s, &mut i, 2, 2)?;
                    if s.get(i) == Some(&b':') {
                        i += 1;
                    }
                    let mm = if s.get(i).is_some_and(|b| b.is_ascii_digit()) {
                        digits(s, &mut i, 2, 2)?
                    } else {
                        0
                    };
                    off = sign * (hh * 3600 + mm * 60);
                }
                _ => return Err(format!("expected a UTC offset at position {i}")),
            },
            Tok::ZoneName => {
                let z = alpha(s, &mut i);
                if !(z.eq_ignore_ascii_case(b"UTC") || z.eq_ignore_ascii_case(b"GMT") || z == b"Z")
                {
                    return Err(format!(
                        "time zone {:?} is not supported (UTC, GMT)",
                        String::from_utf8_lossy(z)
                    ));
                }
            }
            Tok::MonthName => {
                let name = alpha(s, &mut i).to_ascii_lowercase();
                mo = MONTHS
                    .iter()
                    .position(|m| name.len() >= 3 && name.starts_with(m.as_bytes()))
                    .ok_or("unknown month name")? as i64
                    + 1;
            }
            Tok::WeekdayName => {
                if alpha(s, &mut i).len() < 3 {
                    return Err("expected a weekday name".into());
                }
            }
            Tok::AmPm => {
                let a = alpha(s, &mut i).to_ascii_lowercase();
                pm = Some(match a.as_slice() {
                    b"am" => false,
                    b"pm" => true,
                    _ => return Err("expected AM or PM".into()),
                });
            }
        }
    }
    if i != s.len() {
        return Err(format!("unexpected text after position {i} of {text:?}"));
    }
    if let Some(p) = pm {
        h %= 12;
        if p {
            h += 12;
        }
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(format!("{text:?} is not a valid time"));
    }
    let days = match yday {
        Some(n) => days_from_civil(y, 1, 1) + n - 1,
        None => days_from_civil(y, mo, d),
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - off;
    if secs < 0 {
        return Err(format!("{text:?} is before 1970"));
    }
    Ok(secs as u64 * 1_000_000_000 + frac_ns as u64)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: &str, layout: &str, text: &str) -> Result<u64, String> {
        TimeParser::new(kind, Some(layout), None)?.parse(text)
    }

    #[test]
    fn layouts() {
        let want = 1_700_000_000_123_456_000u64; // 2023-11-14T22:13:20.123456Z
        assert_eq!(
            p(
                "strptime",
                "%Y-%m-%dT%H:%M:%S.%fZ",
                "2023-11-14T22:13:20.123456Z"
            ),
            Ok(want)
        );
        assert_eq!(
            p(
                "strptime",
                "%Y-%m-%dT%H:%M:%S.%f%z",
                "2023-11-14T23:13:20.123456+01:00"
            ),
            Ok(want)
        );
        assert_eq!(
            p(
                "strptime",
                "%Y-%m-%d %H:%M:%S,%L",
                "2023-11-14 22:13:20,123456"
            ),
            Ok(want)
        );
        assert_eq!(
            p(
                "gotime",
                "2006-01-02T15:04:05.999999999Z07:00",
                "2023-11-14T22:13:20.123456Z"
            ),
            Ok(want)
        );
        assert_eq!(
            p(
                "strptime",
                "%d/%b/%Y:%I:%M:%S %p %z",
                "14/Nov/2023:10:13:20 PM +0000"
            ),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            p("epoch", "s", "1700000000.123456"),
            Ok(1_700_000_000_123_456_000)
        );
        assert_eq!(
            p("epoch", "ms", "1700000000123"),
            Ok(1_700_000_000_123_000_000)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for t in [
            "",
            "x",
            "2023-13-01T00:00:00.1Z",
            "2023-11-14T22:13:20.Z",
            "２０２３",
        ] {
            assert!(p("strptime", "%Y-%m-%dT%H:%M:%S.%fZ", t).is_err(), "{t}");
        }
        assert!(TimeParser::new("strptime", Some("%Q"), None).is_err());
        assert!(TimeParser::new("nope", Some("x"), None).is_err());
        assert!(TimeParser::new("epoch", Some("s"), Some("Europe/Paris")).is_err());
    }
}
