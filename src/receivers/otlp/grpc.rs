//! OTLP/gRPC front end: the three generated tonic services behind one HTTP/2 server, routed by
//! path without a router framework.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{handshake, Ingest, Refusal};
use crate::signal::Signal;
use crate::tls::Acceptor;

#[derive(Clone)]
struct Otlp {
    ingest: Arc<Ingest>,
}

impl Otlp {
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let auth = req.metadata().get("authorization").map(|v| v.as_bytes());
        if self.ingest.authorized(auth) {
            Ok(())
        } else {
            self.ingest.refuse("grpc", "unauthenticated");
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }

    fn push(&self, signal: Signal) -> Result<(), Status> {
        if signal.is_empty() {
            return Ok(());
        }
        self.ingest.push(signal).map_err(|r| match r {
            Refusal::Full => {
                self.ingest.refuse("grpc", "pipeline_full");
                Status::unavailable("celeriac's pipeline is full; retry with backoff")
            }
            Refusal::NoPipeline => {
                self.ingest.refuse("grpc", "no_pipeline");
                Status::unimplemented("no pipeline takes this signal from this receiver")
            }
            Refusal::Closed => Status::unavailable("celeriac is shutting down"),
        })
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.admit(&req)?;
        self.push(Signal::Traces(Arc::new(req.into_inner().resource_spans)))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.admit(&req)?;
        self.push(Signal::Metrics(Arc::new(req.into_inner().resource_metrics)))?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.admit(&req)?;
        self.push(Signal::Logs(Arc::new(req.into_inner().resource_logs)))?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/";
const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/";
const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/";

/// tonic refuses undecodable and oversized messages itself, before our handlers run: count those
/// answers here (a trailers-only response carries `grpc-status` in its headers). The codes our
/// handlers produce (UNAUTHENTICATED, UNAVAILABLE, UNIMPLEMENTED) are counted where they arise.
fn count_codec_refusal<B>(ingest: &Ingest, resp: &hyper::Response<B>) {
    match resp.headers().get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"13") | Some(b"3") => ingest.refuse("grpc", "corrupt"),
        Some(b"8") | Some(b"11") => ingest.refuse("grpc", "too_large"),
        _ => {}
    }
}

pub async fn serve(
    listener: TcpListener,
    tls: Acceptor,
    ingest: Arc<Ingest>,
    max_msg: usize,
    shutdown: CancellationToken,
) {
    let svc = Arc::new(Otlp {
        ingest: ingest.clone(),
    });
    let traces = TraceServiceServer::from_arc(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_msg);
    let metrics = MetricsServiceServer::from_arc(svc.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_msg);
    let logs = LogsServiceServer::from_arc(svc)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_msg);
    crate::telemetry::accept_until(&listener, &shutdown, "OTLP/gRPC", |stream| {
        let (traces, metrics, logs) = (traces.clone(), metrics.clone(), logs.clone());
        let (tls, ingest, shutdown) = (tls.clone(), ingest.clone(), shutdown.clone());
        tokio::spawn(async move {
            let Some(stream) = handshake(&tls, stream, &ingest, "grpc").await else {
                return;
            };
            let counting = ingest.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (mut t, mut m, mut l) = (traces.clone(), metrics.clone(), logs.clone());
                let ingest = counting.clone();
                async move {
                    use tonic::codegen::Service;
                    let path = req.uri().path();
                    let resp = if path.starts_with(TRACES) {
                        t.call(req).await
                    } else if path.starts_with(METRICS) {
                        m.call(req).await
                    } else if path.starts_with(LOGS) {
                        l.call(req).await
                    } else {
                        Ok(Status::unimplemented(format!("unknown service {path}")).into_http())
                    };
                    let resp = resp.unwrap_or_else(|e: Infallible| match e {});
                    count_codec_refusal(&ingest, &resp);
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service);
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
