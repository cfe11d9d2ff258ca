"""Send raw bytes as OTLP/gRPC trace Export requests (no protobuf encoding on our side).

Usage: grpc_raw.py HOST:PORT FILE REPEAT [FILE REPEAT ...]
Each FILE's bytes are sent REPEAT times as the request message. Prints one JSON line:
{"codes": {"<grpc status name>": count, ...}}
"""
import json
import sys

import grpc

METHOD = '/opentelemetry.proto.collector.trace.v1.TraceService/Export'


def main():
    target, rest = sys.argv[1], sys.argv[2:]
    codes = {}
    with grpc.insecure_channel(target, options=[('grpc.max_send_message_length', 64 << 20)]) as ch:
        call = ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        for path, repeat in zip(rest[::2], rest[1::2]):
            with open(path, 'rb') as f:
                body = f.read()
            for _ in range(int(repeat)):
                try:
                    call(body, timeout=10)
                    name = 'OK'
                except grpc.RpcError as e:
                    name = e.code().name
                codes[name] = codes.get(name, 0) + 1
    print(json.dumps({'codes': codes}))


if __name__ == '__main__':
    main()
