//! `GET /metrics`: Flower's six metrics in the Prometheus text format, as Flower's
//! `prometheus_client` writes them (label order, `_created` series, float spelling).
//!
//! The values are kept by the connector's view ([`FlowerMetrics`]); this module only renders.

use std::fmt::Write;

use crate::connectors::celery_correlate::view::{FlowerMetrics, Sample};

/// Python's `repr(float)` as prometheus_client's `floatToGoString` writes it (Prometheus reads
/// any spelling; this keeps `le` label values identical to Flower's).
pub fn go_float(v: f64) -> String {
    if v == f64::INFINITY {
        return "+Inf".into();
    }
    if v == f64::NEG_INFINITY {
        return "-Inf".into();
    }
    if v.is_nan() {
        return "NaN".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e16 {
        let s = format!("{v:.1}");
        // Go switches to exponents for 7+ integer digits, and so does prometheus_client.
        let dot = s.find('.').unwrap_or(s.len());
        if v > 0.0 && dot > 6 {
            let digits = s[..dot].trim_end_matches('0');
            let mantissa = if digits.len() > 1 {
                format!("{}.{}", &digits[..1], &digits[1..])
            } else {
                digits.to_string()
            };
            return format!("{mantissa}e+0{}", dot - 1);
        }
        return s;
    }
    format!("{v}")
}

/// A label value escaped for the text format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn header(out: &mut String, name: &str, help: &str, ty: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

fn samples<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    ty: &str,
    rows: impl Iterator<Item = (Vec<(&'a str, &'a str)>, Sample)> + Clone,
) {
    header(out, name, help, ty);
    for (l, s) in rows.clone() {
        let _ = writeln!(out, "{name}{} {}", labels(&l), go_float(s.value));
    }
    if ty == "counter" {
        let created = format!("{}_created", name.trim_end_matches("_total"));
        header(out, &created, help, "gauge");
        for (l, s) in rows {
            let _ = writeln!(out, "{created}{} {}", labels(&l), go_float(s.created));
        }
    }
}

/// Flower's metrics, in the order Flower registers them.
pub fn render_flower(m: &FlowerMetrics, out: &mut String) {
    samples(
        out,
        "flower_events_total",
        "Number of events",
        "counter",
        m.events
            .iter()
            .map(|((w, ty, t), s)| (vec![("worker", &**w), ("type", &**ty), ("task", &**t)], *s)),
    );
    let name = "flower_task_runtime_seconds";
    header(out, name, "Task runtime", "histogram");
    for ((w, t), h) in &m.runtime {
        let mut cumulative = 0u64;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c;
            let le = m.buckets.get(i).copied().unwrap_or(f64::INFINITY);
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                labels(&[("worker", w), ("task", t), ("le", &go_float(le))]),
                go_float(cumulative as f64)
            );
        }
        let l = labels(&[("worker", w), ("task", t)]);
        let _ = writeln!(out, "{name}_count{l} {}", go_float(cumulative as f64));
        let _ = writeln!(out, "{name}_sum{l} {}", go_float(h.sum));
    }
    header(out, &format!("{name}_created"), "Task runtime", "gauge");
    for ((w, t), h) in &m.runtime {
        let l = labels(&[("worker", w), ("task", t)]);
        let _ = writeln!(out, "{name}_created{l} {}", go_float(h.created));
    }
    samples(
        out,
        "flower_task_prefetch_time_seconds",
        "The time the task spent waiting at the celery worker to be executed.",
        "gauge",
        m.prefetch_time
            .iter()
            .map(|((w, t), s)| (vec![("worker", &**w), ("task", &**t)], *s)),
    );
    samples(
        out,
        "flower_worker_prefetched_tasks",
        "Number of tasks of given type prefetched at a worker",
        "gauge",
        m.prefetched
            .iter()
            .map(|((w, t), s)| (vec![("worker", &**w), ("task", &**t)], *s)),
    );
    samples(
        out,
        "flower_worker_online",
        "Worker online status",
        "gauge",
        m.online.iter().map(|(w, s)| (vec![("worker", &**w)], *s)),
    );
    samples(
        out,
        "flower_worker_number_of_currently_executing_tasks",
        "Number of tasks currently executing at a worker",
        "gauge",
        m.executing
            .iter()
            .map(|(w, s)| (vec![("worker", &**w)], *s)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::celery::event::{CeleryEvent, EventKind, TaskFields, WorkerFields};
    use crate::connectors::celery_correlate::view::tests_support::task_event;
    use crate::connectors::celery_correlate::view::View;

    fn task(kind: &str, id: &str, ts: f64, f: impl FnOnce(&mut TaskFields)) -> CeleryEvent {
        task_event(kind, id, "celery@w1", ts, f)
    }

    fn worker(kind: &str, active: Option<u64>) -> CeleryEvent {
        CeleryEvent {
            kind: EventKind::from_type(kind),
            type_name: kind.into(),
            hostname: "celery@w1".into(),
            timestamp: 1.0,
            worker: Some(WorkerFields {
                active,
                freq: Some(2.0),
                ..WorkerFields::default()
            }),
            ..CeleryEvent::default()
        }
    }

    fn value(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn flowers_rules() {
        let v = View::new(100);
        v.enable();
        v.apply(
            &[
                worker("worker-online", None),
                worker("worker-heartbeat", Some(3)),
                task("task-received", "a", 10.0, |t| {
                    t.name = Some("t.add".into())
                }),
                task("task-received", "b", 10.0, |t| {
                    t.name = Some("t.add".into())
                }),
                // An ETA task: neither prefetched nor timed.
                task("task-received", "e", 10.0, |t| {
                    t.name = Some("t.add".into());
                    t.eta = Some("2030-01-01T00:00:00".into());
                }),
                task("task-started", "a", 12.5, |_| {}),
                task("task-started", "e", 13.0, |_| {}),
                task("task-succeeded", "a", 13.0, |t| t.runtime = Some(0.3)),
                task("task-progress", "b", 13.0, |_| {}),
            ],
            100.0,
        );
        let mut out = String::new();
        v.read(|s| render_flower(s.flower_metrics(), &mut out));
        let ev = |ty: &str| {
            value(
                &out,
                &format!(
                    "flower_events_total{{worker=\"celery@w1\",type=\"{ty}\",task=\"t.add\"}}"
                ),
            )
        };
        assert_eq!(ev("task-received"), Some(3.0));
        assert_eq!(ev("task-started"), Some(2.0));
        assert_eq!(ev("task-succeeded"), Some(1.0));
        // Custom task events count too, with the task's name.
        assert_eq!(ev("task-progress"), Some(1.0));
        let wt = "{worker=\"celery@w1\",task=\"t.add\"}";
        assert_eq!(
            value(&out, &format!("flower_worker_prefetched_tasks{wt}")),
            Some(1.0)
        );
        // Set to started − received on start, back to 0 on success.
        assert_eq!(
            value(&out, &format!("flower_task_prefetch_time_seconds{wt}")),
            Some(0.0)
        );
        assert_eq!(
            value(
                &out,
                "flower_task_runtime_seconds_bucket{worker=\"celery@w1\",task=\"t.add\",le=\"0.25\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &out,
                "flower_task_runtime_seconds_bucket{worker=\"celery@w1\",task=\"t.add\",le=\"0.5\"}"
            ),
            Some(1.0)
        );
        assert!(out.contains("le=\"1.0\"") && out.contains("le=\"+Inf\""));
        assert_eq!(
            value(&out, &format!("flower_task_runtime_seconds_count{wt}")),
            Some(1.0)
        );
        assert!(out.contains("# TYPE flower_events_created gauge"));
        assert_eq!(
            value(&out, "flower_worker_online{worker=\"celery@w1\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &out,
                "flower_worker_number_of_currently_executing_tasks{worker=\"celery@w1\"}"
            ),
            Some(3.0)
        );
        // The prefetch time between start and success.
        v.apply(
            &[
                task("task-received", "c", 20.0, |t| {
                    t.name = Some("t.add".into())
                }),
                task("task-started", "c", 21.5, |_| {}),
            ],
            100.0,
        );
        let mut out = String::new();
        v.read(|s| render_flower(s.flower_metrics(), &mut out));
        assert_eq!(
            value(&out, &format!("flower_task_prefetch_time_seconds{wt}")),
            Some(1.5)
        );
        v.apply(&[worker("worker-offline", None)], 101.0);
        let mut out = String::new();
        v.read(|s| render_flower(s.flower_metrics(), &mut out));
        assert_eq!(
            value(&out, "flower_worker_online{worker=\"celery@w1\"}"),
            Some(0.0)
        );
        // Celery clears a worker's heartbeats on `worker-offline`: purged at the next scrape.
        assert_eq!(v.purge_offline_flower_metrics(60.0, 101.5, &[]), 1);
        let mut out = String::new();
        v.read(|s| render_flower(s.flower_metrics(), &mut out));
        assert!(!out.contains("celery@w1"), "{out}");
        // A worker that went silent: kept while alive (2 × freq) and for `threshold` after its
        // last heartbeat, then purged.
        v.apply(&[worker("worker-heartbeat", Some(0))], 300.0);
        assert_eq!(v.purge_offline_flower_metrics(60.0, 303.0, &[]), 0);
        assert_eq!(v.purge_offline_flower_metrics(60.0, 350.0, &[]), 0);
        assert_eq!(v.purge_offline_flower_metrics(60.0, 361.0, &[]), 1);
    }

    #[test]
    fn custom_buckets_and_floats() {
        let v = View::new(10);
        v.enable();
        v.set_flower_buckets(vec![1.0, 0.5, 60.0]);
        v.apply(
            &[task("task-succeeded", "a", 1.0, |t| {
                t.name = Some("x".into());
                t.runtime = Some(30.0);
            })],
            1.0,
        );
        let mut out = String::new();
        v.read(|s| render_flower(s.flower_metrics(), &mut out));
        let les: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("flower_task_runtime_seconds_bucket"))
            .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
            .collect();
        assert_eq!(les, ["0.5", "1.0", "60.0", "+Inf"]);
        assert_eq!(go_float(1_700_000_000.0), "1.7e+09");
        assert_eq!(go_float(0.005), "0.005");
        assert_eq!(go_float(3.0), "3.0");
        assert_eq!(go_float(123456.0), "123456.0");
    }
}
