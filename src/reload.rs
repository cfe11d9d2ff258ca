//! Config reload: the agent side (a request re-reads and checks the file, and only a config
//! without errors replaces the running graph) and the client behind `celeriac reload`.
//!
//! Requests come from SIGHUP and `POST /-/reload` on the telemetry endpoint. Every outcome is
//! counted in `celeriac_config_reloads_total{result="success"|"failure"}`; a rejected file's
//! problems are logged with their `file:line:col`, and the running pipelines stay as they are.
//! What a swap keeps and restarts is described in [`crate::pipeline::run`].

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Diagnostics};
use crate::pipeline::{Graph, Reload};
use crate::telemetry::Telemetry;

const RELOADS: &str = "celeriac_config_reloads_total";
const RELOADS_HELP: &str =
    "Config reloads (SIGHUP, POST /-/reload), by result; on failure the running pipelines stay.";

/// Reads and checks the agent's config again (the same `--config` sources each time).
pub type Loader = Box<dyn Fn() -> (Option<(Config, Graph)>, Diagnostics) + Send + Sync>;

/// Handle reload requests until `requests` closes: `load` the config again, and hand a valid result to the
/// running pipelines over `swaps`.
pub async fn serve(
    load: Loader,
    mut requests: mpsc::Receiver<()>,
    swaps: mpsc::Sender<Reload>,
    telemetry: Telemetry,
) {
    let success = telemetry.counter(RELOADS, RELOADS_HELP, &[("result", "success")]);
    let failure = telemetry.counter(RELOADS, RELOADS_HELP, &[("result", "failure")]);
    while requests.recv().await.is_some() {
        let (built, d) = load();
        for line in d.render().lines() {
            if built.is_some() {
                tracing::warn!("{line}");
            } else {
                tracing::error!("{line}");
            }
        }
        let Some((config, graph)) = built else {
            tracing::error!(
                errors = d.errors(),
                "The new configuration has errors; keeping the running pipelines."
            );
            failure.inc();
            continue;
        };
        let (done, summary) = oneshot::channel();
        if swaps
            .send(Reload {
                config,
                graph,
                done,
            })
            .await
            .is_err()
        {
            return; // shutting down
        }
        match summary.await {
            Ok(_) => success.inc(),
            Err(_) => return, // shut down before the swap
        }
    }
}

/// What `celeriac reload` observed.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Reloaded,
    Rejected,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot reach the agent: {0}")]
    Connect(#[source] std::io::Error),
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    #[error("no reload outcome within {0:?}")]
    Timeout(Duration),
    #[error("cannot read the bearer token file {0}: {1}")]
    TokenFile(String, #[source] std::io::Error),
}

/// How long `celeriac reload` waits for the outcome: a swap waits for replaced components to
/// drain, bounded in practice by `service.shutdown_timeout`.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

/// [`request`] with the bearer token read from `token_file` (surrounding whitespace ignored).
pub fn request_with_token_file(
    endpoint: &str,
    token_file: Option<&std::path::Path>,
) -> Result<Outcome, RequestError> {
    let token = match token_file {
        None => None,
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| RequestError::TokenFile(p.display().to_string(), e))?
                .trim()
                .to_string(),
        ),
    };
    request(endpoint, token.as_deref())
}

/// Ask the agent whose telemetry endpoint is `endpoint` to reload, and wait for the outcome
/// (its reload counters move). `token`: the endpoint's bearer token, if it requires one.
pub fn request(endpoint: &str, token: Option<&str>) -> Result<Outcome, RequestError> {
    let before = counts(endpoint, token)?;
    let (status, body) = http(endpoint, "POST", "/-/reload", token)?;
    if status != 202 {
        return Err(RequestError::Protocol(format!("{status}: {}", body.trim())));
    }
    let deadline = Instant::now() + OUTCOME_WAIT;
    while Instant::now() < deadline {
        let now = counts(endpoint, token)?;
        if now.1 > before.1 {
            return Ok(Outcome::Rejected);
        }
        if now.0 > before.0 {
            return Ok(Outcome::Reloaded);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(RequestError::Timeout(OUTCOME_WAIT))
}

/// (successes, failures) from the agent's `/metrics`.
fn counts(endpoint: &str, token: Option<&str>) -> Result<(u64, u64), RequestError> {
    let (status, body) = http(endpoint, "GET", "/metrics", token)?;
    if status == 401 {
        return Err(RequestError::Protocol(
            "the endpoint requires a bearer token (--bearer-token-file)".into(),
        ));
    }
    if status != 200 {
        return Err(RequestError::Protocol(format!(
            "/metrics answered {status}"
        )));
    }
    Ok(parse_counts(&body))
}

fn parse_counts(metrics: &str) -> (u64, u64) {
    let value = |result: &str| {
        let prefix = format!("{RELOADS}{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (value("success"), value("failure"))
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), RequestError> {
    let addr = endpoint
        .to_socket_addrs()
        .map_err(RequestError::Connect)?
        .next()
        .ok_or_else(|| RequestError::Protocol(format!("`{endpoint}` resolves to nothing")))?;
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(RequestError::Connect)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(RequestError::Connect)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(RequestError::Connect)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(RequestError::Connect)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| RequestError::Protocol("no HTTP header".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| RequestError::Protocol(format!("bad status line: {head:.60}")))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reload_counts_from_metrics() {
        let text = "# TYPE celeriac_config_reloads_total counter\n\
                    celeriac_config_reloads_total{result=\"failure\"} 2\n\
                    celeriac_config_reloads_total{result=\"success\"} 5\n";
        assert_eq!(parse_counts(text), (5, 2));
        assert_eq!(parse_counts(""), (0, 0));
    }

    #[test]
    fn dechunks_bodies() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
