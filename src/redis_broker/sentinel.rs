//! Redis Sentinel, as kombu's `sentinel://` transport uses it: the master of `master_name` is
//! asked of the first sentinel that answers (`SENTINEL get-master-addr-by-name`), the others in
//! turn on failure, and the node named is verified with `ROLE` (one that says it is a replica is
//! not used: the next sentinel is asked). Failovers are announced on the sentinels'
//! `+switch-master` channel ([`Sentinels::watch`]).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::resp::{command, parse, Frame};
use super::Endpoint;
use crate::tls::{Conn, Connector};

/// The default port of a sentinel (kombu's `SentinelTransport.default_port`).
const DEFAULT_PORT: u16 = 26379;
/// Replies from sentinels are small.
const MAX_REPLY: usize = 1 << 20;

/// One `sentinel://[user:password@]host[:port][/db]` of an endpoint.
pub struct SentinelUrl {
    pub host: String,
    pub port: u16,
    /// For the data nodes (kombu passes the URL's credentials to the master connection).
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<i64>,
}

/// Parses one `sentinel://` URL.
pub fn parse_url(url: &str) -> Result<SentinelUrl, String> {
    let rest = url
        .strip_prefix("sentinel://")
        .ok_or("a sentinel list must hold sentinel:// URLs only")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, d)) if !d.is_empty() => (
            h,
            Some(
                d.parse::<i64>()
                    .map_err(|_| format!("invalid db number {d:?} in a sentinel:// URL"))?,
            ),
        ),
        Some((h, _)) => (h, None),
        None => (rest, None),
    };
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match hostport.rsplit_once(':') {
        _ if hostport.starts_with('[') && hostport.ends_with(']') => (hostport, DEFAULT_PORT),
        Some((h, p)) if !hostport.starts_with('[') || h.ends_with(']') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port {p:?} in a sentinel:// URL"))?,
        ),
        _ => (hostport, DEFAULT_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("a sentinel:// URL needs a host".into());
    }
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => {
            let (u, p) = a.split_once(':').unwrap_or((a, ""));
            (
                (!u.is_empty()).then(|| u.to_string()),
                (!p.is_empty()).then(|| p.to_string()),
            )
        }
    };
    Ok(SentinelUrl {
        host: host.to_string(),
        port,
        username,
        password,
        db,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    /// Every sentinel failed; each with its reason.
    #[error("no sentinel named a usable master for {master:?}: {}", .failures.join("; "))]
    NoMaster {
        master: String,
        failures: Vec<String>,
    },
}

/// A failover announced by a sentinel.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub old: String,
    /// `host:port` of the new master.
    pub new: String,
}

/// The sentinels of one broker and the name of its master.
pub struct Sentinels {
    nodes: Vec<(String, u16)>,
    master: String,
    password: Option<String>,
    tls: Option<Connector>,
    /// The data nodes' credentials, TLS and db; host and port come from the sentinels.
    template: Endpoint,
    /// The sentinel that answered last: asked first next time.
    first: AtomicUsize,
}

impl Sentinels {
    pub(super) fn new(
        nodes: Vec<(String, u16)>,
        master: String,
        password: Option<String>,
        tls: Option<Connector>,
        template: Endpoint,
    ) -> Sentinels {
        Sentinels {
            nodes,
            master,
            password,
            tls,
            template,
            first: AtomicUsize::new(0),
        }
    }

    pub fn nodes(&self) -> &[(String, u16)] {
        &self.nodes
    }

    pub fn master_name(&self) -> &str {
        &self.master
    }

    /// `sentinel://h1:p1;sentinel://h2:p2 (master mymaster)`, no credentials.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self
            .nodes
            .iter()
            .map(|(h, p)| format!("sentinel://{h}:{p}"))
            .collect();
        format!("{} (master {})", list.join(";"), self.master)
    }

    /// The data node at `addr` (`host:port` from a sentinel).
    fn node(&self, host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            port,
            ..self.template.clone()
        }
    }

    /// The master now: asked of each sentinel in turn (the last that answered first), and
    /// verified with `ROLE` on the node itself; `timeout` bounds each sentinel's answer and
    /// each verification. The error lists every sentinel and why it did not do.
    pub async fn master(
        &self,
        timeout: Duration,
        node_tls: Option<&Connector>,
    ) -> Result<Endpoint, SentinelError> {
        let start = self.first.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for k in 0..self.nodes.len() {
            let i = (start + k) % self.nodes.len();
            let (host, port) = &self.nodes[i];
            let named = tokio::time::timeout(timeout, self.ask(host, *port))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
            let ep = match named {
                Ok(ep) => ep,
                Err(why) => {
                    failures.push(format!("{host}:{port}: {why}"));
                    continue;
                }
            };
            let role = tokio::time::timeout(timeout, role_of(&ep, node_tls))
                .await
                .unwrap_or_else(|_| Err(format!("no answer to ROLE within {timeout:?}")));
            match role {
                Ok(r) if r == "master" => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok(ep);
                }
                Ok(r) => {
                    tracing::warn!(sentinel = %format!("{host}:{port}"), master = %self.master, node = %ep.addr(), role = %r, "A sentinel names as master a node that says it is not; ignored.");
                    failures.push(format!(
                        "{host}:{port}: names {} which says it is a {r}",
                        ep.addr()
                    ));
                }
                Err(why) => failures.push(format!(
                    "{host}:{port}: names {} which cannot be reached: {why}",
                    ep.addr()
                )),
            }
        }
        Err(SentinelError::NoMaster {
            master: self.master.clone(),
            failures,
        })
    }

    /// `SENTINEL get-master-addr-by-name` on one sentinel.
    async fn ask(&self, host: &str, port: u16) -> Result<Endpoint, String> {
        let mut link = Link::open(
            host,
            port,
            self.tls.as_ref(),
            None,
            self.password.as_deref(),
        )
        .await?;
        let reply = link
            .call(&[
                b"SENTINEL",
                b"get-master-addr-by-name",
                self.master.as_bytes(),
            ])
            .await?;
        match reply {
            Reply::Array(v) => match v.as_slice() {
                [Reply::Bulk(Some(h)), Reply::Bulk(Some(p))] => {
                    let h = String::from_utf8_lossy(h).into_owned();
                    let p = std::str::from_utf8(p)
                        .ok()
                        .and_then(|p| p.parse().ok())
                        .ok_or("a malformed port")?;
                    Ok(self.node(&h, p))
                }
                _ => Err("a malformed answer".into()),
            },
            Reply::Nil => Err(format!("does not know master {:?}", self.master)),
            Reply::Error(e) => Err(e),
            _ => Err("a malformed answer".into()),
        }
    }

    /// Follows `+switch-master` for this master on the sentinels (one at a time, the next on
    /// failure) and calls `on_switch` for each failover, until `cancel`.
    pub async fn watch(&self, cancel: CancellationToken, mut on_switch: impl FnMut(Switch)) {
        let mut i = self.first.load(Ordering::Relaxed);
        let mut wait = Duration::from_millis(200);
        loop {
            let (host, port) = &self.nodes[i % self.nodes.len()];
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.follow(host, *port, &mut on_switch) => r,
            };
            tracing::debug!(sentinel = %format!("{host}:{port}"), error = %r, "Sentinel watch lost; trying the next sentinel.");
            i += 1;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// One subscription to `+switch-master`; returns why it ended.
    async fn follow(&self, host: &str, port: u16, on_switch: &mut impl FnMut(Switch)) -> String {
        let mut link = match tokio::time::timeout(
            Duration::from_secs(5),
            Link::open(
                host,
                port,
                self.tls.as_ref(),
                None,
                self.password.as_deref(),
            ),
        )
        .await
        {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return e,
            Err(_) => return "connect timed out".into(),
        };
        if let Err(e) = link.send(&[b"SUBSCRIBE", b"+switch-master"]).await {
            return e;
        }
        let mut silent = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), link.next()).await {
                Err(_) => {
                    // A PING answers even when subscribed: two silent periods = dead link.
                    silent += 1;
                    if silent > 2 {
                        return "no answer to PING".into();
                    }
                    if let Err(e) = link.send(&[b"PING"]).await {
                        return e;
                    }
                }
                Ok(Err(e)) => return e,
                Ok(Ok(Reply::Array(v))) => {
                    silent = 0;
                    if let [Reply::Bulk(Some(kind)), _, Reply::Bulk(Some(body))] = v.as_slice() {
                        if kind.as_slice() != b"message" {
                            continue;
                        }
                        // "<master name> <old ip> <old port> <new ip> <new port>"
                        let body = String::from_utf8_lossy(body);
                        let w: Vec<&str> = body.split_whitespace().collect();
                        if let [name, oh, op, nh, np] = w.as_slice() {
                            if *name == self.master {
                                on_switch(Switch {
                                    old: format!("{oh}:{op}"),
                                    new: format!("{nh}:{np}"),
                                });
                            }
                        }
                    }
                }
                Ok(Ok(_)) => silent = 0,
            }
        }
    }
}

/// What a data node says it is (`ROLE`): `master`, `slave`, …
async fn role_of(ep: &Endpoint, tls: Option<&Connector>) -> Result<String, String> {
    let node_tls = if ep.tls { tls } else { None };
    if ep.tls && node_tls.is_none() {
        return Err("TLS to the data nodes without a TLS configuration".into());
    }
    let mut link = Link::open(
        &ep.host,
        ep.port,
        node_tls,
        ep.username.as_deref(),
        ep.password.as_deref(),
    )
    .await?;
    match link.call(&[b"ROLE"]).await? {
        Reply::Array(v) => match v.first() {
            Some(Reply::Bulk(Some(r))) => Ok(String::from_utf8_lossy(r).into_owned()),
            Some(Reply::Simple(r)) => Ok(r.clone()),
            _ => Err("a malformed ROLE answer".into()),
        },
        Reply::Error(e) => Err(e),
        _ => Err("a malformed ROLE answer".into()),
    }
}

/// An owned reply.
enum Reply {
    Simple(String),
    Error(String),
    Int,
    Bulk(Option<Vec<u8>>),
    Nil,
    Array(Vec<Reply>),
}

fn owned(f: &Frame<'_>) -> Reply {
    match f {
        Frame::Simple(s) => Reply::Simple(String::from_utf8_lossy(s).into_owned()),
        Frame::Error(s) => Reply::Error(String::from_utf8_lossy(s).into_owned()),
        Frame::Int(_) => Reply::Int,
        Frame::Bulk(b) => Reply::Bulk(b.map(<[u8]>::to_vec)),
        Frame::Array(v) if v.is_empty() => Reply::Nil,
        Frame::Array(v) => Reply::Array(v.iter().map(owned).collect()),
        Frame::LongArray(_) => Reply::Array(Vec::new()),
    }
}

/// A plain request/reply connection to a sentinel or a data node.
struct Link {
    stream: Conn,
    buf: BytesMut,
}

impl Link {
    async fn open(
        host: &str,
        port: u16,
        tls: Option<&Connector>,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Link, String> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let stream = match tls {
            Some(c) => c.connect(host, tcp).await.map_err(|e| e.to_string())?,
            None => Conn::Plain(tcp),
        };
        let mut link = Link {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        if let Some(p) = password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = username {
                args.push(u.as_bytes());
            }
            args.push(p.as_bytes());
            if let Reply::Error(e) = link.call(&args).await? {
                return Err(format!("AUTH failed: {e}"));
            }
        }
        Ok(link)
    }

    async fn send(&mut self, args: &[&[u8]]) -> Result<(), String> {
        self.stream
            .write_all(&command(args))
            .await
            .map_err(|e| e.to_string())
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        self.send(args).await?;
        self.next().await
    }

    async fn next(&mut self) -> Result<Reply, String> {
        loop {
            if let Some((f, n)) = parse(&self.buf, MAX_REPLY).map_err(|e| e.to_string())? {
                let r = owned(&f);
                self.buf.advance(n);
                return Ok(r);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).to_string()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("sentinel://user:pw@h:26380/2").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.username.as_deref(),
                u.password.as_deref(),
                u.db
            ),
            ("h", 26380, Some("user"), Some("pw"), Some(2))
        );
        let u = parse_url("sentinel://:pw@h").unwrap();
        assert_eq!(
            (u.port, u.username, u.password.as_deref()),
            (26379, None, Some("pw"))
        );
        let u = parse_url("sentinel://[::1]:1/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("::1", 1, None));
        let u = parse_url("sentinel://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 26379));
        assert!(parse_url("redis://h").is_err());
        assert!(parse_url("sentinel://h:x").is_err());
        assert!(parse_url("sentinel://h/x").is_err());
        assert!(parse_url("sentinel://").is_err());
    }
}
