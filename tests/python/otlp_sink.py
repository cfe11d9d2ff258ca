"""A small OTLP/gRPC receiver for celeriac's tests, built on a different stack than celeriac:
grpcio + the generated services of the PyPI `opentelemetry-proto` package.

Usage:
  otlp_sink.py --port P --out FILE [--fail-first N] [--partial-reject N] [--delay-ms N]

Implements TraceService, MetricsService and LogsService `Export`. Every request that is accepted
is appended to FILE as one JSON line: {"signal": "traces"|"metrics"|"logs", "request": <the
Export*ServiceRequest as proto3 JSON (google.protobuf.json_format, field names as in the .proto),
"metadata": {lower-case key: value}, "compression": grpc-encoding header or ""}.
`--fail-first N` answers UNAVAILABLE to the first N Export calls (any signal) without recording
them. `--delay-ms N` holds every accepted call N ms (calls are served one at a time), so the sink takes at
most 1000/N calls per second: a slow backend. `--partial-reject N` answers every accepted traces call with partial_success
{rejected_spans: N, error_message: "test rejection"}.
Prints "listening on P" on stdout once the port is bound.
"""
import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink:
    def __init__(self, path, fail_first, partial_reject, delay_ms=0):
        self.delay = delay_ms / 1000.0
        self.lock = threading.Lock()
        self.out = open(path, 'a', buffering=1)
        self.fail_left = fail_first
        self.partial_reject = partial_reject

    def handle(self, signal, request, context):
        with self.lock:
            if self.fail_left > 0:
                self.fail_left -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, 'otlp_sink: told to fail')
            md = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
            line = {
                'signal': signal,
                'request': json_format.MessageToDict(request, preserving_proto_field_name=True),
                'metadata': md,
                'compression': md.get('grpc-encoding', ''),
            }
            self.out.write(json.dumps(line, sort_keys=True) + '\n')
            self.out.flush()
            if self.delay:
                time.sleep(self.delay)


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.handle('traces', request, context)
        resp = trace_service_pb2.ExportTraceServiceResponse()
        if self.sink.partial_reject:
            resp.partial_success.rejected_spans = self.sink.partial_reject
            resp.partial_success.error_message = 'test rejection'
        return resp


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.handle('metrics', request, context)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):
        self.sink.handle('logs', request, context)
        return logs_service_pb2.ExportLogsServiceResponse()


def main(argv):
    p = argparse.ArgumentParser(prog='otlp_sink.py')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--fail-first', type=int, default=0)
    p.add_argument('--partial-reject', type=int, default=0)
    p.add_argument('--delay-ms', type=int, default=0)
    args = p.parse_args(argv)
    sink = Sink(args.out, args.fail_first, args.partial_reject, args.delay_ms)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[('grpc.so_reuseport', 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(sink), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(sink), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(sink), server)
    if server.add_insecure_port('127.0.0.1:%d' % args.port) == 0:
        print('cannot bind 127.0.0.1:%d' % args.port, file=sys.stderr, flush=True)
        sys.exit(2)
    server.start()
    print('listening on %d' % args.port, flush=True)
    server.wait_for_termination()


if __name__ == '__main__':
    main(sys.argv[1:])
