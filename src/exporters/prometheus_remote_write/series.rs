//! The series table: OTLP metrics → samples per shard, each series' samples in timestamp order,
//! staleness markers for series gone quiet. No I/O.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;

use crate::exporters::prom::{for_each_series, Converter, ResourceLabels};
use crate::prompb::{Label, Sample};

/// Prometheus' staleness marker (`value.StaleNaN`), a signalling NaN used for nothing else.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// One sample waiting in a shard queue, with the labels of its series.
pub type Queued = (Arc<[Label]>, Sample);

struct SeriesState {
    labels: Arc<[Label]>,
    /// Timestamp (ms) of the last sample taken for this series.
    last_ts: i64,
    last_seen: Instant,
    shard: usize,
}

/// What the table dropped or skipped, cumulative.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Points of unsupported types or temporalities.
    pub unsupported: u64,
    /// Points of metrics whose name sanitizes to nothing.
    pub invalid: u64,
    /// Samples older than the last one taken for their series.
    pub out_of_order: u64,
    /// Staleness markers produced.
    pub stale_markers: u64,
}

/// Every series seen recently: assigns each sample to its shard, keeps each series' samples in
/// timestamp order, and produces staleness markers.
pub struct SeriesTable {
    converter: Converter,
    series: HashMap<Arc<[Label]>, SeriesState>,
    pub(super) shards: usize,
    stale_after: Duration,
    pub stats: TableStats,
}

/// The shard of a series: a fixed hash of its labels, so the same on every run.
pub fn shard_of(labels: &[Label], shards: usize) -> usize {
    // `DefaultHasher::new()` has fixed keys: the same shard on every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in labels {
        l.name.hash(&mut h);
        l.value.hash(&mut h);
    }
    (h.finish() % shards.max(1) as u64) as usize
}

/// `true` for Prometheus' staleness marker.
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

impl SeriesTable {
    /// The collector's `namespace` and `add_metric_suffixes`.
    pub fn with_names(mut self, namespace: &str, add_metric_suffixes: bool) -> Self {
        self.converter = self.converter.with_names(namespace, add_metric_suffixes);
        self
    }

    pub fn new(
        external_labels: &BTreeMap<String, String>,
        resource_to_telemetry_conversion: bool,
        shards: usize,
        stale_after: Duration,
    ) -> Self {
        let resource = if resource_to_telemetry_conversion {
            ResourceLabels::All
        } else {
            ResourceLabels::JobInstance
        };
        SeriesTable {
            converter: Converter::new(external_labels, resource),
            series: HashMap::new(),
            shards: shards.max(1),
            stale_after,
            stats: TableStats::default(),
        }
    }

    /// Series currently tracked.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Convert one batch; samples are appended to `out[shard]` (`out.len()` = shards). `now_ms`
    /// stamps points without a timestamp and staleness markers.
    pub fn apply(
        &mut self,
        batch: &[ResourceMetrics],
        now_ms: i64,
        now: Instant,
        out: &mut [Vec<Queued>],
    ) {
        let mut stats = self.stats;
        let mut name = String::new();
        let conv = self.converter.convert(batch, |p| {
            let ts = match p.time_unix_nano {
                0 => now_ms,
                t => (t / 1_000_000) as i64,
            };
            for_each_series(&p.sample, |suffix, extra, v| {
                name.clear();
                name.push_str(p.meta.name);
                name.push_str(suffix);
                let mut labels = Vec::with_capacity(p.labels.len() + 2);
                labels.push(Label {
                    name: "__name__".into(),
                    value: name.clone(),
                });
                labels.extend(p.labels.iter().map(|(k, v)| Label {
                    name: k.clone(),
                    value: v.clone(),
                }));
                if let Some((k, v)) = extra {
                    labels.push(Label {
                        name: k.into(),
                        value: v.into(),
                    });
                }
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                labels.dedup_by(|a, b| a.name == b.name);
                if p.no_recorded_value {
                    if let Some(s) = self.series.remove(&labels[..]) {
                        stats.stale_markers += 1;
                        let ts = ts.max(s.last_ts + 1);
                        out[s.shard].push((s.labels, stale_sample(ts)));
                    }
                    return;
                }
                // A real NaN must never look like a staleness marker.
                let v = if is_stale_marker(v) { f64::NAN } else { v };
                let sample = Sample {
                    value: v,
                    timestamp: ts,
                };
                match self.series.get_mut(&labels[..]) {
                    Some(s) => {
                        s.last_seen = now;
                        if ts <= s.last_ts {
                            if ts < s.last_ts {
                                stats.out_of_order += 1;
                            }
                            return;
                        }
                        s.last_ts = ts;
                        out[s.shard].push((s.labels.clone(), sample));
                    }
                    None => {
                        let shard = shard_of(&labels, self.shards);
                        let labels: Arc<[Label]> = labels.into();
                        out[shard].push((labels.clone(), sample));
                        self.series.insert(
                            labels.clone(),
                            SeriesState {
                                labels,
                                last_ts: ts,
                                last_seen: now,
                                shard,
                            },
                        );
                    }
                }
            });
        });
        stats.unsupported += conv.unsupported;
        stats.invalid += conv.invalid;
        self.stats = stats;
        self.expire(now_ms, now, out);
    }

    /// Staleness markers for series not seen for `stale_after`; they are forgotten.
    pub fn expire(&mut self, now_ms: i64, now: Instant, out: &mut [Vec<Queued>]) {
        let stale_after = self.stale_after;
        let mut markers = 0;
        self.series.retain(|_, s| {
            if now.saturating_duration_since(s.last_seen) < stale_after {
                return true;
            }
            markers += 1;
            let ts = now_ms.max(s.last_ts.saturating_add(1));
            out[s.shard].push((s.labels.clone(), stale_sample(ts)));
            false
        });
        self.stats.stale_markers += markers;
    }
}

fn stale_sample(timestamp: i64) -> Sample {
    Sample {
        value: f64::from_bits(STALE_NAN_BITS),
        timestamp,
    }
}
