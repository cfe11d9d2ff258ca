//! `memory_limiter` processor: keeps the agent's resident memory under `limit_mib` by refusing
//! new data at the entry of its pipeline while memory is high, as the Collector's does.
//!
//! Every `check_interval` it reads the process' resident set size (`VmRSS` in
//! `/proc/self/status`, one small read). Above the soft limit (`limit_mib − spike_limit_mib`)
//! it closes its pipeline's [`Admission`] gate: the OTLP receiver answers gRPC `UNAVAILABLE` /
//! HTTP 503 with `Retry-After` (senders retry later) and counts the refusal with
//! `reason="memory_limit"`, `celery_redis` counts the events it cannot hand over in
//! `celeriac_celery_events_dropped_total{reason="memory_limit"}`, and a connector feeding the
//! pipeline has its items counted in `celeriac_connector_refused_items_total`. Every refused
//! item is also counted in `celeriac_memory_limiter_refused_items_total`. The gate opens again
//! at the first check below the soft limit. Data already in the pipeline passes through
//! untouched: the gate only stops more from coming in.
//!
//! `spike_limit_mib` is the head room for what can arrive between two checks: make it larger
//! than the most the receivers can take in during one `check_interval`.
//!
//! ```yaml
//! processors:
//!   memory_limiter:
//!     check_interval: 1s     # > 0
//!     limit_mib: 512         # hard limit
//!     spike_limit_mib: 128   # default 20 % of limit_mib; soft limit = limit − spike
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::component::{Admission, BoxRun, Context, Input, Output, Processor};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, DecodeError, Value};
use crate::signal::SignalKind;
use crate::telemetry::Counter;

pub const REGISTRATION: Registration = Registration {
    type_name: "memory_limiter",
    factory: Factory::Processor {
        signals: &SignalKind::ALL,
        build,
    },
    defaults: crate::component::defaults::<MemoryLimiterConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    #[serde(with = "types::duration", default = "default_interval")]
    pub check_interval: Duration,
    /// Required; 0 stands for "not set".
    #[serde(default)]
    pub limit_mib: u64,
    pub spike_limit_mib: Option<u64>,
    /// The collector's alternative to `limit_mib`: a share of the memory available (the
    /// cgroup's limit when there is one, else the machine's). `limit_mib` wins when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_percentage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spike_limit_percentage: Option<u64>,
}

/// Memory available to this process in MiB: the cgroup v2 limit, else MemTotal.
fn total_memory_mib() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = || {
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb << 10)
        })
    };
    cgroup.or_else(meminfo).map(|bytes| bytes >> 20)
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// What `celeriac components` shows. `limit_mib` has no default (a config must set it):
/// 512 is an example.
impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: default_interval(),
            limit_mib: 512,
            spike_limit_mib: None,
            limit_percentage: None,
            spike_limit_percentage: None,
        }
    }
}

impl MemoryLimiterConfig {
    /// `(soft, hard)` limits in bytes.
    pub fn limits(&self) -> (u64, u64) {
        let hard = self.limit_mib << 20;
        let spike = self.spike_limit_mib.unwrap_or(self.limit_mib / 5) << 20;
        (hard.saturating_sub(spike), hard)
    }
}

fn build(v: &Value) -> BuildResult<dyn Processor> {
    if matches!(v, Value::Null) {
        return Err(DecodeError::new("limit_mib", "limit_mib is required"));
    }
    let mut cfg: MemoryLimiterConfig = config::decode(v)?;
    for (key, p) in [
        ("limit_percentage", cfg.limit_percentage),
        ("spike_limit_percentage", cfg.spike_limit_percentage),
    ] {
        if p.is_some_and(|p| p == 0 || p > 100) {
            return Err(DecodeError::new(key, "must be between 1 and 100"));
        }
    }
    if cfg.limit_mib == 0 {
        if let Some(pct) = cfg.limit_percentage {
            let total = total_memory_mib().ok_or_else(|| {
                DecodeError::new(
                    "limit_percentage",
                    "cannot read the memory size (cgroup memory.max, /proc/meminfo); set limit_mib",
                )
            })?;
            cfg.limit_mib = total * pct / 100;
            if cfg.spike_limit_mib.is_none() {
                cfg.spike_limit_mib = cfg.spike_limit_percentage.map(|s| total * s / 100);
            }
        }
    }
    if cfg.check_interval.is_zero() {
        return Err(DecodeError::new("check_interval", "must be greater than 0"));
    }
    if cfg.limit_mib == 0 {
        return Err(DecodeError::new(
            "limit_mib",
            "limit_mib (or limit_percentage) is required and must be greater than 0",
        ));
    }
    if cfg.spike_limit_mib.is_some_and(|s| s >= cfg.limit_mib) {
        return Err(DecodeError::new(
            "spike_limit_mib",
            "spike_limit_mib must be less than limit_mib",
        ));
    }
    // The gate's counter is bound to the component id when the processor runs.
    let refused = Counter::default();
    Ok(Box::new(MemoryLimiter {
        cfg,
        admission: Admission::new(refused.clone()),
        refused,
    }))
}

pub struct MemoryLimiter {
    cfg: MemoryLimiterConfig,
    admission: Admission,
    refused: Counter,
}

/// The resident set size of this process in bytes, from `/proc/self/status`.
pub fn resident_bytes() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_vm_rss(&status).ok_or_else(|| std::io::Error::other("no VmRSS in /proc/self/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Hysteresis-free decision: refuse above the soft limit, admit at or below it.
fn should_refuse(rss: u64, soft: u64) -> bool {
    rss > soft
}

impl Processor for MemoryLimiter {
    fn admission(&self) -> Option<Admission> {
        Some(self.admission.clone())
    }

    /// Batches pass through untouched, in whatever form.
    fn takes_encoded(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, ctx: Context, input: Input, out: Output) -> BoxRun {
        Box::pin(async move {
            let t = &ctx.telemetry;
            let label = [("component", &*ctx.id)];
            let refused_total = t.counter(
                "celeriac_memory_limiter_refused_items_total",
                "Items refused at a pipeline's entry because memory was above the soft limit.",
                &label,
            );
            let rss_gauge = t.gauge(
                "celeriac_memory_limiter_rss_bytes",
                "Resident memory of the agent at the memory_limiter's last check.",
                &label,
            );
            let refusing_gauge = t.gauge(
                "celeriac_memory_limiter_refusing",
                "1 while the memory_limiter refuses data.",
                &label,
            );
            let (soft, hard) = self.cfg.limits();
            tracing::info!(component = %ctx.id, soft_mib = soft >> 20, hard_mib = hard >> 20, "Memory limiter on.");
            let admission = self.admission.clone();
            let gate_counter = self.refused.clone();
            let interval = self.cfg.check_interval;
            let id = ctx.id.clone();
            let checker = tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut reported = 0;
                let mut warned = false;
                loop {
                    tick.tick().await;
                    let total = gate_counter.get();
                    refused_total.add(total - reported);
                    reported = total;
                    let rss = match resident_bytes() {
                        Ok(r) => r,
                        Err(e) => {
                            if !warned {
                                tracing::warn!(component = %id, error = %e, "Cannot read the agent's memory use; not limiting.");
                                warned = true;
                            }
                            continue;
                        }
                    };
                    rss_gauge.set(rss as i64);
                    let refuse = should_refuse(rss, soft);
                    if refuse != admission.is_refusing() {
                        if refuse {
                            tracing::warn!(component = %id, rss_mib = rss >> 20, soft_mib = soft >> 20, hard_mib = hard >> 20, "Memory above the soft limit: refusing data.");
                        } else {
                            tracing::info!(component = %id, rss_mib = rss >> 20, "Memory back under the soft limit: accepting data.");
                        }
                        admission.set_refusing(refuse);
                        refusing_gauge.set(refuse as i64);
                    }
                    if rss > hard {
                        tracing::warn!(component = %id, rss_mib = rss >> 20, hard_mib = hard >> 20, "Memory above the hard limit.");
                    }
                }
            });
            while let Some(batch) = input.recv().await {
                if out.send(batch).await.is_err() {
                    break;
                }
            }
            checker.abort();
            self.admission.set_refusing(false);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::{GatedSender, SendError};
    use crate::signal::Signal;
    use crate::telemetry::Telemetry;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    fn cfg(yaml: &str) -> Result<Box<dyn Processor>, DecodeError> {
        build(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    /// memorylimiterprocessor (internal/memorylimiter/config.go): percentages of the memory
    /// available; `limit_mib` wins when both are set.
    #[test]
    fn percentages_of_total_memory() {
        let total = total_memory_mib().expect("memory size readable on Linux");
        let v: Value = serde_yaml_ng::from_str(
            "check_interval: 5s\nlimit_percentage: 50\nspike_limit_percentage: 10",
        )
        .unwrap();
        assert!(build(&v).is_ok());
        let mut cfg: MemoryLimiterConfig = config::decode(&v).unwrap();
        cfg.limit_mib = total * 50 / 100;
        cfg.spike_limit_mib = Some(total * 10 / 100);
        assert_eq!(cfg.limits().1, (total * 50 / 100) << 20);
        let bad: Value = serde_yaml_ng::from_str("limit_percentage: 0").unwrap();
        assert_eq!(build(&bad).err().unwrap().path, "limit_percentage");
        let bad: Value = serde_yaml_ng::from_str("limit_percentage: 101").unwrap();
        assert!(build(&bad).is_err());
    }

    #[test]
    fn config_and_limits() {
        assert_eq!(cfg("null").err().unwrap().path, "limit_mib");
        assert_eq!(cfg("check_interval: 1s").err().unwrap().path, "limit_mib");
        assert_eq!(
            cfg("{limit_mib: 100, spike_limit_mib: 100}")
                .err()
                .unwrap()
                .path,
            "spike_limit_mib"
        );
        assert_eq!(
            cfg("{limit_mib: 100, check_interval: 0s}")
                .err()
                .unwrap()
                .path,
            "check_interval"
        );
        assert!(cfg("{limit_mib: 100}").unwrap().admission().is_some());
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: 100,
            spike_limit_mib: None,
            limit_percentage: None,
            spike_limit_percentage: None,
        };
        assert_eq!(c.limits(), (80 << 20, 100 << 20));
        let c = MemoryLimiterConfig {
            spike_limit_mib: Some(30),
            ..c
        };
        assert_eq!(c.limits(), (70 << 20, 100 << 20));
        assert!(should_refuse(71 << 20, 70 << 20));
        assert!(!should_refuse(70 << 20, 70 << 20));
    }

    #[test]
    fn reads_rss() {
        let s = "Name:\tceleriac\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(s), Some(2 << 20));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let rss = resident_bytes().unwrap();
        assert!(rss > 1 << 20, "{rss}");
    }

    fn events(n: usize) -> Signal {
        Signal::Celery(Arc::new(vec![Default::default(); n]))
    }

    /// A limit far below any real RSS: the gate closes at the first check, the producer's
    /// `try_send` is refused and counted, `send` skips the pipeline; data already inside passes.
    #[tokio::test]
    async fn refuses_at_the_entry_above_the_soft_limit_and_counts() {
        let p = cfg("{limit_mib: 1, spike_limit_mib: 0, check_interval: 10ms}").unwrap();
        let gate = p.admission().unwrap();
        let telemetry = Telemetry::new();
        let (in_tx, in_rx) = async_channel::bounded(8);
        let (out_tx, out_rx) = async_channel::bounded(8);
        let producer = Output::gated(
            vec![(
                SignalKind::Celery,
                vec![GatedSender {
                    tx: in_tx.clone(),
                    gates: vec![gate.clone()],
                    latency: None,
                    encoded: false,
                }],
            )],
            |_| (Counter::default(), Counter::default()),
        );
        // Before the first check the gate is open.
        assert_eq!(producer.try_send(events(2)), Ok(()));
        let ctx = Context {
            id: "processor/memory_limiter@celery".into(),
            shutdown: CancellationToken::new(),
            telemetry: telemetry.clone(),
            ready: Default::default(),
        };
        let out = Output::new(
            vec![(SignalKind::Celery, vec![out_tx])],
            Counter::default(),
            Counter::default(),
        );
        let h = tokio::spawn(p.run(ctx, Input::new(in_rx, Counter::default()), out));
        assert_eq!(out_rx.recv().await.unwrap().item_count(), 2);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !gate.is_refusing() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert!(producer.refusing(SignalKind::Celery));
        assert_eq!(producer.try_send(events(3)), Err(SendError::Refused));
        assert_eq!(producer.send(events(4)).await, Ok(()));
        assert!(out_rx.is_empty());
        let counted = telemetry.counter(
            "celeriac_memory_limiter_refused_items_total",
            "",
            &[("component", "processor/memory_limiter@celery")],
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while counted.get() < 7 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(counted.get(), 7);
        drop(producer);
        drop(in_tx);
        h.await.unwrap().unwrap();
        assert!(
            !gate.is_refusing(),
            "the gate opens when the pipeline stops"
        );
    }
}
