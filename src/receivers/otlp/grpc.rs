//! OTLP/gRPC front end: the three `Export` calls behind one HTTP/2 server ([`crate::serve`]),
//! routed by path without a router framework. tonic frames them (gzip, size limit) and hands
//! over each request's bytes, which [`Ingest::protobuf`] forwards as they are or decodes. The bearer token is checked on
//! the HTTP request before tonic sees it: an unauthenticated client gets `UNAUTHENTICATED`
//! whatever its body, and makes the agent decompress and decode nothing.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{handshake, Ingest, Refusal};
use crate::serve::{Protocol, ServerSettings};
use crate::signal::{Signal, SignalKind};
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

/// The `Export` call of one signal: tonic reads the gRPC frame (decompressing, checking the
/// size) and hands its body over as bytes; [`Ingest::protobuf`] forwards or decodes them.
struct Export<R> {
    otlp: Otlp,
    kind: SignalKind,
    reply: PhantomData<fn() -> R>,
}

impl<R: Default> tonic::server::UnaryService<Bytes> for Export<R> {
    type Response = R;
    type Future = std::future::Ready<Result<Response<R>, Status>>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let signal = self
            .otlp
            .ingest
            .protobuf(self.kind, req.get_ref().clone())
            // INTERNAL, as tonic answers a body its codec cannot decode.
            .map_err(|e| Status::internal(e.to_string()));
        std::future::ready(
            signal
                .and_then(|s| self.otlp.push(&req, s))
                .map(|()| Response::new(R::default())),
        )
    }
}

impl Otlp {
    /// Serve one `Export` call of `kind`, replying with an empty `R` (full success).
    async fn export<R: Message + Default + Send + 'static>(
        &self,
        kind: SignalKind,
        max_msg: usize,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<tonic::body::Body> {
        let mut grpc = tonic::server::Grpc::new(BodyCodec::<R>(PhantomData))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_msg);
        let export = Export::<R> {
            otlp: self.clone(),
            kind,
            reply: PhantomData,
        };
        grpc.unary(export, req).await
    }
}

/// Reads a request message as its bytes; writes the typed reply.
struct BodyCodec<R>(PhantomData<fn() -> R>);

impl<R: Message + Send + 'static> Codec for BodyCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ReplyEncoder<R>;
    type Decoder = BodyDecoder;

    fn encoder(&mut self) -> ReplyEncoder<R> {
        ReplyEncoder(PhantomData)
    }

    fn decoder(&mut self) -> BodyDecoder {
        BodyDecoder
    }
}

struct BodyDecoder;

impl Decoder for BodyDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

struct ReplyEncoder<R>(PhantomData<fn(R)>);

impl<R: Message> Encoder for ReplyEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the reply: {e}")))
    }
}

const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

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
    let otlp = Otlp {
        ingest: ingest.clone(),
    };
    let counting = ingest.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (otlp, ingest) = (otlp.clone(), counting.clone());
        async move {
            let mut req = req;
            req.extensions_mut().insert(Arrived(Instant::now()));
            if !admitted(&ingest, &req) {
                ingest.refuse("grpc", "unauthenticated");
                let st = Status::unauthenticated("missing or wrong bearer token");
                return Ok::<_, Infallible>(st.into_http());
            }
            let path = req.uri().path();
            let resp = match path {
                TRACES => {
                    otlp.export::<ExportTraceServiceResponse>(SignalKind::Traces, max_msg, req)
                        .await
                }
                METRICS => {
                    otlp.export::<ExportMetricsServiceResponse>(SignalKind::Metrics, max_msg, req)
                        .await
                }
                LOGS => {
                    otlp.export::<ExportLogsServiceResponse>(SignalKind::Logs, max_msg, req)
                        .await
                }
                _ => Status::unimplemented(format!("unknown method {path}")).into_http(),
            };
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
