//! The one seam between the dashboard and a broker's remote control: [`Remote`] is either the
//! Redis pidbox ([`super::inspect`]) or the AMQP pidbox ([`super::amqp_pidbox`]), chosen by the
//! broker URL's scheme here and nowhere else. Everything the extension asks of workers
//! (inspect rounds, the wakeup heartbeat, queue lengths) goes through it.

use std::time::Duration;

use serde_json::Value as Json;

use super::amqp_pidbox::{AmqpInspectError, AmqpInspector, Replies};
use super::inspect::{Answers, InspectError, Inspector};
use crate::amqp;
use crate::config::DecodeError;
use crate::tls::ClientTlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Redis(#[from] InspectError),
    #[error(transparent)]
    Amqp(#[from] AmqpInspectError),
    #[error("{0}")]
    Unsupported(String),
}

pub enum Remote {
    Redis(Inspector),
    Amqp(Box<AmqpInspector>),
}

/// `true` when `urls` name an AMQP broker (every URL of a failover list must agree).
pub fn is_amqp(urls: &[String]) -> bool {
    urls.first().is_some_and(|u| amqp::is_amqp_url(u))
}

/// Checks an AMQP failover list and its TLS settings (`endpoint`-relative keys).
pub fn amqp_config(
    urls: &[String],
    tls: &ClientTlsConfig,
) -> Result<(Vec<amqp::Endpoint>, amqp::Tls), DecodeError> {
    if let Some(i) = urls.iter().position(|u| !amqp::is_amqp_url(u)) {
        return Err(DecodeError::new(
            format!("endpoint[{i}]"),
            "a failover list cannot mix AMQP and Redis brokers",
        ));
    }
    let eps = amqp::endpoints(urls, "endpoint").map_err(|(k, m)| DecodeError::new(k, m))?;
    let tls = if eps.iter().any(amqp::Endpoint::tls) {
        amqp::Tls::load(tls).map_err(|(k, m)| DecodeError::new(k, m))?
    } else if tls.is_set() {
        return Err(DecodeError::new(
            "tls",
            "TLS settings need an amqps:// endpoint",
        ));
    } else {
        amqp::Tls::default()
    };
    Ok((eps, tls))
}

impl Remote {
    /// The AMQP client for `urls`.
    pub fn amqp(
        urls: &[String],
        tls: &ClientTlsConfig,
        timeout: Duration,
    ) -> Result<Remote, DecodeError> {
        let (eps, tls) = amqp_config(urls, tls)?;
        Ok(Remote::Amqp(Box::new(AmqpInspector::new(
            eps, tls, timeout,
        ))))
    }

    pub fn endpoint(&self) -> String {
        match self {
            Remote::Redis(i) => i.endpoint().to_string(),
            Remote::Amqp(i) => i.endpoint(),
        }
    }

    pub async fn inspect(
        &self,
        methods: &[&str],
        destination: Option<&str>,
        expect: Option<usize>,
    ) -> Result<Answers, RemoteError> {
        Ok(match self {
            Remote::Redis(i) => i.inspect(methods, destination, expect).await?,
            Remote::Amqp(i) => i.inspect(methods, destination, expect).await?,
        })
    }

    /// One command with its arguments to every worker (or `destination`), replies by worker.
    pub async fn broadcast(
        &self,
        method: &str,
        arguments: Json,
        destination: Option<&[String]>,
        limit: Option<usize>,
    ) -> Result<Replies, RemoteError> {
        match self {
            Remote::Amqp(i) => Ok(i.broadcast(method, arguments, destination, limit).await?),
            // The Redis transport offers whole inspect rounds only (until control commands land).
            Remote::Redis(_) => Err(RemoteError::Unsupported(format!(
                "`{method}` with arguments is not available over Redis yet"
            ))),
        }
    }

    pub async fn wakeup(&self) -> Result<(), RemoteError> {
        match self {
            Remote::Redis(i) => i.wakeup().await?,
            Remote::Amqp(i) => i.wakeup().await?,
        }
        Ok(())
    }

    pub async fn queue_lengths(&self, names: &[String]) -> Result<Vec<(String, u64)>, RemoteError> {
        Ok(match self {
            Remote::Redis(i) => i.queue_lengths(names).await?,
            Remote::Amqp(i) => i.queue_lengths(names).await?,
        })
    }

    pub async fn unbind(&self) {
        match self {
            Remote::Redis(i) => i.unbind().await,
            Remote::Amqp(i) => i.unbind().await,
        }
    }
}
