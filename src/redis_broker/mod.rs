//! How celeriac reaches a Redis broker, shared by the `celery_redis` and `redis_queues`
//! receivers and the `celery_ui` extension: the broker's `endpoint` as Celery writes it
//! (`redis://`, `rediss://`, a failover list, or `sentinel://` with `master_name`), the address
//! of its current master ([`Broker::locate`], [`sentinel`]), and the RESP wire format of
//! celeriac's own clients ([`resp`]).

pub mod resp;
pub mod sentinel;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::config::types::Secret;
use crate::config::DecodeError;
use crate::tls::{ClientTlsConfig, Connector};
pub use sentinel::{Sentinels, Switch};

/// A data node's address and credentials, parsed from a `redis://` or `rediss://` URL or
/// named by a sentinel.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `rediss://`: TLS.
    pub tls: bool,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl Endpoint {
    /// Parse `redis[s]://[user[:password]@]host[:port][/db]`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        use redis::IntoConnectionInfo;
        let info = url.into_connection_info().map_err(|e| {
            format!(
                "invalid Redis URL: {}",
                e.detail().unwrap_or("cannot parse")
            )
        })?;
        let (host, port, tls) = match info.addr() {
            redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p, false),
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } => (host.clone(), *port, true),
            redis::ConnectionAddr::TcpTls { .. } => return Err(
                "rediss:// with #insecure is not supported: trust the server's CA with tls.ca_file"
                    .into(),
            ),
            _ => return Err(
                "only redis://, rediss:// and sentinel:// URLs are supported (not unix sockets)"
                    .into(),
            ),
        };
        let r = info.redis_settings();
        Ok(Endpoint {
            host,
            port,
            tls,
            db: r.db(),
            username: r.username().map(str::to_string),
            password: r.password().map(str::to_string),
        })
    }

    /// `redis://host:port/db`, never the credentials.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}{}:{}/{}",
            if self.tls { "rediss" } else { "redis" },
            if self.password.is_some() { "***@" } else { "" },
            self.host,
            self.port,
            self.db
        )
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A `redis` crate client for this node (the `redis_queues` and `celery_ui` connections).
    fn client(&self, certs: &TlsFiles) -> redis::RedisResult<redis::Client> {
        let addr = if self.tls {
            redis::ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut settings = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            settings = settings.set_username(u.clone());
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p.clone());
        }
        let info =
            redis::IntoConnectionInfo::into_connection_info(addr)?.set_redis_settings(settings);
        if self.tls {
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: certs.client.clone(),
                    root_cert: certs.root.clone(),
                },
            )
        } else {
            redis::Client::open(info)
        }
    }
}

/// The broker settings every Redis component takes (kombu's names).
pub struct Settings<'a> {
    /// `redis://…`, `rediss://…` (one, or a failover list), or `sentinel://…` (one string with
    /// `;` between sentinels, or a list).
    pub endpoint: &'a [String],
    /// TLS of the data nodes: for `rediss://`, and with `sentinel://` (kombu's `broker_use_ssl`).
    pub tls: &'a ClientTlsConfig,
    /// kombu's `master_name` transport option; required with `sentinel://`.
    pub master_name: Option<&'a str>,
    /// The sentinels' own password (kombu's `sentinel_kwargs: {password}`), not the data nodes'.
    pub sentinel_password: Option<&'a Secret>,
    /// TLS to the sentinels (kombu's `sentinel_kwargs: {ssl…}`).
    pub sentinel_tls: &'a ClientTlsConfig,
}

/// [`Settings`] owned, for components that pass them on (e.g. `celery_ui` takes its broker
/// from the `celery_redis` receiver's settings).
#[derive(Debug, Clone, Default)]
pub struct OwnedSettings {
    pub endpoint: Vec<String>,
    pub tls: ClientTlsConfig,
    pub master_name: Option<String>,
    pub sentinel_password: Option<Secret>,
    pub sentinel_tls: ClientTlsConfig,
}

impl OwnedSettings {
    pub fn broker(&self) -> Result<Broker, DecodeError> {
        Broker::new(&Settings {
            endpoint: &self.endpoint,
            tls: &self.tls,
            master_name: self.master_name.as_deref(),
            sentinel_password: self.sentinel_password.as_ref(),
            sentinel_tls: &self.sentinel_tls,
        })
    }
}

/// The certificate files of `tls`, read once, for `redis` crate clients.
#[derive(Clone, Default)]
struct TlsFiles {
    root: Option<Vec<u8>>,
    client: Option<redis::ClientTlsConfig>,
}

/// One broker: where it is and how to reach it.
pub struct Broker {
    addrs: Addrs,
    db: i64,
    /// TLS of the data nodes, for celeriac's own clients (pub/sub).
    tls: Option<Connector>,
    /// The same, for `redis` crate clients.
    files: TlsFiles,
}

enum Addrs {
    /// A failover list, tried in order.
    Fixed(Vec<Endpoint>),
    Sentinel(Sentinels),
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Sentinel(#[from] sentinel::SentinelError),
    #[error("broker {endpoint}: {source}")]
    Redis {
        endpoint: String,
        source: redis::RedisError,
    },
    #[error("broker {endpoint}: connect, TLS and AUTH not done within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("broker {endpoint} says it is a {role}, not the master; re-resolving")]
    NotMaster { endpoint: String, role: String },
}

fn read_file(key: &str, path: &Option<std::path::PathBuf>) -> Result<Option<Vec<u8>>, DecodeError> {
    path.as_ref()
        .map(|p| {
            std::fs::read(p)
                .map_err(|e| DecodeError::new(key, format!("cannot read {}: {e}", p.display())))
        })
        .transpose()
}

fn connector(tls: &ClientTlsConfig, prefix: &str) -> Result<Connector, DecodeError> {
    let cfg = tls.client_config(&[]).map_err(|e| {
        let key = e.key().replacen("tls", prefix, 1);
        DecodeError::new(key, e.to_string())
    })?;
    Ok(Connector::new(cfg))
}

impl Broker {
    /// Checks the settings and reads the certificates (so a bad file fails `validate`). Errors
    /// name the key (`endpoint`, `endpoint[1]`, `master_name`, `tls.ca_file`…).
    pub fn new(s: &Settings) -> Result<Broker, DecodeError> {
        if s.endpoint.is_empty() {
            return Err(DecodeError::new(
                "endpoint",
                "must name at least one broker URL",
            ));
        }
        let key = |i: usize| {
            if s.endpoint.len() == 1 {
                "endpoint".to_string()
            } else {
                format!("endpoint[{i}]")
            }
        };
        let sentinel = s.endpoint.iter().any(|u| u.starts_with("sentinel://"));
        s.tls.check().map_err(|(k, m)| DecodeError::new(k, m))?;
        let (addrs, db) = if sentinel {
            let mut nodes = Vec::new();
            let mut node_auth: Option<(Option<String>, Option<String>)> = None;
            let mut db: Option<i64> = None;
            for (i, entry) in s.endpoint.iter().enumerate() {
                for url in entry.split(';').filter(|u| !u.trim().is_empty()) {
                    let p =
                        sentinel::parse_url(url.trim()).map_err(|m| DecodeError::new(key(i), m))?;
                    if p.username.is_some() || p.password.is_some() {
                        node_auth.get_or_insert((p.username, p.password));
                    }
                    if let Some(d) = p.db {
                        if db.is_some_and(|x| x != d) {
                            return Err(DecodeError::new(
                                key(i),
                                "the sentinel URLs name different db numbers",
                            ));
                        }
                        db = Some(d);
                    }
                    nodes.push((p.host, p.port));
                }
            }
            let Some(master) = s.master_name.filter(|m| !m.is_empty()) else {
                return Err(DecodeError::new(
                    "master_name",
                    "is required with sentinel:// (kombu's `master_name` transport option)",
                ));
            };
            let sentinel_tls = if s.sentinel_tls.is_set() {
                Some(connector(s.sentinel_tls, "sentinel_tls")?)
            } else {
                None
            };
            let (username, password) = node_auth.unwrap_or_default();
            let db = db.unwrap_or(0);
            (
                Addrs::Sentinel(Sentinels::new(
                    nodes,
                    master.to_string(),
                    s.sentinel_password.map(|p| p.expose().to_string()),
                    sentinel_tls,
                    Endpoint {
                        host: String::new(),
                        port: 0,
                        // kombu's broker_use_ssl: data nodes over TLS.
                        tls: s.tls.is_set(),
                        db,
                        username,
                        password,
                    },
                )),
                db,
            )
        } else {
            if s.master_name.is_some() || s.sentinel_password.is_some() || s.sentinel_tls.is_set() {
                let k = if s.master_name.is_some() {
                    "master_name"
                } else if s.sentinel_password.is_some() {
                    "sentinel_password"
                } else {
                    "sentinel_tls"
                };
                return Err(DecodeError::new(k, "needs a sentinel:// endpoint"));
            }
            let endpoints = s
                .endpoint
                .iter()
                .enumerate()
                .map(|(i, u)| Endpoint::parse(u).map_err(|m| DecodeError::new(key(i), m)))
                .collect::<Result<Vec<_>, _>>()?;
            // kombu puts the db in channel and key names: every broker of a list must use one.
            let db = endpoints[0].db;
            if endpoints.iter().any(|e| e.db != db) {
                return Err(DecodeError::new(
                    "endpoint",
                    "all brokers of the list must use the same db number",
                ));
            }
            if !endpoints.iter().any(|e| e.tls) && s.tls.is_set() {
                return Err(DecodeError::new(
                    "tls",
                    "TLS settings need a rediss:// or sentinel:// endpoint",
                ));
            }
            (Addrs::Fixed(endpoints), db)
        };
        let files = TlsFiles {
            root: read_file("tls.ca_file", &s.tls.ca_file)?,
            client: match (
                read_file("tls.cert_file", &s.tls.cert_file)?,
                read_file("tls.key_file", &s.tls.key_file)?,
            ) {
                (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
                _ => None,
            },
        };
        let node_tls = match &addrs {
            Addrs::Fixed(e) => e.iter().any(|e| e.tls),
            Addrs::Sentinel(_) => s.tls.is_set(),
        };
        let tls = if node_tls {
            Some(connector(s.tls, "tls")?)
        } else {
            None
        };
        Ok(Broker {
            addrs,
            db,
            tls,
            files,
        })
    }

    /// The db number (kombu's virtual host) of every node.
    pub fn db(&self) -> i64 {
        self.db
    }

    /// TLS of the data nodes, for celeriac's own connections.
    pub fn connector(&self) -> Option<&Connector> {
        self.tls.as_ref()
    }

    /// The sentinels, when the broker is found through them.
    pub fn sentinels(&self) -> Option<&Sentinels> {
        match &self.addrs {
            Addrs::Sentinel(s) => Some(s),
            Addrs::Fixed(_) => None,
        }
    }

    /// For logs: the first address, or the sentinels and master name. No credentials.
    pub fn describe(&self) -> String {
        match &self.addrs {
            Addrs::Fixed(e) => e[0].redacted(),
            Addrs::Sentinel(s) => s.describe(),
        }
    }

    /// Addresses in a failover list (1 with Sentinel: the sentinels choose).
    pub fn choices(&self) -> usize {
        match &self.addrs {
            Addrs::Fixed(e) => e.len(),
            Addrs::Sentinel(_) => 1,
        }
    }

    /// A `redis` crate client for the first address of a fixed (not `sentinel://`) broker, with
    /// its redacted name: for components that keep one connection of their own (the leader
    /// lock, `celery_ui`'s result backend). `None` for a Sentinel broker.
    pub fn first_client(&self) -> Option<Result<(redis::Client, String), redis::RedisError>> {
        match &self.addrs {
            Addrs::Fixed(e) => Some(e[0].client(&self.files).map(|c| (c, e[0].redacted()))),
            Addrs::Sentinel(_) => None,
        }
    }

    /// The node to use for attempt `n`: the `n`th of a failover list (round robin), or the
    /// master the sentinels name now, verified with `ROLE`.
    pub async fn locate(&self, n: usize, timeout: Duration) -> Result<Endpoint, BrokerError> {
        match &self.addrs {
            Addrs::Fixed(e) => Ok(e[n % e.len()].clone()),
            Addrs::Sentinel(s) => Ok(s.master(timeout, self.tls.as_ref()).await?),
        }
    }

    /// A `redis` crate connection to a node that works, trying a failover list from its
    /// `start`th entry (the index that worked is returned with the connection), or the master
    /// the sentinels name, refused when it answers `ROLE` as a replica. `timeout` bounds each
    /// node's connect, TLS, AUTH and SELECT together.
    pub async fn multiplexed(
        &self,
        start: usize,
        cfg: &AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<(MultiplexedConnection, usize, Endpoint), BrokerError> {
        let mut last = None;
        for k in 0..self.choices() {
            let i = (start + k) % self.choices();
            let ep = self.locate(i, timeout).await?;
            match self.connect_node(&ep, cfg, timeout).await {
                Ok(c) => return Ok((c, i, ep)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| unreachable!("a broker has at least one address")))
    }

    async fn connect_node(
        &self,
        ep: &Endpoint,
        cfg: &AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<MultiplexedConnection, BrokerError> {
        let redis_err = |source| BrokerError::Redis {
            endpoint: ep.redacted(),
            source,
        };
        let client = ep.client(&self.files).map_err(redis_err)?;
        let mut conn = tokio::time::timeout(
            timeout,
            client.get_multiplexed_async_connection_with_config(cfg),
        )
        .await
        .map_err(|_| BrokerError::Timeout {
            endpoint: ep.redacted(),
            timeout,
        })?
        .map_err(redis_err)?;
        if self.sentinels().is_some() {
            check_role(&mut conn).await.map_err(|e| match e {
                RoleError::Redis(source) => BrokerError::Redis {
                    endpoint: ep.redacted(),
                    source,
                },
                RoleError::Replica(role) => BrokerError::NotMaster {
                    endpoint: ep.redacted(),
                    role,
                },
            })?;
        }
        Ok(conn)
    }
}

pub enum RoleError {
    Redis(redis::RedisError),
    /// What the node said it is.
    Replica(String),
}

/// `ROLE` on a `redis` crate connection: `Ok` for a master.
pub async fn check_role(conn: &mut MultiplexedConnection) -> Result<(), RoleError> {
    let v: redis::Value = redis::cmd("ROLE")
        .query_async(conn)
        .await
        .map_err(RoleError::Redis)?;
    let role = match &v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    if role == "master" {
        Ok(())
    } else {
        Err(RoleError::Replica(if role.is_empty() {
            "node of unknown role".into()
        } else {
            role
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(yaml_endpoint: &[&str], master: Option<&str>) -> Result<Broker, DecodeError> {
        let endpoint: Vec<String> = yaml_endpoint.iter().map(|s| s.to_string()).collect();
        Broker::new(&Settings {
            endpoint: &endpoint,
            tls: &ClientTlsConfig::default(),
            master_name: master,
            sentinel_password: None,
            sentinel_tls: &ClientTlsConfig::default(),
        })
    }

    #[test]
    fn endpoint_redacts_password() {
        let ep = Endpoint::parse("redis://user:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(ep.port, 6380);
        assert_eq!(ep.db, 2);
        assert_eq!(ep.password.as_deref(), Some("s3cret"));
        assert!(!format!("{ep:?}").contains("s3cret"));
        assert!(Endpoint::parse("http://x").is_err());
    }

    #[test]
    fn sentinel_urls_as_celery_writes_them() {
        let b = broker(
            &["sentinel://:pw@h1:26379;sentinel://h2:26380;sentinel://h3/3"],
            Some("mymaster"),
        )
        .ok()
        .unwrap();
        assert_eq!(b.db(), 3);
        let s = b.sentinels().unwrap();
        assert_eq!(
            s.nodes(),
            [
                ("h1".to_string(), 26379),
                ("h2".to_string(), 26380),
                ("h3".to_string(), 26379)
            ]
        );
        assert!(!b.describe().contains("pw"), "{}", b.describe());
        // The same as a list.
        let b = broker(&["sentinel://h1:26379", "sentinel://h2:26380/0"], Some("m"))
            .ok()
            .unwrap();
        assert_eq!(b.sentinels().unwrap().nodes().len(), 2);
        let err = |e: &[&str], m: Option<&str>| broker(e, m).err().unwrap().path;
        assert_eq!(err(&["sentinel://h1:26379"], None), "master_name");
        assert_eq!(err(&["redis://h1:6379/0"], Some("m")), "master_name");
        assert_eq!(
            err(&["sentinel://h1:26379/1;sentinel://h2/2"], Some("m")),
            "endpoint"
        );
        assert_eq!(
            err(&["sentinel://h1:26379", "http://h2"], Some("m")),
            "endpoint[1]"
        );
        assert_eq!(err(&["sentinel://h1:notaport"], Some("m")), "endpoint");
    }
}
