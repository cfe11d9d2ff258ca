//! A minimal HTTP/1.1 server for the agent's GET endpoints (`/metrics`, `/healthz`, the
//! `prometheus` exporter's scrape page). Each connection is served on its own task; the listener
//! stops accepting when the shutdown token is cancelled.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A response: status, content type, body.
pub type Reply = (StatusCode, &'static str, Bytes);

/// Serve `handler(method, path)` on `listener` until `shutdown` is cancelled.
pub async fn serve<F>(listener: TcpListener, handler: F, shutdown: CancellationToken)
where
    F: Fn(&hyper::Method, &str) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    accept_until(&listener, &shutdown, "HTTP", |stream| {
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (status, ctype, body) = handler(req.method(), req.uri().path());
                let resp = Response::builder()
                    .status(status)
                    .header("content-type", ctype)
                    .body(Full::new(body))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    })
    .await;
}

/// Accept connections on `listener` until `shutdown` is cancelled, handing each to `serve`
/// (which spawns the connection's task). An accept error (e.g. out of file descriptors) is
/// logged and retried after a short pause instead of ending the server. `what` names the
/// server in the log.
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
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}
