"""Regenerates the bad-input corpus under tests/corpus/ (run from the repository root:
`python3 tests/corpus/make.py`). Each file is one input that celeriac must refuse with a
counted error and without harm; the file name says what is wrong with it.

envelopes/  payloads as they arrive on the celeryev pub/sub channels
otlp/       OTLP/HTTP request bodies for /v1/traces (suffix: .pb protobuf, .json JSON,
            .gz gzip-compressed protobuf)
"""
import base64
import gzip
import json
import os

ROOT = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(ROOT, '..', 'fixtures')


def real_envelopes(name):
    with open(os.path.join(FIX, name)) as f:
        for line in f:
            rec = json.loads(line)
            if 'celeryev' in rec['channel']:
                yield rec['data']


def write(sub, name, data):
    os.makedirs(os.path.join(ROOT, sub), exist_ok=True)
    if isinstance(data, str):
        data = data.encode('utf-8', 'surrogatepass')
    with open(os.path.join(ROOT, sub, name), 'wb') as f:
        f.write(data)


def envelope(body, **over):
    env = {
        'body': body,
        'content-encoding': 'utf-8',
        'content-type': 'application/json',
        'headers': {'hostname': 'w1@host1'},
        'properties': {'delivery_mode': 1, 'body_encoding': 'base64',
                       'delivery_info': {'exchange': 'celeryev', 'routing_key': 'task.sent'},
                       'priority': 0, 'delivery_tag': 'x'},
    }
    env.update(over)
    return json.dumps(env)


def b64(obj):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.b64encode(raw).decode()


def main():
    real = next(real_envelopes('celery-events-redis.jsonl'))
    pickle = next(real_envelopes('celery-events-redis-pickle.jsonl'))
    e = 'envelopes'
    write(e, 'empty.bin', b'')
    write(e, 'truncated-envelope.json', real[: len(real) // 2])
    write(e, 'binary-garbage.bin', bytes(range(256)) * 4)
    write(e, 'json-array-not-object.json', '[1, 2, 3]')
    write(e, 'json-scalar.json', '"celery"')
    write(e, 'no-body.json', json.dumps({'properties': {'body_encoding': 'base64'}}))
    write(e, 'body-is-a-number.json', envelope(12345))
    write(e, 'body-not-base64.json', envelope('!!!not base64!!!'))
    write(e, 'base64-of-garbage.json', envelope(b64(b'\xff\xfe\x00garbage')))
    write(e, 'base64-of-truncated-json.json', envelope(b64(b'{"type": "task-sent", "uuid": "x')))
    write(e, 'pickle-serializer.json', pickle)
    write(e, 'msgpack-serializer.json',
          envelope(b64(b'\x82\xa4type\xa9task-sent'), **{'content-type': 'application/x-msgpack'}))
    write(e, 'yaml-serializer.json', envelope(b64(b'type: task-sent'),
                                               **{'content-type': 'application/x-yaml'}))
    write(e, 'event-without-type.json', envelope(b64({'uuid': 'u1', 'timestamp': 1.0})))
    write(e, 'event-type-not-a-string.json', envelope(b64({'type': 7, 'timestamp': 1.0})))
    write(e, 'task-event-without-uuid.json',
          envelope(b64({'type': 'task-started', 'hostname': 'w', 'timestamp': 1.0})))
    write(e, 'timestamp-is-a-string.json',
          envelope(b64({'type': 'task-sent', 'uuid': 'u2', 'timestamp': 'yesterday'})))
    write(e, 'deep-nesting.json', '[' * 100000 + ']' * 100000)
    write(e, 'deep-nesting-in-body.json', envelope(b64(('[' * 50000 + ']' * 50000).encode())))
    write(e, 'invalid-utf8-in-body.json',
          envelope(b64(b'{"type": "task-sent", "uuid": "\xff\xfe", "timestamp": 1.0}')))
    write(e, 'headers-not-an-object.json', envelope(b64({'type': 'worker-heartbeat'}), headers=[1]))
    write(e, 'properties-not-an-object.json', envelope(b64({'type': 'worker-heartbeat'}),
                                                       properties='base64'))
    write(e, 'lone-surrogate-escape.json',
          envelope(b64(b'{"type": "task-sent", "uuid": "\\ud800", "timestamp": 1.0}')))
    write(e, 'huge-number.json',
          envelope(b64(b'{"type": "task-succeeded", "uuid": "u3", "runtime": 1e999999, "timestamp": 1.0}')))
    write(e, 'list-of-garbage-events.json', envelope(b64([1, 'x', None, {'type': None}])))

    o = 'otlp'
    write(o, 'empty-json.json', b'')
    write(o, 'truncated-protobuf.pb', bytes.fromhex('0a8001'))  # field 1, length 128, no bytes
    write(o, 'length-claims-2gib.pb', bytes.fromhex('0affffffff07') + b'\x00' * 16)
    write(o, 'wrong-wire-type.pb', bytes.fromhex('0d01020304'))
    write(o, 'varint-overflow.pb', bytes.fromhex('08ffffffffffffffffffff01'))
    write(o, 'garbage.pb', bytes(range(255, -1, -1)) * 8)
    write(o, 'not-json.json', b'{"resourceSpans": [')
    write(o, 'json-wrong-types.json', json.dumps({'resourceSpans': 'nope'}))
    write(o, 'json-bad-trace-id.json', json.dumps({'resourceSpans': [{'scopeSpans': [{'spans': [
        {'traceId': 'not-hex', 'spanId': 'zz', 'name': 'x'}]}]}]}))
    write(o, 'json-deep-nesting.json', '{"resourceSpans": ' + '[' * 100000 + ']' * 100000 + '}')
    write(o, 'gzip-bomb.gz', gzip.compress(b'\x00' * (64 << 20), 9))
    whole = gzip.compress(bytes(range(256)) * 64, 9)
    write(o, 'gzip-truncated.gz', whole[: len(whole) // 2])
    write(o, 'gzip-of-garbage.gz', gzip.compress(bytes(range(256)) * 16))


if __name__ == '__main__':
    main()
