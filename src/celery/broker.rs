//! What a broker receiver (`celery_redis`, `celery_amqp`) offers the rest of the agent about the
//! broker it reads: its addresses and how to reach them. `celery_ui` inspects and controls the
//! workers of that same broker through this, without reading the receiver's settings.

use crate::redis_broker::OwnedSettings;
use crate::tls::ClientTlsConfig;

/// A Celery app's broker as its event receiver reaches it (a [`crate::component::Host`]
/// shared state).
#[derive(Debug, Clone)]
pub enum BrokerSettings {
    /// Redis (one node, a failover list or Sentinel) with kombu's `global_keyprefix`.
    Redis {
        settings: OwnedSettings,
        global_keyprefix: String,
    },
    /// RabbitMQ: the AMQP URLs (a failover list) and their TLS settings.
    Amqp {
        endpoint: Vec<String>,
        tls: ClientTlsConfig,
    },
}
