//! Time helpers shared by every component: the wall clock as Unix seconds, Celery's ISO 8601
//! timestamps (`eta`, `expires`, `date_done`) read as Unix seconds, and RFC 3339 text written
//! from Unix time. One place for these so components do not borrow them from each other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock as Unix seconds (0 if the clock is before 1970).
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `2026-11-25T11:42:43.123456+00:00` (or `Z`, or no offset = UTC) → Unix seconds.
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (time, offset) = match rest.find(['+', '-', 'Z']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut t = time.splitn(3, ':');
    let hh: f64 = t.next()?.parse().ok()?;
    let mm: f64 = t.next()?.parse().ok()?;
    let ss: f64 = t.next().unwrap_or("0").parse().ok()?;
    let off_secs = match offset {
        "" | "Z" => 0.0,
        o => {
            let sign = if o.starts_with('-') { -1.0 } else { 1.0 };
            let body = &o[1..];
            let (oh, om) = body
                .split_once(':')
                .unwrap_or((body.get(..2)?, body.get(2..).unwrap_or("0")));
            sign * (oh.parse::<f64>().ok()? * 3600.0 + om.parse::<f64>().unwrap_or(0.0) * 60.0)
        }
    };
    // days_from_civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss - off_secs)
}

/// `2026-11-25T12:00:00.123456Z` from Unix seconds (microsecond precision; negative = 1970).
pub fn rfc3339_secs(secs: f64) -> String {
    rfc3339_unix_nanos((secs.max(0.0) * 1e9) as u64)
}

/// `2026-11-25T12:00:00.123456Z` from Unix nanoseconds (microsecond precision), as OTLP
/// timestamps are written in log lines.
pub fn rfc3339_unix_nanos(nanos: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(rfc3339_secs(0.0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_secs(-5.0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_secs(1_795_606_961.5), "2026-11-25T11:42:41.500000Z");
        assert_eq!(
            parse_iso8601(&rfc3339_secs(1_795_606_961.5)),
            Some(1_795_606_961.5)
        );
        assert!(now_secs() > 1.7e9);
    }

    #[test]
    fn formats_unix_nanos() {
        assert_eq!(rfc3339_unix_nanos(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_unix_nanos(1_795_606_961_369_700_700),
            "2026-11-25T11:42:41.369700Z"
        );
        assert_eq!(
            rfc3339_unix_nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_unix_nanos(1_795_606_961_500_000_000),
            rfc3339_secs(1_795_606_961.5)
        );
    }
}
