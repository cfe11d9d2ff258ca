"""Client side of celeriac's end-to-end tests: submits shopapp tasks and prints ONE JSON line.

Usage (CELERY_BROKER_URL names the broker; PYTHONPATH must contain tests/python):
  client.py run_mix [--timeout S]        the mixed workload below, waits until every task is final
  client.py chain   [--wait S]           chain(a.s(2), b.s(), c.s())         -> ids [a, b, c]
  client.py fail    [--wait S]           send_receipt(2001) (raises)         -> ids [id]
  client.py retry   [--wait S]           sync_inventory('SKU-7') (2 retries) -> ids [id]
  client.py send TASK [JSON_ARGS] [--queue Q] [--countdown S] [--priority P] [--wait S]
  client.py fill_queue QUEUE N           N plain + N//2 priority messages to a queue nobody consumes

Waiting (run_mix, --wait) needs no result backend: before sending anything the client subscribes
to the broker's Celery events (Redis: PSUBSCRIBE *celeryev*, confirmed before the first send;
other brokers: a Celery event Receiver) and waits until every task id it submitted has a final
event (task-succeeded, task-failed or task-revoked).

run_mix output (all exact; `expected` is fixed, `observed` is what the client's own subscription saw):
  {"action": "run_mix",
   "ids": {"charge_card": [3 ids], "send_receipt": [2], "sync_inventory": [1],
           "chain": [a, b, c], "slow_report": [1], "charge_card_eta_revoked": [1]},
   "names": {task id: task name, ...},                        # all 11 task ids
   "expected": {EVENT: {TASK NAME: COUNT}},                    # EVENT = sent|received|started|
                                                               #   succeeded|failed|retried|revoked
   "expected_totals": {EVENT: COUNT}, "expected_final_states": {"SUCCESS": 7, "FAILURE": 2, "REVOKED": 2},
   "final_states": {task id: SUCCESS|FAILURE|REVOKED},         # as observed
   "observed": {EVENT: {TASK NAME: COUNT}}, "match": observed == expected, "elapsed": seconds}
The workload (11 task ids, 13 messages):
  slow_report('2026-Q3')              sent, received, started, then revoke(terminate=True, SIGTERM)
                                      once its task-started is seen -> revoked          REVOKED
  charge_card(1099, 5.0, countdown=3) sent, received (ETA), revoke() once received
                                      -> revoked at its ETA, never started              REVOKED
  charge_card(1001..1003)             sent, received, started, succeeded               SUCCESS x3
  send_receipt(1001..1002)            sent, received, started, failed                  FAILURE x2
  sync_inventory('SKU-42')            3x (sent, received, started), 2x retried, 1x succeeded  SUCCESS
  chain(a.s(2), b.s(), c.s())         each: sent, received, started, succeeded         SUCCESS x3
  (b and c are sent by the worker's pool child, as are the 2 retry re-sends.)
So per name: sent/received = charge_card 4, send_receipt 2, sync_inventory 3, a 1, b 1, c 1,
slow_report 1 (13 each); started = 12; succeeded 7; failed 2; retried 2; revoked 2.
Celeriac's `celery_task_<event>_total{name=...}` counters should equal `expected` exactly.

fill_queue output:
  {"action": "fill_queue", "queue": Q, "sent": {"plain": N, "priority_5": ceil(N//2 / 2),
   "priority_9": floor(N//2 / 2)}, "keys": {redis key: LLEN, for Q and its priority keys},
   "expected_keys": {...}, "total": N + N//2, "ids": [...]}
  Redis priority keys (kombu default priority_steps [0, 3, 6, 9], separator "\\x06\\x16"):
  no priority -> "Q"; priority 5 -> "Q\\x06\\x163"; priority 9 -> "Q\\x06\\x169" (JSON "\\u0006\\u0016").
"""
import argparse
import base64
import json
import os
import sys
import threading
import time
from collections import defaultdict
from urllib.parse import urlparse

import shopapp
from celery import chain
from shopapp import app

FINAL = {'task-succeeded': 'SUCCESS', 'task-failed': 'FAILURE', 'task-revoked': 'REVOKED'}
EVENTS = ['sent', 'received', 'started', 'succeeded', 'failed', 'retried', 'revoked']


def broker_url():
    return app.conf.broker_url or os.environ.get('CELERY_BROKER_URL', '')


def is_redis(url):
    return url.split('://', 1)[0] in ('redis', 'rediss', 'unix', 'redis+socket')


class Watcher:
    """Records Celery task events from before the first send, from a thread."""

    def __init__(self):
        self.cond = threading.Condition()
        self.events = []
        self.error = None
        url = broker_url()
        if is_redis(url):
            import redis
            self._db = int((urlparse(url).path or '/0').lstrip('/') or 0)
            self._pubsub = redis.Redis.from_url(url).pubsub()
            self._pubsub.psubscribe('*celeryev*')
            deadline = time.time() + 10
            while True:  # the subscription is live once Redis confirms it
                msg = self._pubsub.get_message(timeout=1.0)
                if msg and msg['type'] == 'psubscribe':
                    break
                if time.time() > deadline:
                    raise RuntimeError('no PSUBSCRIBE confirmation from %s' % url)
            target = self._run_redis
        else:
            self._ready = threading.Event()
            target = self._run_receiver
        threading.Thread(target=target, daemon=True).start()
        if not is_redis(url) and not self._ready.wait(15):
            raise RuntimeError('event receiver did not start')

    def _run_redis(self):
        try:
            while True:
                msg = self._pubsub.get_message(timeout=1.0)
                if not msg or msg['type'] != 'pmessage':
                    continue
                channel = msg['channel'].decode()
                if channel.startswith('/') and not channel.startswith('/%d.' % self._db):
                    continue
                envelope = json.loads(msg['data'])
                body = envelope['body']
                if envelope.get('properties', {}).get('body_encoding') == 'base64':
                    body = base64.b64decode(body)
                decoded = json.loads(body)
                for event in decoded if isinstance(decoded, list) else [decoded]:
                    self._on(event)
        except Exception as exc:  # pragma: no cover - surfaced by wait()
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def _run_receiver(self):
        try:
            with app.connection_for_read() as conn:
                recv = app.events.Receiver(conn, handlers={'*': self._on})
                it = recv.itercapture(limit=None, timeout=None, wakeup=False)
                next(it)  # yields once the first event was consumed: the queue is live
                self._ready.set()
                for _ in it:  # every further event (each next() drains one)
                    pass
        except Exception as exc:  # pragma: no cover
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def _on(self, event):
        if not str(event.get('type', '')).startswith('task-'):
            return
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, pred, timeout, what):
        deadline = time.time() + timeout
        with self.cond:
            while not pred(self.events):
                if self.error is not None:
                    raise RuntimeError('event watcher failed: %r' % (self.error,))
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError('timed out after %ss waiting for %s' % (timeout, what))
                self.cond.wait(min(left, 0.5))

    def wait_event(self, uuid, type_, timeout):
        self.wait_for(lambda evs: any(e.get('uuid') == uuid and e['type'] == type_ for e in evs),
                      timeout, '%s of %s' % (type_, uuid))

    def wait_final(self, ids, timeout):
        ids = set(ids)
        self.wait_for(lambda evs: ids <= {e.get('uuid') for e in evs if e['type'] in FINAL},
                      timeout, 'final events of %d tasks' % len(ids))

    def summary(self, names):
        """(counts {event: {name: n}}, final state per id) for the task ids in `names`."""
        with self.cond:
            events = list(self.events)
        counts = defaultdict(lambda: defaultdict(int))
        finals = {}
        for e in events:
            uuid = e.get('uuid')
            if uuid not in names:
                continue
            kind = e['type'][len('task-'):]
            counts[kind][names[uuid]] += 1
            if e['type'] in FINAL and uuid not in finals:
                finals[uuid] = FINAL[e['type']]
        return {k: dict(v) for k, v in counts.items()}, finals


def run_mix(args):
    watcher = Watcher()
    t0 = time.time()
    ids = {}
    slow = shopapp.slow_report.delay('2026-Q3')
    eta = shopapp.charge_card.apply_async((1099, 5.0), countdown=3)
    ids['charge_card'] = [shopapp.charge_card.delay(1000 + i, 10.0 * i).id for i in (1, 2, 3)]
    ids['send_receipt'] = [shopapp.send_receipt.delay(1000 + i).id for i in (1, 2)]
    ids['sync_inventory'] = [shopapp.sync_inventory.delay('SKU-42').id]
    res = chain(shopapp.a.s(2), shopapp.b.s(), shopapp.c.s()).apply_async()
    ids['chain'] = [res.parent.parent.id, res.parent.id, res.id]
    ids['slow_report'] = [slow.id]
    ids['charge_card_eta_revoked'] = [eta.id]

    watcher.wait_event(slow.id, 'task-started', args.timeout)
    app.control.revoke(slow.id, terminate=True, signal='SIGTERM')
    watcher.wait_event(eta.id, 'task-received', args.timeout)
    app.control.revoke(eta.id)

    names = {}
    for kind, lst in ids.items():
        for i, uuid in enumerate(lst):
            names[uuid] = ('shop.' + 'abc'[i]) if kind == 'chain' else \
                'shop.' + kind.replace('_eta_revoked', '')
    watcher.wait_final(names, args.timeout)
    time.sleep(0.3)  # nothing more is expected; let stragglers in so `observed` would show them

    per_name_sent = {'shop.charge_card': 4, 'shop.send_receipt': 2, 'shop.sync_inventory': 3,
                     'shop.a': 1, 'shop.b': 1, 'shop.c': 1, 'shop.slow_report': 1}
    expected = {
        'sent': dict(per_name_sent),
        'received': dict(per_name_sent),
        'started': {'shop.charge_card': 3, 'shop.send_receipt': 2, 'shop.sync_inventory': 3,
                    'shop.a': 1, 'shop.b': 1, 'shop.c': 1, 'shop.slow_report': 1},
        'succeeded': {'shop.charge_card': 3, 'shop.sync_inventory': 1,
                      'shop.a': 1, 'shop.b': 1, 'shop.c': 1},
        'failed': {'shop.send_receipt': 2},
        'retried': {'shop.sync_inventory': 2},
        'revoked': {'shop.slow_report': 1, 'shop.charge_card': 1},
    }
    observed, finals = watcher.summary(names)
    for kind in EVENTS:
        observed.setdefault(kind, {})
    return {
        'action': 'run_mix',
        'ids': ids,
        'names': names,
        'expected': expected,
        'expected_totals': {k: sum(v.values()) for k, v in expected.items()},
        'expected_final_states': {'SUCCESS': 7, 'FAILURE': 2, 'REVOKED': 2},
        'final_states': finals,
        'observed': observed,
        'match': observed == expected,
        'elapsed': round(time.time() - t0, 3),
    }


def single(action, args):
    watcher = Watcher() if args.wait else None
    if action == 'chain':
        res = chain(shopapp.a.s(2), shopapp.b.s(), shopapp.c.s()).apply_async()
        ids = [res.parent.parent.id, res.parent.id, res.id]
        tnames = ['shop.a', 'shop.b', 'shop.c']
    elif action == 'fail':
        ids, tnames = [shopapp.send_receipt.delay(2001).id], ['shop.send_receipt']
    elif action == 'retry':
        ids, tnames = [shopapp.sync_inventory.delay('SKU-7').id], ['shop.sync_inventory']
    else:  # send
        targs = json.loads(args.json_args) if args.json_args else []
        opts = {k: v for k, v in (('queue', args.queue), ('countdown', args.countdown),
                                  ('priority', args.priority)) if v is not None}
        ids, tnames = [app.send_task(args.task, args=targs, **opts).id], [args.task]
    out = {'action': action, 'ids': ids, 'names': dict(zip(ids, tnames))}
    if watcher:
        watcher.wait_final(ids, args.wait)
        observed, finals = watcher.summary(out['names'])
        out.update(observed=observed, final_states=finals)
    return out


def fill_queue(args):
    q, n = args.queue, args.n
    if not is_redis(broker_url()):
        # AMQP: one queue whatever the priority; RabbitMQ counts the messages itself.
        ids = [shopapp.charge_card.apply_async((i, 1.0), queue=q).id for i in range(n)]
        return {'action': 'fill_queue', 'queue': q, 'total': n, 'ids': ids}
    import redis
    m = n // 2
    sent = {'plain': n, 'priority_5': (m + 1) // 2, 'priority_9': m // 2}
    ids = [shopapp.charge_card.apply_async((i, 1.0), queue=q).id for i in range(n)]
    for i in range(m):
        ids.append(shopapp.charge_card.apply_async((n + i, 1.0), queue=q,
                                                   priority=5 if i % 2 == 0 else 9).id)
    sep = '\x06\x16'
    expected = {q: sent['plain']}
    if sent['priority_5']:
        expected[q + sep + '3'] = sent['priority_5']
    if sent['priority_9']:
        expected[q + sep + '9'] = sent['priority_9']
    r = redis.Redis.from_url(broker_url())
    keys = {}
    for key in [q] + [q + sep + s for s in ('3', '6', '9')]:
        length = r.llen(key)
        if length:
            keys[key] = length
    return {'action': 'fill_queue', 'queue': q, 'sent': sent, 'keys': keys,
            'expected_keys': expected, 'total': n + m, 'ids': ids}


def main(argv):
    p = argparse.ArgumentParser(prog='client.py')
    sub = p.add_subparsers(dest='action', required=True)
    mix = sub.add_parser('run_mix')
    mix.add_argument('--timeout', type=float, default=60.0)
    for name in ('chain', 'fail', 'retry'):
        sp = sub.add_parser(name)
        sp.add_argument('--wait', type=float, default=0.0, help='wait up to S seconds for the end')
    send = sub.add_parser('send')
    send.add_argument('task')
    send.add_argument('json_args', nargs='?')
    send.add_argument('--queue')
    send.add_argument('--countdown', type=float)
    send.add_argument('--priority', type=int)
    send.add_argument('--wait', type=float, default=0.0)
    fill = sub.add_parser('fill_queue')
    fill.add_argument('queue')
    fill.add_argument('n', type=int)
    args = p.parse_args(argv)

    if shopapp.otel_enabled():
        shopapp.init_otel('shopapp-client')
    try:
        if args.action == 'run_mix':
            out = run_mix(args)
        elif args.action == 'fill_queue':
            out = fill_queue(args)
        else:
            out = single(args.action, args)
    finally:
        shopapp.flush_otel()
    print(json.dumps(out, sort_keys=True), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
