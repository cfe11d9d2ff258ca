//! Serving HTTP: the one accept-and-drain loop behind every listener of the agent (the `otlp`
//! receiver's gRPC and HTTP endpoints, `/metrics`, the `prometheus` exporter, extensions).
//!
//! This module owns how connections are accepted, bounded and closed; the components own their
//! routes. It protects every listener from slow and idle clients:
//!
//! * at most `max_connections` connections at once: when all are taken the listener stops
//!   accepting (new clients wait in the kernel's backlog) until one closes;
//! * a connection must complete its TLS handshake and the head of its first request within
//!   `read_header_timeout` (HTTP/1: every request head, via hyper's timer; HTTP/2: the
//!   connection preface and first request), or it is closed;
//! * a connection with no request in flight for `idle_timeout` is closed (a streaming response
//!   such as server-sent events counts as in flight until its body ends);
//! * HTTP/2 (gRPC): keepalive pings every `keepalive.server_parameters.time`, the connection is
//!   closed when a ping is not answered within `keepalive.server_parameters.timeout`, and at most
//!   `max_concurrent_streams` requests run at once on one connection;
//! * on shutdown every connection is drained gracefully (in-flight requests finish, idle
//!   connections close) for at most [`DRAIN`], then dropped.
//!
//! Settings ([`ServerSettings`]), flattened into a server's own section, with the
//! OpenTelemetry Collector's names (`confighttp`, `configgrpc`) where it has them:
//! ```yaml
//! read_header_timeout: 10s     # confighttp
//! idle_timeout: 1m             # confighttp
//! max_connections: 1024        # celeriac's (the collector has no connection cap)
//! max_concurrent_streams: 100  # configgrpc; HTTP/2 only
//! keepalive:                   # configgrpc; HTTP/2 only
//!   server_parameters:
//!     time: 1m                 # ping a connection quiet for this long
//!     timeout: 20s             # close it if the ping is not answered in time
//! ```
//!
//! Using it: put `#[serde(flatten)] pub server: ServerSettings` in the server's config, build a
//! hyper service (`hyper::service::service_fn`) and call [`serve`] (plain TCP) or
//! [`serve_with`] (a handshake step first, e.g. TLS); both return once `shutdown` is cancelled
//! and the connections have drained:
//! ```ignore
//! let svc = service_fn(move |req| { let app = app.clone(); async move { app.handle(req).await } });
//! crate::serve::serve("celery_ui", listener, cfg.server.clone(), Protocol::Http1, ctx.shutdown, svc).await;
//! ```

use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::types;

/// How long connections get to finish their requests once shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Limits and timeouts of one listener (see the module docs). Flatten it into a server's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerSettings {
    #[serde(with = "types::duration")]
    pub read_header_timeout: Duration,
    #[serde(with = "types::duration")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub keepalive: Keepalive,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_concurrent_streams: 100,
            keepalive: Keepalive::default(),
        }
    }
}

/// `keepalive:` as in the collector's `configgrpc` (`KeepaliveServerConfig`). HTTP/2 pings use
/// `server_parameters.time`/`timeout`; the connection-age keys and `enforcement_policy` are
/// accepted so collector files validate, and not applied (the idle limit is `idle_timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Keepalive {
    pub server_parameters: KeepaliveServerParameters,
    #[serde(skip_serializing_if = "KeepaliveEnforcementPolicy::is_default")]
    pub enforcement_policy: KeepaliveEnforcementPolicy,
}

/// Accepted, not applied (see [`Keepalive`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct KeepaliveEnforcementPolicy {
    #[serde(with = "types::opt_duration", skip_serializing_if = "Option::is_none")]
    pub min_time: Option<Duration>,
    pub permit_without_stream: bool,
}

impl KeepaliveEnforcementPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepaliveServerParameters {
    #[serde(with = "types::duration")]
    pub time: Duration,
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    /// Accepted, not applied (see [`Keepalive`]).
    #[serde(with = "types::opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_connection_idle: Option<Duration>,
    #[serde(with = "types::opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_connection_age: Option<Duration>,
    #[serde(with = "types::opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_connection_age_grace: Option<Duration>,
}

impl Default for KeepaliveServerParameters {
    fn default() -> Self {
        KeepaliveServerParameters {
            time: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
            max_connection_idle: None,
            max_connection_age: None,
            max_connection_age_grace: None,
        }
    }
}

impl ServerSettings {
    /// Check the values; `Err((key, message))` names the offending key.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let zero = Duration::ZERO;
        if self.read_header_timeout == zero {
            return Err(("read_header_timeout", "must be more than 0"));
        }
        if self.idle_timeout == zero {
            return Err(("idle_timeout", "must be more than 0"));
        }
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1"));
        }
        if self.max_concurrent_streams == 0 {
            return Err(("max_concurrent_streams", "must be at least 1"));
        }
        let ka = &self.keepalive.server_parameters;
        if ka.time == zero || ka.timeout == zero {
            return Err((
                "keepalive.server_parameters",
                "time and timeout must be more than 0",
            ));
        }
        Ok(())
    }
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (gRPC).
    Http2,
}

/// Serve `service` on `listener` (plain TCP) until `shutdown` is cancelled, then drain.
/// `name` names the server in the log.
pub async fn serve<S, B>(
    name: &'static str,
    listener: TcpListener,
    settings: ServerSettings,
    protocol: Protocol,
    shutdown: CancellationToken,
    service: S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_with(
        name,
        listener,
        settings,
        protocol,
        shutdown,
        |s| async move { Some(s) },
        service,
    )
    .await
}

/// [`serve`] with a `handshake` step on each accepted connection (TLS): it gets
/// `read_header_timeout` to finish; `None` drops the connection (the handshake counts its own
/// failures).
pub async fn serve_with<H, HF, IO, S, B>(
    name: &'static str,
    listener: TcpListener,
    settings: ServerSettings,
    protocol: Protocol,
    shutdown: CancellationToken,
    handshake: H,
    service: S,
) where
    H: Fn(TcpStream) -> HF + Send + Sync + 'static,
    HF: Future<Output = Option<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let settings = Arc::new(settings);
    let handshake = Arc::new(handshake);
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks so the set stays small.
        while conns.try_join_next().is_some() {}
        let (settings, handshake, service, shutdown) = (
            settings.clone(),
            handshake.clone(),
            service.clone(),
            shutdown.clone(),
        );
        conns.spawn(async move {
            let _permit = permit;
            let io =
                match tokio::time::timeout(settings.read_header_timeout, handshake(stream)).await {
                    Ok(Some(io)) => io,
                    Ok(None) => return,
                    Err(_) => {
                        tracing::debug!(server = name, "Handshake timed out; closing.");
                        return;
                    }
                };
            connection(name, io, &settings, protocol, shutdown, service).await;
        });
    }
    drop(listener);
    // Shutdown: each connection drains on its own (it watches the same token).
    while conns.join_next().await.is_some() {}
}

/// When the connection last finished a request, and how many are in flight.
struct Activity {
    start: Instant,
    inflight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `start` when the last request ended.
    last_ms: AtomicU64,
}

impl Activity {
    fn idle_since(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Held while a request (and its response body) is in flight.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> InFlight {
        a.inflight.fetch_add(1, Ordering::Relaxed);
        a.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Relaxed);
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until it is done or dropped; size hints
/// pass through (so `Content-Length` stays).
struct Tracked<B> {
    body: std::pin::Pin<Box<B>>,
    _guard: InFlight,
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn connection<IO, S, B>(
    name: &'static str,
    io: IO,
    settings: &ServerSettings,
    protocol: Protocol,
    shutdown: CancellationToken,
    service: S,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        inflight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        last_ms: AtomicU64::new(0),
    });
    let tracked = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = InFlight::begin(&activity);
            let fut = service.call(req);
            async move {
                let resp = fut.await?;
                // The request stays in flight until its response body is done (or dropped).
                Ok::<_, S::Error>(resp.map(move |b| Tracked {
                    body: Box::pin(b),
                    _guard: guard,
                }))
            }
        })
    };
    let io = TokioIo::new(io);
    let conn: std::pin::Pin<Box<dyn ConnFuture>> = match protocol {
        Protocol::Http1 => Box::pin(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.read_header_timeout)
                .keep_alive(true)
                .serve_connection(io, tracked),
        ),
        Protocol::Http2 => {
            let ka = &settings.keepalive.server_parameters;
            Box::pin(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(ka.time))
                    .keep_alive_timeout(ka.timeout)
                    .max_concurrent_streams(settings.max_concurrent_streams)
                    .serve_connection(io, tracked),
            )
        }
    };
    let mut conn = conn;
    let (header_timeout, idle_timeout) = (settings.read_header_timeout, settings.idle_timeout);
    // Idle watchdog: before the first request the connection gets `read_header_timeout`,
    // between requests `idle_timeout`.
    let idle = async {
        loop {
            let limit = if activity.requests.load(Ordering::Relaxed) == 0 {
                header_timeout
            } else {
                idle_timeout
            };
            let deadline = activity.idle_since() + limit;
            if Instant::now() >= deadline && activity.inflight.load(Ordering::Relaxed) == 0 {
                return;
            }
            let wake = if activity.inflight.load(Ordering::Relaxed) > 0 {
                Instant::now() + limit
            } else {
                deadline
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    };
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.cancelled() => {}
        _ = idle => {
            // Nothing in flight: nothing to drain (a graceful HTTP/2 shutdown would wait for a
            // preface that a slow client never finishes).
            tracing::debug!(server = name, "Closing an idle connection.");
            return;
        }
    }
    conn.as_mut().shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
}

/// A hyper server connection of either protocol, for [`connection`].
trait ConnFuture: Future<Output = Result<(), hyper::Error>> + Send {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> ConnFuture for hyper::server::conn::http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B> + Send,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S, B> ConnFuture for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B> + Send,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// Accept connections on `listener` until `shutdown` is cancelled, handing each to `serve`
/// (which spawns the connection's task). An accept error (e.g. out of file descriptors) is
/// logged and retried after a short pause. For listeners that are not HTTP; HTTP servers use
/// [`serve`], which also bounds and times out the connections.
pub async fn accept_until<F: FnMut(TcpStream)>(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &'static str,
    mut serve: F,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => serve(stream),
                Err(e) => {
                    tracing::warn!(server = what, error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        endpoint: String,
        #[serde(flatten)]
        server: ServerSettings,
    }

    #[test]
    fn flattened_settings_keep_unknown_keys_an_error() {
        let o: Outer = serde_yaml_ng::from_str(
            "endpoint: x\nread_header_timeout: 3s\nkeepalive: {server_parameters: {time: 30s}}",
        )
        .unwrap();
        assert_eq!(o.server.read_header_timeout, Duration::from_secs(3));
        assert_eq!(
            o.server.keepalive.server_parameters.time,
            Duration::from_secs(30)
        );
        assert_eq!(o.server.idle_timeout, Duration::from_secs(60));
        let e = serde_yaml_ng::from_str::<Outer>("endpoint: x\nread_header_timout: 3s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("read_header_timout"), "{e}");
        let bad = ServerSettings {
            max_connections: 0,
            ..Default::default()
        };
        assert_eq!(bad.check().unwrap_err().0, "max_connections");
    }

    async fn start(settings: ServerSettings) -> (String, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let token = CancellationToken::new();
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        tokio::spawn(serve(
            "test",
            listener,
            settings,
            Protocol::Http1,
            token.clone(),
            svc,
        ));
        (addr, token)
    }

    async fn get(addr: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn connection_cap_and_idle_timeout() {
        let (addr, token) = start(ServerSettings {
            max_connections: 2,
            idle_timeout: Duration::from_millis(600),
            read_header_timeout: Duration::from_millis(600),
            ..Default::default()
        })
        .await;
        // Two connections that finish a request and then sit idle take both slots.
        let mut idle = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            idle.push(s);
        }
        let t0 = Instant::now();
        // A third client waits for a slot: the idle ones are closed after idle_timeout.
        let r = get(&addr).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        for mut s in idle {
            let mut buf = [0u8; 16];
            assert_eq!(
                s.read(&mut buf).await.unwrap_or(0),
                0,
                "idle connection kept open"
            );
        }
        token.cancel();
    }
}
