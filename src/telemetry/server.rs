//! A minimal HTTP/1.1 server for the agent's GET endpoints (`/metrics`, `/healthz`, the
//! `prometheus` exporter's scrape page), served by [`crate::serve`] with its default limits. With a bearer token, every path but
//! `/healthz` answers 401 unless the request carries `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::sync::Arc;

use crate::serve::{Protocol, ServerSettings};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A response: status, content type, body.
pub type Reply = (StatusCode, &'static str, Bytes);

/// Serve `handler(method, path)` on `listener` until `shutdown` is cancelled.
pub async fn serve<F>(listener: TcpListener, handler: F, shutdown: CancellationToken)
where
    F: Fn(&hyper::Method, &str) -> Reply + Send + Sync + 'static,
{
    serve_authorized(listener, None, handler, shutdown).await
}

/// [`serve`], requiring `Authorization: Bearer <bearer>` on every path but `/healthz` when
/// `bearer` is set.
pub async fn serve_authorized<F>(
    listener: TcpListener,
    bearer: Option<Arc<str>>,
    handler: F,
    shutdown: CancellationToken,
) where
    F: Fn(&hyper::Method, &str) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let svc = service_fn(move |req: Request<Incoming>| {
        let path = req.uri().path();
        let allowed = path == "/healthz"
            || bearer.as_deref().is_none_or(|token| {
                bearer_matches(
                    req.headers().get("authorization").map(|v| v.as_bytes()),
                    token,
                )
            });
        let resp = if allowed {
            let (status, ctype, body) = handler(req.method(), path);
            Response::builder()
                .status(status)
                .header("content-type", ctype)
                .body(Full::new(body))
        } else {
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("content-type", "text/plain; charset=utf-8")
                .header("www-authenticate", "Bearer")
                .body(Full::new(Bytes::from_static(
                    b"missing or wrong bearer token\n",
                )))
        }
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
        async move { Ok::<_, Infallible>(resp) }
    });
    crate::serve::serve(
        "HTTP",
        listener,
        ServerSettings::default(),
        Protocol::Http1,
        shutdown,
        svc,
    )
    .await
}

/// `true` when `header` (the raw `Authorization` value) is `Bearer <token>`, compared in
/// constant time.
pub fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    let Some(h) = header else { return false };
    let Some(presented) = h
        .strip_prefix(b"Bearer ")
        .or_else(|| h.strip_prefix(b"bearer "))
    else {
        return false;
    };
    let token = token.as_bytes();
    presented.len() == token.len()
        && presented
            .iter()
            .zip(token)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert!(bearer_matches(Some(b"Bearer abc"), "abc"));
        assert!(bearer_matches(Some(b"bearer abc"), "abc"));
        assert!(!bearer_matches(Some(b"Bearer abd"), "abc"));
        assert!(!bearer_matches(Some(b"Bearer abcd"), "abc"));
        assert!(!bearer_matches(Some(b"Basic abc"), "abc"));
        assert!(!bearer_matches(None, "abc"));
    }
}
