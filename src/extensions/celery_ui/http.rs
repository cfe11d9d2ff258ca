//! HTTP plumbing of the dashboard: responses with the security headers every answer carries,
//! the CSRF check of writes, query-string decoding, constant-time comparison of credentials, and
//! the body of the server-sent event stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context as TaskCx, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value as Json};

pub type Body = BoxBody<Bytes, Infallible>;

pub(super) fn full(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if ctype.starts_with("text/html") {
        // Defence in depth: even escaped output may only load this server's own script.
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
    }
    r
}

pub(super) fn json_reply(status: StatusCode, v: &Json) -> Response<Body> {
    full(status, "application/json; charset=UTF-8", v.to_string())
}

pub(super) fn json_error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json_reply(status, &json!({ "error": msg.into() }))
}

/// Bytes of a control request's body read at most.
pub(super) const MAX_POST_BODY: usize = 64 * 1024;

/// CSRF: a browser names the page a request comes from (`Origin`, `Sec-Fetch-Site`); a write
/// from another origin is refused whatever credentials the browser attached (it re-sends basic
/// auth on its own). Clients that are not browsers send neither header.
pub(super) fn same_origin(req: &Request<Incoming>) -> Result<(), String> {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(format!(
                "Cross-site request refused (Sec-Fetch-Site: {site})"
            ));
        }
    }
    let Some(origin) = h.get("origin") else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = h
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    if origin_host.is_empty() || host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
        return Err(format!("Cross-origin request refused (Origin: {origin})"));
    }
    Ok(())
}

/// `a=1&b=x%20y` → pairs, `+` as space.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn truthy(v: &str) -> bool {
    // Tornado's `type=bool` is Python's bool(str): any non-empty value.
    !v.is_empty()
}

/// Constant-time equality (basic-auth credentials), so response times do not reveal how much
/// of a secret matched.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A response body fed by the stream task; ends when the task drops its sender.
pub(super) struct SseBody(pub(super) tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        assert_eq!(
            query_pairs("state=SUCCESS&received_start=2026-11-25+10%3A00&x"),
            vec![
                ("state".to_string(), "SUCCESS".to_string()),
                ("received_start".to_string(), "2026-11-25 10:00".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
