//! AMQP 0-9-1 connections (RabbitMQ), shared by the `celery_amqp` and `amqp_queues` receivers and
//! the `celery_ui` remote control over the AMQP pidbox.
//!
//! This module owns broker URLs as Celery/kombu write them and how a connection is opened: the
//! protocol itself is the `lapin` crate's, driven by the tokio runtime.
//!
//! URLs: `amqp://user:password@host:5672/vhost`, also `pyamqp://` and `librabbitmq://` (kombu's
//! aliases) and `amqps://` for TLS. The vhost is the percent-decoded path after the first `/`,
//! as kombu reads it: `amqp://host//` and `amqp://host/` (or no path) are the default vhost `/`,
//! `amqp://host/%2f` is `/` too, `amqp://host/shop` is `shop`. Credentials default to
//! guest/guest (kombu's default) and are never logged.

use std::time::Duration;

use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::tls::ClientTlsConfig;

/// One broker address.
#[derive(Clone)]
pub struct Endpoint {
    uri: AMQPUri,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The schemes read as AMQP broker URLs.
pub fn is_amqp_url(url: &str) -> bool {
    ["amqp://", "amqps://", "pyamqp://", "librabbitmq://"]
        .iter()
        .any(|s| url.len() >= s.len() && url[..s.len()].eq_ignore_ascii_case(s))
}

impl Endpoint {
    /// Parse a kombu AMQP URL (see the module docs).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "invalid AMQP URL: expected amqp://host[:port]/vhost".to_string())?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "amqp" | "pyamqp" | "librabbitmq" => false,
            "amqps" => true,
            other => {
                return Err(format!(
                    "unsupported scheme `{other}://`: expected amqp:// or amqps://"
                ))
            }
        };
        // kombu: the vhost is everything after the first '/' of the path; lapin's parser takes
        // `//` as the empty vhost, so the path is read here and percent-decoded by lapin.
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i + 1..]),
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (vhost, query) = match path.split_once('?') {
            Some((v, q)) => (v, Some(q)),
            None => (path, None),
        };
        if authority.is_empty() {
            return Err("invalid AMQP URL: no host".into());
        }
        let scheme = if tls { "amqps" } else { "amqp" };
        let encoded_vhost = vhost.replace('/', "%2f");
        let rebuilt = match query {
            Some(q) => format!("{scheme}://{authority}/{encoded_vhost}?{q}"),
            None => format!("{scheme}://{authority}/{encoded_vhost}"),
        };
        let mut uri: AMQPUri = rebuilt
            .parse()
            .map_err(|e: String| format!("invalid AMQP URL: {e}"))?;
        if uri.vhost.is_empty() {
            uri.vhost = "/".into();
        }
        if uri.authority.host.is_empty() {
            return Err("invalid AMQP URL: no host".into());
        }
        Ok(Endpoint { uri })
    }

    /// `amqp[s]://host:port/vhost`, never the credentials.
    pub fn redacted(&self) -> String {
        let a = &self.uri.authority;
        format!(
            "{}://{}:{}/{}",
            if self.tls() { "amqps" } else { "amqp" },
            a.host,
            a.port,
            self.uri.vhost
        )
    }

    /// `host:port`, for the `server.address` of telemetry.
    pub fn address(&self) -> String {
        format!("{}:{}", self.uri.authority.host, self.uri.authority.port)
    }

    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    pub fn tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }
}

/// Parse a failover list of broker URLs; errors name the key (`endpoint` or `endpoint[i]`).
pub fn endpoints(urls: &[String], key: &str) -> Result<Vec<Endpoint>, (String, String)> {
    if urls.is_empty() {
        return Err((key.to_string(), "must name at least one broker URL".into()));
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            let k = if urls.len() == 1 {
                key.to_string()
            } else {
                format!("{key}[{i}]")
            };
            Endpoint::parse(u).map_err(|m| (k, m))
        })
        .collect()
}

/// TLS material for `amqps://` endpoints, read when the component is built.
#[derive(Clone, Default)]
pub struct Tls {
    /// The extra CA bundle (PEM); none: the system roots.
    ca_pem: Option<String>,
    /// Client certificate chain and private key (both PEM).
    identity: Option<(String, Vec<u8>)>,
}

impl Tls {
    /// Reads the files of `cfg`; errors name the key (`tls.ca_file`, …).
    pub fn load(cfg: &ClientTlsConfig) -> Result<Tls, (String, String)> {
        cfg.check()
            .map_err(|(k, m)| (k.to_string(), m.to_string()))?;
        let read = |key: &str, p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| (key.to_string(), format!("cannot read {}: {e}", p.display())))
        };
        let ca_pem = match &cfg.ca_file {
            Some(p) => Some(
                String::from_utf8(read("tls.ca_file", p)?)
                    .map_err(|_| ("tls.ca_file".to_string(), "is not PEM text".to_string()))?,
            ),
            None => None,
        };
        let identity = match (&cfg.cert_file, &cfg.key_file) {
            (Some(c), Some(k)) => {
                let cert = String::from_utf8(read("tls.cert_file", c)?)
                    .map_err(|_| ("tls.cert_file".to_string(), "is not PEM text".to_string()))?;
                Some((cert, read("tls.key_file", k)?))
            }
            _ => None,
        };
        Ok(Tls { ca_pem, identity })
    }

    fn owned(&self) -> lapin::tcp::OwnedTLSConfig {
        lapin::tcp::OwnedTLSConfig {
            identity: self
                .identity
                .as_ref()
                .map(|(pem, key)| lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: pem.as_bytes().to_vec(),
                    key: key.clone(),
                }),
            cert_chain: self.ca_pem.clone(),
        }
    }
}

/// Why a connection could not be opened or was lost.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Lapin(#[from] lapin::Error),
}

/// Open a connection to `ep` (TLS for `amqps://`), bounded by `timeout` as a whole. `name` is
/// shown in RabbitMQ's management UI as the connection name.
pub async fn connect(
    ep: &Endpoint,
    tls: &Tls,
    timeout: Duration,
    name: &str,
) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let fut = Connection::connect_uri_with_config(ep.uri.clone(), props, tls.owned());
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(AmqpError::Timeout(timeout)),
    }
}

/// Runs `setup` (declarations, consumers) on the freshly opened `conn`, bounded by `timeout`;
/// closes the connection when it fails or times out.
pub async fn set_up<T>(
    conn: &Connection,
    timeout: Duration,
    setup: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, AmqpError> {
    match tokio::time::timeout(timeout, setup).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => {
            let _ = conn.close(0, "setup failed").await;
            Err(e.into())
        }
        Err(_) => {
            let _ = conn.close(0, "setup timed out").await;
            Err(AmqpError::Timeout(timeout))
        }
    }
}

/// A queue's `(ready messages, consumers)` from a passive `queue.declare` on `channel` (opened
/// on `conn` when absent or closed); `Ok(None)` when the queue does not exist. RabbitMQ closes
/// the channel on a missing queue, so `channel` is reset then.
pub async fn queue_depth(
    conn: &Connection,
    channel: &mut Option<lapin::Channel>,
    queue: &str,
) -> Result<Option<(u32, u32)>, lapin::Error> {
    use lapin::options::QueueDeclareOptions;
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let ch = match channel {
        Some(c) if c.status().connected() => c,
        _ => channel.insert(conn.create_channel().await?),
    };
    let r = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    match r {
        Ok(q) => Ok(Some((q.message_count(), q.consumer_count()))),
        Err(e) => match e.kind() {
            lapin::ErrorKind::ProtocolError(p)
                if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)) =>
            {
                *channel = None;
                Ok(None)
            }
            _ => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhosts_read_as_kombu_reads_them() {
        let v = |u: &str| Endpoint::parse(u).unwrap().vhost().to_string();
        assert_eq!(v("amqp://guest:guest@localhost:5672//"), "/");
        assert_eq!(v("amqp://localhost:5672/"), "/");
        assert_eq!(v("amqp://localhost"), "/");
        assert_eq!(v("amqp://localhost/%2f"), "/");
        assert_eq!(v("amqp://localhost/shop"), "shop");
        assert_eq!(v("pyamqp://u:p@h:1/a%2Fb?heartbeat=10"), "a/b");
        let ep = Endpoint::parse("amqps://user:s3cret@rabbit:5671/prod").unwrap();
        assert!(ep.tls());
        assert_eq!(ep.redacted(), "amqps://rabbit:5671/prod");
        assert!(!format!("{ep:?}").contains("s3cret"));
        assert_eq!(Endpoint::parse("amqp://h").unwrap().address(), "h:5672");
        assert!(Endpoint::parse("redis://h").is_err());
        assert!(Endpoint::parse("amqp:///x").is_err());
        assert!(is_amqp_url("AMQP://x") && !is_amqp_url("redis://x"));
    }

    #[test]
    fn failover_errors_name_the_element() {
        let e = endpoints(&["amqp://a".into(), "http://b".into()], "endpoint").unwrap_err();
        assert_eq!(e.0, "endpoint[1]");
        assert_eq!(endpoints(&[], "broker").unwrap_err().0, "broker");
    }
}
