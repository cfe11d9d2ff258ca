//! Fetching one target's page: one HTTP(S) GET with the job's auth and TLS, bounded in time
//! (`scrape_timeout`, the whole request and body) and size (`body_size_limit`, also after gzip).

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body exceeds body_size_limit ({0} bytes)")]
    TooLarge(usize),
    #[error("cannot read the body: {0}")]
    Body(String),
    #[error("not UTF-8 text")]
    Encoding,
}

impl ScrapeError {
    /// The `reason` label of the failure counter.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "http_status",
            ScrapeError::TooLarge(_) => "too_large",
            ScrapeError::Body(_) | ScrapeError::Encoding => "body",
        }
    }
}

pub fn client(tls: Option<rustls::ClientConfig>, timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    http.enforce_http(false);
    let b = hyper_rustls::HttpsConnectorBuilder::new();
    let c = match tls {
        Some(t) => b.with_tls_config(t).https_or_http(),
        None => b
            .with_tls_config(crate::tls::untrusting_client_config())
            .https_or_http(),
    }
    .enable_http1()
    .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(c)
}

/// The page and whether it is OpenMetrics.
pub async fn fetch(
    client: &HttpClient,
    url: &hyper::Uri,
    auth: Option<&str>,
    timeout: Duration,
    limit: usize,
) -> Result<(String, bool), ScrapeError> {
    let work = async {
        let mut req = hyper::Request::get(url.clone())
            .header(hyper::header::ACCEPT, ACCEPT)
            .header(hyper::header::ACCEPT_ENCODING, "gzip")
            .header(
                hyper::header::USER_AGENT,
                concat!("celeriac/", env!("CARGO_PKG_VERSION")),
            )
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", timeout.as_secs_f64()),
            );
        if let Some(a) = auth {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| ScrapeError::Connect(e.to_string()))?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| ScrapeError::Connect(error_chain(&e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(ScrapeError::Status(status));
        }
        let headers = resp.headers();
        let om = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/openmetrics-text"));
        let gzip = headers
            .get(hyper::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        if let Some(len) = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if len > limit {
                return Err(ScrapeError::TooLarge(limit));
            }
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ScrapeError::Body(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(ScrapeError::TooLarge(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        let bytes = if gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&buf[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ScrapeError::Body(format!("gzip: {e}")))?;
            if out.len() > limit {
                return Err(ScrapeError::TooLarge(limit));
            }
            out
        } else {
            buf
        };
        let text = String::from_utf8(bytes).map_err(|_| ScrapeError::Encoding)?;
        Ok((text, om))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Timeout(timeout)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
