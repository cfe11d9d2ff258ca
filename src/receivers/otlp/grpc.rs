//! OTLP/gRPC front end: the three `Export` calls behind one HTTP/2 server ([`crate::serve`]),
//! routed by path without a router framework. tonic frames them (gzip, size limit) and hands
//! over each request's bytes, which [`Ingest::protobuf`] forwards as they are or decodes. The bearer token is checked on
//! the HTTP request before tonic sees it: an unauthenticated client gets `UNAUTHENTICATED`
//! whatever its body, and makes the agent decompress and decode nothing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
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
    ///
    /// The body's first frame is read here, before tonic: its gRPC message header gives the
    /// message's length, and tonic's receive buffer is made that size (see [`BodyCodec`]).
    async fn export<R: Message + Default + Send + 'static>(
        &self,
        kind: SignalKind,
        max_msg: usize,
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<tonic::body::Body> {
        let (parts, mut body) = req.into_parts();
        let mut first: VecDeque<_> = body.frame().await.into_iter().collect();
        let mut len = None;
        if let Some(data) = first.front_mut().and_then(|f| f.as_mut().ok()?.data_mut()) {
            if let Some(n) = message_len(data) {
                len = Some((n, data.split_to(GRPC_HEADER)));
            }
        }
        // The header as a frame of its own: tonic reads it, then reserves room for the message
        // beyond what it holds, which the buffer made for the message then has.
        let len = len.map(|(n, header)| {
            first.push_front(Ok(Frame::data(header)));
            n
        });
        let req = hyper::Request::from_parts(parts, Replay { first, rest: body });
        let codec = BodyCodec::<R> {
            // Never more than the largest message accepted: tonic refuses a longer one
            // itself, after this buffer is made.
            buffer: len.map_or(MIN_BUFFER, |n| n.min(max_msg) + GRPC_HEADER),
            reply: PhantomData,
        };
        let mut grpc = tonic::server::Grpc::new(codec)
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

/// The gRPC message header: the compressed flag and the message's length.
const GRPC_HEADER: usize = 5;
/// tonic's default receive buffer, for a request whose first frame does not give its length.
const MIN_BUFFER: usize = 8 << 10;
/// tonic's default yield threshold (it applies to what tonic sends).
const YIELD_THRESHOLD: usize = 32 << 10;

/// The length in the gRPC message header at the start of a request body.
fn message_len(data: &Bytes) -> Option<usize> {
    let h = data.get(..GRPC_HEADER)?;
    Some(u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize)
}

/// A request body whose first frames were already read, then the rest.
struct Replay {
    first: VecDeque<Result<Frame<Bytes>, hyper::Error>>,
    rest: Incoming,
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match this.first.pop_front() {
            Some(f) => Poll::Ready(Some(f)),
            None => Pin::new(&mut this.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_empty() && self.rest.is_end_stream()
    }
}

/// Reads a request message as its bytes; writes the typed reply.
///
/// tonic copies a request's frames into a receive buffer of the decoder's `buffer_size`
/// (8 KiB by default), growing it by reallocation as frames arrive: for a 27 KB request of
/// 100 spans the growth copied nearly as much again as the frames themselves. Made the
/// message's size, the buffer is allocated once and the message taken out of it without a
/// copy; a forwarded batch keeps that buffer (exactly the message) until it is sent.
struct BodyCodec<R> {
    buffer: usize,
    reply: PhantomData<fn() -> R>,
}

impl<R: Message + Send + 'static> Codec for BodyCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ReplyEncoder<R>;
    type Decoder = BodyDecoder;

    fn encoder(&mut self) -> ReplyEncoder<R> {
        ReplyEncoder(PhantomData)
    }

    fn decoder(&mut self) -> BodyDecoder {
        BodyDecoder {
            buffer: self.buffer,
        }
    }
}

struct BodyDecoder {
    buffer: usize,
}

impl Decoder for BodyDecoder {
    type Item = Bytes;
    type Error = Status;

    /// The message out of tonic's buffer, not copied (`BytesMut::split_to`).
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(self.buffer, YIELD_THRESHOLD)
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
