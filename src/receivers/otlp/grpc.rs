//! OTLP/gRPC front end: the three generated tonic services behind one HTTP/2 server
//! ([`crate::serve`]), routed by path without a router framework. The bearer token is checked on
//! the HTTP request before tonic sees it: an unauthenticated client gets `UNAUTHENTICATED`
//! whatever its body, and makes the agent decompress and decode nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
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
use crate::serve::{Protocol, ServerSettings};
use crate::signal::Signal;
use crate::tls::Acceptor;

#[derive(Clone)]
struct Otlp {
    ingest: Arc<Ingest>,
}

/// When a request's headers arrived, before tonic read and decoded its body: where the pipeline
/// latency starts.
#[derive(Clone, Copy)]
struct Arrived(Instant);

impl Otlp {
    fn push<T>(&self, req: &Request<T>, signal: Signal) -> Result<(), Status> {
        if signal.is_empty() {
            return Ok(());
        }
        let arrived = req
            .extensions()
            .get::<Arrived>()
            .map_or_else(Instant::now, |a| a.0);
        self.ingest.push(signal, arrived).map_err(|r| match r {
            Refusal::Full => {
                self.ingest.refuse("grpc", "pipeline_full");
                Status::unavailable("celeriac's pipeline is full; retry with backoff")
            }
            Refusal::MemoryLimit => {
                self.ingest.refuse("grpc", "memory_limit");
                Status::unavailable("celeriac is over its memory limit; retry with backoff")
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
        mut req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let data = std::mem::take(&mut req.get_mut().resource_spans);
        self.push(&req, Signal::Traces(Arc::new(data)))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        mut req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let data = std::mem::take(&mut req.get_mut().resource_metrics);
        self.push(&req, Signal::Metrics(Arc::new(data)))?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        mut req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let data = std::mem::take(&mut req.get_mut().resource_logs);
        self.push(&req, Signal::Logs(Arc::new(data)))?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/";
const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/";
const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/";

/// tonic refuses undecodable and oversized messages itself, before our handlers run: count those
/// answers here (a trailers-only response carries `grpc-status` in its headers). The codes we
/// produce (UNAUTHENTICATED, UNAVAILABLE, UNIMPLEMENTED) are counted where they arise.
fn count_codec_refusal<B>(ingest: &Ingest, resp: &hyper::Response<B>) {
    match resp.headers().get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"13") | Some(b"3") => ingest.refuse("grpc", "corrupt"),
        Some(b"8") | Some(b"11") => ingest.refuse("grpc", "too_large"),
        _ => {}
    }
}

/// `true` when the request may go on to tonic: checked on the HTTP request, before tonic
/// decompresses or decodes a byte of the body.
fn admitted(ingest: &Ingest, req: &hyper::Request<Incoming>) -> bool {
    ingest.authorized(req.headers().get("authorization").map(|v| v.as_bytes()))
}

pub async fn serve(
    listener: TcpListener,
    tls: Acceptor,
    ingest: Arc<Ingest>,
    max_msg: usize,
    settings: ServerSettings,
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
    let counting = ingest.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (mut t, mut m, mut l) = (traces.clone(), metrics.clone(), logs.clone());
        let ingest = counting.clone();
        async move {
            use tonic::codegen::Service;
            let mut req = req;
            req.extensions_mut().insert(Arrived(Instant::now()));
            if !admitted(&ingest, &req) {
                ingest.refuse("grpc", "unauthenticated");
                let st = Status::unauthenticated("missing or wrong bearer token");
                return Ok::<_, Infallible>(st.into_http());
            }
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
    let handshake = move |stream| {
        let (tls, ingest) = (tls.clone(), ingest.clone());
        async move { handshake(&tls, stream, &ingest, "grpc").await }
    };
    crate::serve::serve_with(
        "OTLP/gRPC",
        listener,
        settings,
        Protocol::Http2,
        shutdown,
        handshake,
        service,
    )
    .await;
}
