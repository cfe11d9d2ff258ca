//! The `prometheus_remote_write` settings (see the [module](super) for the YAML).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{types, types::Secret};
use crate::exporters::prom;
use crate::exporters::retry::{PrometheusDefaults, RetryConfig};
use crate::exporters::sending_queue::StorageConfig;
use crate::tls::ClientTlsConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Secret,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples each shard holds before dropping its oldest.
    pub queue_size: usize,
    /// Shards: concurrent senders.
    pub num_consumers: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: 10_000,
            num_consumers: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    pub endpoint: String,
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    pub headers: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "prom::bool_or_enabled")]
    pub resource_to_telemetry_conversion: bool,
    pub max_samples_per_send: usize,
    #[serde(with = "types::duration")]
    pub stale_after: Duration,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: Option<Secret>,
    pub tls: ClientTlsConfig,
    pub remote_write_queue: QueueConfig,
    /// Where requests wait for the endpoint: memory (default) or files that survive a restart.
    pub sending_queue: StorageConfig,
    pub retry_on_failure: RetryConfig<PrometheusDefaults>,
    /// `namespace_` before every metric name (the collector's `namespace`).
    pub namespace: String,
    /// `_total` on counters (the collector's default, on).
    pub add_metric_suffixes: bool,
    /// The collector's `target_info` series; celeriac does not write it, so only
    /// `enabled: false` is accepted.
    pub target_info: crate::exporters::prometheus::TargetInfo,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            endpoint: "http://127.0.0.1:9090/api/v1/write".into(),
            timeout: Duration::from_secs(5),
            headers: BTreeMap::new(),
            external_labels: BTreeMap::new(),
            resource_to_telemetry_conversion: false,
            max_samples_per_send: 2000,
            stale_after: Duration::from_secs(120),
            basic_auth: None,
            bearer_token: None,
            tls: ClientTlsConfig::default(),
            remote_write_queue: QueueConfig::default(),
            sending_queue: StorageConfig::default(),
            retry_on_failure: RetryConfig::default(),
            namespace: String::new(),
            add_metric_suffixes: true,
            target_info: crate::exporters::prometheus::TargetInfo { enabled: false },
        }
    }
}
