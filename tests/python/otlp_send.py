"""Send spans to an OTLP endpoint with the real OpenTelemetry Python SDK and exporters.

Usage: otlp_send.py grpc|http ENDPOINT N [--token T]
Prints one JSON line: {"trace_ids": [...], "span_ids": [...], "names": [...]} (hex ids).
"""
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def main():
    proto, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    headers = {}
    if "--token" in sys.argv:
        headers["authorization"] = "Bearer " + sys.argv[sys.argv.index("--token") + 1]
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers or None)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", headers=headers or None)
    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-send-" + proto}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("celeriac.tests")
    out = {"trace_ids": [], "span_ids": [], "names": []}
    for i in range(n):
        name = f"{proto}-span-{i}"
        with tracer.start_as_current_span(name) as span:
            span.set_attribute("test.index", i)
            ctx = span.get_span_context()
            out["trace_ids"].append(format(ctx.trace_id, "032x"))
            out["span_ids"].append(format(ctx.span_id, "016x"))
            out["names"].append(name)
    provider.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
