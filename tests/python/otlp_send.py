"""Send spans to an OTLP endpoint with the real OpenTelemetry Python SDK and exporters.

Usage: otlp_send.py grpc|http ENDPOINT N [--token T] [--ca CA.pem [--cert C.pem --key K.pem]]
With --ca the connection is TLS (gRPC: ENDPOINT is host:port; HTTP: an https:// URL), with
--cert/--key the client presents a certificate (mutual TLS).
Prints one JSON line: {"trace_ids": [...], "span_ids": [...], "names": [...]} (hex ids).
"""
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def main():
    proto, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def opt(name):
        return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None

    headers = {}
    if opt("--token"):
        headers["authorization"] = "Bearer " + opt("--token")
    ca, cert, key = opt("--ca"), opt("--cert"), opt("--key")
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if ca:
            import grpc

            def read(path):
                with open(path, "rb") as f:
                    return f.read()

            creds = grpc.ssl_channel_credentials(
                root_certificates=read(ca),
                private_key=read(key) if key else None,
                certificate_chain=read(cert) if cert else None,
            )
            exporter = OTLPSpanExporter(
                endpoint=endpoint, insecure=False, credentials=creds, headers=headers or None
            )
        else:
            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers or None)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=endpoint + "/v1/traces",
            headers=headers or None,
            certificate_file=ca,
            client_certificate_file=cert,
            client_key_file=key,
        )
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
