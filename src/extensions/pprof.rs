//! `pprof` extension: CPU profiles of the running agent in pprof's protobuf format, at the
//! collector's address and path (contrib `extension/pprofextension`, which mounts Go's
//! `net/http/pprof`), so `go tool pprof http://host:1777/debug/pprof/profile?seconds=30` works
//! against celeriac as against a collector.
//!
//! This module owns the extension's settings and its server. Sampling and symbolization are done
//! by the `pprof` crate (SIGPROF timer at 100 Hz, like Go's profiler); the answer is the
//! gzip-compressed `perftools.profiles.Profile` message, as Go's `runtime/pprof` writes it
//! (`Content-Type: application/octet-stream`, `Content-Disposition: attachment;
//! filename="profile"`). `seconds` defaults to 30, as in Go. The profiler is process-wide: one
//! profile at a time, a second request meanwhile gets `500` ("cpu profiling already in use", Go's
//! answer too). `save_to_file` profiles the whole run and writes the file at shutdown, as the
//! collector does. `block_profile_fraction` and `mutex_profile_fraction` are Go runtime
//! settings: accepted, without effect. Heap, goroutine and other Go profiles are not served (404).
//!
//! ```yaml
//! extensions:
//!   pprof:
//!     endpoint: localhost:1777     # the collector's default
//!     save_to_file: /tmp/cpu.pprof # optional
//! ```

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::component::{
    BoxRun, BuildResult, ComponentError, Context, Extension, Factory, Host, Registration,
};
use crate::config::{self, types, Value};

pub const REGISTRATION: Registration = Registration {
    type_name: "pprof",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<PprofConfig>,
};

/// Go's sampling rate (`runtime.SetCPUProfileRate` default).
const HZ: i32 = 100;
/// The longest profile served, to bound a request.
const MAX_SECONDS: u64 = 3600;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PprofConfig {
    #[serde(with = "types::addr")]
    pub endpoint: SocketAddr,
    pub block_profile_fraction: i64,
    pub mutex_profile_fraction: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_to_file: Option<PathBuf>,
}

impl Default for PprofConfig {
    fn default() -> Self {
        PprofConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 1777)),
            block_profile_fraction: 0,
            mutex_profile_fraction: 0,
            save_to_file: None,
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Extension> {
    let cfg: PprofConfig = config::decode(v)?;
    Ok(Box::new(Pprof { cfg }))
}

pub struct Pprof {
    cfg: PprofConfig,
}

/// The process-wide profiler is taken (one profile at a time).
static PROFILING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cpu profiling already in use")]
    Busy,
    #[error("profiling: {0}")]
    Profiler(#[from] pprof::Error),
    #[error("encoding the profile: {0}")]
    Encode(String),
}

/// Sample this process's CPU for `duration` (cut short when `stop` is cancelled) and return
/// the gzip-compressed pprof protobuf. Blocking: run it on a blocking thread.
pub fn cpu_profile(duration: Duration, stop: &CancellationToken) -> Result<Vec<u8>, ProfileError> {
    let _taken = Taken::take()?;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(HZ)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()?;
    let until = std::time::Instant::now() + duration;
    while std::time::Instant::now() < until && !stop.is_cancelled() {
        std::thread::sleep(
            until
                .saturating_duration_since(std::time::Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
    let mut report = guard.report().build()?;
    drop(guard);
    // A sample whose stack could not be unwound has no frame: it names no code, and pprof
    // readers expect every sample to have a location, so it is left out.
    report.data.retain(|frames, _| !frames.frames.is_empty());
    encode(&report)
}

fn encode(report: &pprof::Report) -> Result<Vec<u8>, ProfileError> {
    use pprof::protos::Message;
    let profile = report.pprof()?;
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)
        .map_err(|e| ProfileError::Encode(e.to_string()))?;
    gz.finish().map_err(|e| ProfileError::Encode(e.to_string()))
}

/// Holds [`PROFILING`] while alive.
struct Taken;

impl Taken {
    fn take() -> Result<Taken, ProfileError> {
        PROFILING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Taken)
            .map_err(|_| ProfileError::Busy)
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

/// `seconds=N` from a query string; Go's default is 30.
fn seconds(query: Option<&str>) -> Result<u64, String> {
    let Some(v) = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("seconds="))
    else {
        return Ok(30);
    };
    match v.parse::<u64>() {
        Ok(0) => Ok(30),
        Ok(n) if n <= MAX_SECONDS => Ok(n),
        Ok(_) => Err(format!("seconds must be at most {MAX_SECONDS}")),
        Err(_) => Err(format!("invalid seconds `{v}`")),
    }
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

const INDEX: &str = "<html><head><title>/debug/pprof/</title></head><body>\n/debug/pprof/<br>\n<p>Profiles:</p>\n<a href=\"profile?seconds=30\">profile</a>: CPU profile. You can specify the duration in the seconds GET parameter. After you get the profile file, use the go tool pprof command to investigate the profile.\n</body></html>\n";

async fn handle(req: Request<Incoming>, stop: CancellationToken) -> Resp {
    match req.uri().path() {
        "/debug/pprof/" | "/debug/pprof" => Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from_static(INDEX.as_bytes())))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        "/debug/pprof/profile" => {
            let secs = match seconds(req.uri().query()) {
                Ok(s) => s,
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            };
            let result =
                tokio::task::spawn_blocking(move || cpu_profile(Duration::from_secs(secs), &stop))
                    .await;
            match result {
                Ok(Ok(body)) => Response::builder()
                    .header("content-type", "application/octet-stream")
                    .header("content-disposition", "attachment; filename=\"profile\"")
                    .header("x-content-type-options", "nosniff")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                Ok(Err(e)) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Could not enable CPU profiling: {e}\n"),
                ),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

impl Extension for Pprof {
    /// Ready once its endpoint is bound.
    fn reports_ready(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, ctx: Context, _host: Host) -> BoxRun {
        Box::pin(async move {
            let addr = self.cfg.endpoint;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ComponentError::Bind { addr, source })?;
            tracing::info!(component = %ctx.id, endpoint = %addr, "pprof serving /debug/pprof/profile.");
            // save_to_file: profile the whole run; written when the agent stops.
            let whole_run = self.cfg.save_to_file.clone().map(|path| {
                let stop = ctx.shutdown.clone();
                let id = ctx.id.clone();
                tokio::task::spawn_blocking(move || {
                    match cpu_profile(Duration::from_secs(365 * 24 * 3600), &stop) {
                        Ok(body) => {
                            if let Err(e) = std::fs::write(&path, body) {
                                tracing::error!(component = %id, path = %path.display(), error = %e, "Cannot write the CPU profile.");
                            }
                        }
                        Err(e) => {
                            tracing::error!(component = %id, error = %e, "Cannot profile the run.")
                        }
                    }
                })
            });
            let shutdown = ctx.shutdown.clone();
            ctx.ready.set();
            crate::telemetry::accept_until(&listener, &ctx.shutdown, "pprof", |stream| {
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let stop = stop.clone();
                        async move { Ok::<_, Infallible>(handle(req, stop).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            })
            .await;
            if let Some(task) = whole_run {
                let _ = task.await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's net/http/pprof `Profile` handler: `seconds` defaults to 30.
    #[test]
    fn seconds_parameter() {
        assert_eq!(seconds(None), Ok(30));
        assert_eq!(seconds(Some("seconds=5")), Ok(5));
        assert_eq!(seconds(Some("debug=1&seconds=2")), Ok(2));
        assert!(seconds(Some("seconds=x")).is_err());
        assert!(seconds(Some("seconds=99999")).is_err());
    }

    /// contrib extension/pprofextension/config.go: endpoint defaults to localhost:1777.
    #[test]
    fn settings() {
        let d = PprofConfig::default();
        assert_eq!(d.endpoint.to_string(), "127.0.0.1:1777");
        let v: Value = serde_yaml_ng::from_str(
            "{endpoint: 0.0.0.0:1777, block_profile_fraction: 3, mutex_profile_fraction: 5, save_to_file: /tmp/x}",
        )
        .unwrap();
        assert!(build(&v).is_ok());
        // Go's `:port` (every interface), as collector files write it.
        let v: Value = serde_yaml_ng::from_str("endpoint: ':1888'").unwrap();
        let c: PprofConfig = config::decode(&v).unwrap();
        assert_eq!(c.endpoint.to_string(), "0.0.0.0:1888");
        let v: Value = serde_yaml_ng::from_str("bogus: 1").unwrap();
        assert_eq!(build(&v).err().unwrap().path, "bogus");
    }
}
