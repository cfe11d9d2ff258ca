//! The one seam between the dashboard and a broker's remote control: [`Remote`] is either the
//! Redis pidbox ([`super::inspect`]) or the AMQP pidbox ([`super::amqp_pidbox`]), chosen by the
//! broker URL's scheme here and nowhere else. Everything the extension asks of workers
//! (inspect rounds, the wakeup heartbeat, queue lengths) goes through it, and it implements
//! [`Pidbox`], the control API's seam (commands and task publishing over both brokers).

use std::time::Duration;

use serde_json::Value as Json;

use super::amqp_pidbox::{AmqpInspectError, AmqpInspector};
use super::control::{BoxFut, Pidbox};
use super::inspect::{Answers, InspectError, Inspector, ReplyWait};
use crate::amqp;
use crate::config::DecodeError;
use crate::tls::ClientTlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Redis(#[from] InspectError),
    #[error(transparent)]
    Amqp(#[from] AmqpInspectError),
}

pub enum Remote {
    Redis(Box<Inspector>),
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

impl Pidbox for Remote {
    fn broadcast<'a>(
        &'a self,
        command: &'a str,
        arguments: Json,
        destination: Option<&'a [String]>,
        reply: Option<ReplyWait>,
    ) -> BoxFut<'a, Result<Vec<Json>, RemoteError>> {
        match self {
            Remote::Redis(i) => Pidbox::broadcast(&**i, command, arguments, destination, reply),
            Remote::Amqp(i) => {
                Box::pin(
                    async move { Ok(i.broadcast(command, arguments, destination, reply).await?) },
                )
            }
        }
    }

    fn publish_task<'a>(
        &'a self,
        queue: &'a str,
        priority: u8,
        message: &'a Json,
    ) -> BoxFut<'a, Result<(), RemoteError>> {
        match self {
            Remote::Redis(i) => Pidbox::publish_task(&**i, queue, priority, message),
            Remote::Amqp(i) => {
                Box::pin(async move { Ok(i.publish_task(queue, priority, message).await?) })
            }
        }
    }
}
