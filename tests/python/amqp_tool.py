"""Raw AMQP publishing for celeriac's RabbitMQ tests (py-amqp, the client Celery itself uses).

Usage: amqp_tool.py URL ACTION ...
  publish FILE        publish every `celeryev` JSON line of FILE (the shape of
                      shared/fixtures/celery-events-amqp.jsonl: exchange, routing_key,
                      content_type, content_encoding, headers, body text or body_b64) as is
  sent N NAME         publish N `task-sent` events (distinct uuids, task name NAME) to celeryev
  flood SECONDS NAME  publish `task-sent` events as fast as possible for SECONDS, reconnecting
                      (and counting) when the broker closes the connection
  hold QUEUE N K TS    declare QUEUE, publish N messages to it (AMQP `timestamp` property TS),
                      take K of them unacknowledged (prefetch K) and hold them until killed;
                      prints {"published": n, "held": k} once holding
Prints one JSON line: {"published": n, "reconnects": k}.
"""
import base64
import json
import sys
import time
import uuid
from urllib.parse import unquote, urlparse

import amqp


def connect(url):
    u = urlparse(url)
    vhost = unquote(u.path[1:]) if u.path and u.path != '/' else '/'
    conn = amqp.Connection(host='%s:%d' % (u.hostname, u.port or 5672),
                           userid=unquote(u.username or 'guest'),
                           password=unquote(u.password or 'guest'), virtual_host=vhost)
    conn.connect()
    ch = conn.channel()
    ch.exchange_declare('celeryev', 'topic', durable=True, auto_delete=False)
    return conn, ch


def publish(ch, exchange, routing_key, body, content_type, content_encoding, headers):
    msg = amqp.Message(body, content_type=content_type, content_encoding=content_encoding,
                       application_headers=headers or {}, delivery_mode=1)
    ch.basic_publish(msg, exchange=exchange, routing_key=routing_key)


def sent_event(name):
    return json.dumps({'type': 'task-sent', 'uuid': str(uuid.uuid4()), 'name': name,
                       'hostname': 'gen1@flood', 'timestamp': time.time(), 'clock': 1,
                       'utcoffset': 0, 'pid': 1, 'args': '()', 'kwargs': '{}',
                       'retries': 0, 'queue': 'celery'})


def main(argv):
    url, action = argv[0], argv[1]
    conn, ch = connect(url)
    published = reconnects = 0
    if action == 'publish':
        with open(argv[2]) as f:
            for line in f:
                m = json.loads(line)
                if m['exchange'] != 'celeryev':
                    continue  # e.g. captured pidbox traffic: not events
                body = base64.b64decode(m['body_b64']) if m.get('body_b64') else m['body']
                if isinstance(body, str):
                    body = body.encode('utf-8')
                publish(ch, m['exchange'], m['routing_key'], body, m.get('content_type'),
                        m.get('content_encoding'), m.get('headers'))
                published += 1
    elif action == 'sent':
        for _ in range(int(argv[2])):
            publish(ch, 'celeryev', 'task.sent', sent_event(argv[3]), 'application/json',
                    'utf-8', {'hostname': 'gen1@flood'})
            published += 1
    elif action == 'hold':
        queue, n, k, ts = argv[2], int(argv[3]), int(argv[4]), int(argv[5])
        ch.queue_declare(queue, durable=True, auto_delete=False)
        for i in range(n):
            ch.basic_publish(amqp.Message(json.dumps({'n': i}), content_type='application/json',
                                          timestamp=ts, delivery_mode=2),
                             exchange='', routing_key=queue)
        ch.basic_qos(0, k, False)
        held = []
        ch.basic_consume(queue, callback=held.append, no_ack=False)
        while len(held) < k:
            conn.drain_events(timeout=10)
        print(json.dumps({'published': n, 'held': len(held)}), flush=True)
        while True:
            try:
                conn.drain_events(timeout=1)
            except OSError:
                continue
    elif action == 'flood':
        end = time.time() + float(argv[2])
        while time.time() < end:
            try:
                publish(ch, 'celeryev', 'task.sent', sent_event(argv[3]), 'application/json',
                        'utf-8', {'hostname': 'gen1@flood'})
                published += 1
                if published % 200 == 0:
                    conn.drain_events(timeout=0)
            except (OSError, amqp.exceptions.AMQPError) as exc:
                if isinstance(exc, OSError) and 'timed out' in str(exc):
                    continue
                reconnects += 1
                time.sleep(0.2)
                try:
                    conn, ch = connect(url)
                except Exception:
                    pass
    conn.close()
    print(json.dumps({'published': published, 'reconnects': reconnects}), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
