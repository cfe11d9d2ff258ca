#!/usr/bin/env python3
"""Flood publisher for scripts/bench-e2e: Celery 5.7 events in their exact Redis wire format.

Standard library only. Envelopes are pre-encoded: every event's JSON is laid out so that its
variable parts (task uuid, root_id, timestamp) start at byte offsets divisible by 3, with JSON
whitespace as padding, so the base64 `body` of any message is the concatenation of pre-encoded
base64 pieces and the base64 of those fields. Per task: one `task-sent` on `/<db>.celeryev/task.sent`
(never batched, like Celery), then `task-received`, `task-started` and `task-succeeded` (or
`task-failed` with a real traceback, `--fail` percent of tasks) buffered per worker and published as
`task.multi` JSON lists of `--batch` events (Celery's worker buffer; it flushes at 24 or on the next
loop tick). Every worker sends `worker-online` first and a `worker-heartbeat` every 2 s
(`processed` = tasks it has started). Messages go out as pipelined PUBLISH commands on one raw
socket, rate-controlled in events/s (`--rate 0`: as fast as possible). Replies are read back and
PUBLISHes that reached no subscriber are counted (`unheard`).

Modes:
  flood (default): prints one JSON object: events (task events published), messages, tasks,
                   seconds, rate, unheard.
  --probe URL:     latency probe. Every --interval s publishes one `task-sent` for task name
                   `bench.probe` (on its own connection, so it queues behind whatever the flood has
                   already published) and polls the Prometheus page at URL every --poll s until
                   `celery_task_sent_total{name="bench.probe"}` counts it. Prints the latencies'
                   p50/p90/p99/max in ms (publish -> visible on the scrape).
"""

import argparse
import base64
import json
import os
import socket
import sys
import time
import urllib.request

B64 = base64.b64encode

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/shop/.venv/lib/python3.11/site-packages/celery/app/trace.py", line 564, in trace_task\n'
    "    R = retval = fun(*args, **kwargs)\n"
    "                 ^^^^^^^^^^^^^^^^^^^^\n"
    '  File "/srv/shop/.venv/lib/python3.11/site-packages/celery/app/trace.py", line 883, in __protected_call__\n'
    "    return self.run(*args, **kwargs)\n"
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    '  File "/srv/shop/shopapp.py", line 41, in send_receipt\n'
    "    raise ValueError(f'no email on file for order {order_id}')\n"
    "ValueError: no email on file for order 1001\n"
)

UUID_SLOT = "U" * 36
TS_SLOT = "T" * 18


def ts_text(t=None):
    """18 characters, like Celery's time.time() floats (`1795606961.3697007`)."""
    return ("%.7f" % (time.time() if t is None else t)).encode()[:18]


def chunk_template(ev, terminator):
    """Pieces of one event's JSON text: fixed text pre-encoded in base64, and slots 'U'/'T'.

    `ev` holds UUID_SLOT for the uuid (and root_id) and TS_SLOT for the timestamp."""
    text = json.dumps(ev, separators=(", ", ": "))
    text = text.replace('"%s"' % TS_SLOT, TS_SLOT)  # the timestamp is a bare number
    out = []
    while True:
        iu, it = text.find(UUID_SLOT), text.find(TS_SLOT)
        cands = [(i, s) for i, s in ((iu, "U"), (it, "T")) if i >= 0]
        if not cands:
            break
        i, slot = min(cands)
        pad = (-i) % 3
        # Whitespace before the value's opening quote (uuid) or before the number (timestamp).
        at = i - 1 if slot == "U" else i
        text = text[:at] + " " * pad + text[at:]
        i += pad
        out.append(text[:i])
        out.append(slot)
        text = text[i + (36 if slot == "U" else 18):]
    text += terminator
    text += " " * ((-len(text)) % 3)
    out.append(text)
    pieces = []
    for p in out:
        if p in ("U", "T"):
            pieces.append(p)
        else:
            assert len(p.encode()) % 3 == 0, p
            pieces.append(B64(p.encode()))
    return pieces


def envelope_parts(routing_key, hostname, tag):
    prefix = b'{"body": "'
    rest = {
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": hostname},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": tag,
        },
    }
    suffix = b'", ' + json.dumps(rest)[1:].encode()
    return prefix, suffix


def resp_publish(channel, payload):
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel, len(payload), payload)


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.replies = 0
        self.unheard = 0
        self.tail = b""

    def send(self, data):
        self.s.sendall(data)
        self.drain(block=False)

    def drain(self, block, want=None):
        """Read replies (integers: receivers per PUBLISH); count the zeros."""
        self.s.setblocking(block)
        try:
            while True:
                if want is not None and self.replies >= want:
                    return
                try:
                    b = self.s.recv(1 << 20)
                except BlockingIOError:
                    return
                if not b:
                    raise SystemExit("redis closed the connection")
                data = self.tail + b
                cut = data.rfind(b"\r\n") + 2
                done, self.tail = data[:cut], data[cut:]
                self.replies += done.count(b"\r\n")
                self.unheard += done.count(b":0\r\n")
                if done.startswith(b"-") or b"\r\n-" in done:
                    raise SystemExit("redis error: %r" % done[:200])
        finally:
            self.s.setblocking(True)


class Flood:
    def __init__(self, a):
        self.a = a
        self.db = a.db
        self.ch_sent = b"/%d.celeryev/task.sent" % a.db
        self.ch_multi = b"/%d.celeryev/task.multi" % a.db
        self.ch_hb = b"/%d.celeryev/worker.heartbeat" % a.db
        self.ch_online = b"/%d.celeryev/worker.online" % a.db
        self.names = ["shop.task_%02d" % i for i in range(a.names)]
        self.workers = ["w%d@host%d" % (i + 1, i + 1) for i in range(a.workers)]
        self.sender = "gen%d@bench" % os.getpid()
        pid = 20000 + os.getpid() % 10000
        common = lambda host, clock: {"hostname": host, "utcoffset": 0.0, "pid": pid, "clock": clock}
        # task-sent per name: one template each (the name is fixed text).
        self.sent_env = envelope_parts("task.sent", self.sender, "b1e7bfd8-bba5-4f31-8cb6-d4e76f862f6d")
        self.sent_tpl = []
        for n in self.names:
            ev = dict(common(self.sender, 1), uuid=UUID_SLOT, root_id=UUID_SLOT, parent_id=None,
                      name=n, args="(1001, 42.5)", kwargs="{}", retries=0, eta=None, expires=None,
                      queue="celery", exchange="", routing_key="celery", timestamp=TS_SLOT,
                      type="task-sent")
            self.sent_tpl.append(chunk_template(ev, ""))
        # Worker events, per worker (hostname is fixed text) and name (received carries it).
        self.multi_env = []
        self.recv_tpl, self.start_tpl, self.ok_tpl, self.fail_tpl = [], [], [], []
        for w in self.workers:
            self.multi_env.append(envelope_parts("task.multi", w, "6bcca761-bd07-4fd1-a8f6-726429c934b9"))
            per = {}
            for term in (",", "]"):
                per[term] = (
                    [chunk_template(dict(common(w, 7), uuid=UUID_SLOT, name=n, args="(1001, 42.5)",
                                         kwargs="{}", root_id=UUID_SLOT, parent_id=None, retries=0,
                                         eta=None, expires=None, timestamp=TS_SLOT,
                                         type="task-received"), term) for n in self.names],
                    chunk_template(dict(common(w, 8), uuid=UUID_SLOT, timestamp=TS_SLOT,
                                        type="task-started"), term),
                    chunk_template(dict(common(w, 9), uuid=UUID_SLOT,
                                        result="{'order_id': 1001, 'charged': 42.5, 'currency': 'EUR'}",
                                        runtime=0.029946015000064108, timestamp=TS_SLOT,
                                        type="task-succeeded"), term),
                    chunk_template(dict(common(w, 12), uuid=UUID_SLOT,
                                        exception="ValueError('no email on file for order 1001')",
                                        traceback=TRACEBACK, timestamp=TS_SLOT,
                                        type="task-failed"), term),
                )
            self.recv_tpl.append({t: per[t][0] for t in per})
            self.start_tpl.append({t: per[t][1] for t in per})
            self.ok_tpl.append({t: per[t][2] for t in per})
            self.fail_tpl.append({t: per[t][3] for t in per})
        self.pid = pid
        self.processed = [0] * len(self.workers)
        self.clock = 100

    def worker_event(self, w, kind):
        self.clock += 1
        ev = {"hostname": self.workers[w], "utcoffset": 0.0, "pid": self.pid, "clock": self.clock,
              "freq": 2.0, "active": 2, "processed": self.processed[w],
              "loadavg": [0.61, 0.97, 0.54], "sw_ident": "py-celery", "sw_ver": "5.7.0",
              "sw_sys": "Linux", "timestamp": time.time(), "type": kind}
        body = B64(json.dumps(ev).encode())
        pre, suf = envelope_parts(kind.replace("-", "."), self.workers[w],
                                  "16b4eeec-3e8e-48f1-ba56-e12c700b4c02")
        ch = self.ch_online if kind == "worker-online" else self.ch_hb
        return resp_publish(ch, pre + body + suf)



def fmt(pieces):
    """Template pieces -> (bytes format with %s per slot, slot count)."""
    out, n = [], 0
    for p in pieces:
        if p in ("U", "T"):
            out.append(b"%s")
            n += 1
        else:
            out.append(p.replace(b"%", b"%%"))
    # Every template here has its slots in the order uuid[, root_id], timestamp.
    return b"".join(out), n


def run_flood(a):
    f = Flood(a)
    W = len(f.workers)
    T = (",", "]")
    names = len(f.names)
    # task-sent: the whole PUBLISH command is one format (the payload length is fixed).
    sent_cmd = []
    for n in range(names):
        body, nslots = fmt(f.sent_tpl[n])
        assert nslots == 3
        payload = f.sent_env[0] + body + f.sent_env[1]
        plen = len(payload) - 6 + 48 * 2 + 24  # three %s -> two uuids (48) and one timestamp (24)
        sent_cmd.append(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(f.ch_sent), f.ch_sent, plen)
                        + payload + b"\r\n")
    wk = []
    for w in range(W):
        wk.append({
            "recv": [{t: fmt(f.recv_tpl[w][t][n])[0] for t in T} for n in range(names)],
            "start": {t: fmt(f.start_tpl[w][t])[0] for t in T},
            "ok": {t: fmt(f.ok_tpl[w][t])[0] for t in T},
            "fail": {t: fmt(f.fail_tpl[w][t])[0] for t in T},
        })
    conn = Conn(a.host, a.port)
    conn.send(b"".join(f.worker_event(w, "worker-online") for w in range(W)))
    buf = []
    # Per worker: pending (format per terminator, args) events.
    pending = [[] for _ in range(W)]
    LBR = B64(b"[  ")
    batch = a.batch
    fail_every = int(100 / a.fail) if a.fail > 0 else 0
    ch_multi = f.ch_multi
    multi_env = f.multi_env
    rate = a.rate
    events = 0
    messages = W
    t0 = time.perf_counter()
    next_hb = t0 + 2.0
    check_every = max(8, int(rate * 0.002)) if rate > 0 else 512
    next_check = check_every
    ts_b64 = B64(ts_text())
    run = a.run_id & 0xFFFFFFFF

    def flush_worker(w):
        p = pending[w]
        last = len(p) - 1
        body = b"".join([multi_env[w][0], LBR]
                        + [tpl["]" if i == last else ","] % args for i, (tpl, args) in enumerate(p)]
                        + [multi_env[w][1]])
        buf.append(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(ch_multi), ch_multi, len(body), body))
        p.clear()

    for i in range(a.tasks):
        j = a.start + i
        ub = B64(b"%08x-%04x-4%03x-8000-%012x" % (run, j >> 48 & 0xFFFF, j >> 36 & 0xFFF, j & 0xFFFFFFFFFFFF))
        n = (i * 7 + (i >> 3)) % names
        w = i % W
        buf.append(sent_cmd[n] % (ub, ub, ts_b64))
        p = pending[w]
        k = wk[w]
        p.append((k["recv"][n], (ub, ub, ts_b64)))
        if len(p) >= batch:
            flush_worker(w)
        p.append((k["start"], (ub, ts_b64)))
        if len(p) >= batch:
            flush_worker(w)
        failed = fail_every and (i % fail_every == fail_every - 1)
        p.append((k["fail"] if failed else k["ok"], (ub, ts_b64)))
        if len(p) >= batch:
            flush_worker(w)
        f.processed[w] += 1
        events += 4
        if events >= next_check:
            next_check = events + check_every
            messages += len(buf)
            conn.send(b"".join(buf))
            buf.clear()
            now = time.perf_counter()
            ts_b64 = B64(ts_text())
            if now >= next_hb:
                next_hb += 2.0
                conn.send(b"".join(f.worker_event(w, "worker-heartbeat") for w in range(W)))
                messages += W
            if rate > 0:
                ahead = t0 + events / rate - now
                if ahead > 0:
                    time.sleep(ahead)
    for w in range(W):
        if pending[w]:
            flush_worker(w)
    messages += len(buf)
    conn.send(b"".join(buf))
    conn.drain(block=True, want=messages)
    secs = time.perf_counter() - t0
    # Heartbeats carry `processed` for the lost-event estimate: send a final one.
    conn.send(b"".join(f.worker_event(w, "worker-heartbeat") for w in range(W)))
    messages += W
    conn.drain(block=True, want=messages)
    print(json.dumps({"events": events, "messages": messages, "tasks": a.tasks,
                      "seconds": round(secs, 4), "rate": round(events / secs, 1),
                      "unheard": conn.unheard}))


def scrape_probe_count(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read()
    total = 0
    for line in body.split(b"\n"):
        if line.startswith(b"celery_task_sent_total{") and b'name="bench.probe"' in line:
            total += int(float(line.rsplit(b" ", 1)[1]))
    return total


def run_probe(a):
    f = Flood(a)
    tpl = chunk_template(
        {"hostname": "probe@bench", "utcoffset": 0.0, "pid": 1, "clock": 1, "uuid": UUID_SLOT,
         "root_id": UUID_SLOT, "parent_id": None, "name": "bench.probe", "args": "()",
         "kwargs": "{}", "retries": 0, "eta": None, "expires": None, "queue": "celery",
         "exchange": "", "routing_key": "celery", "timestamp": TS_SLOT, "type": "task-sent"}, "")
    tpl = fmt(tpl)[0]
    pre, suf = envelope_parts("task.sent", "probe@bench", "b1e7bfd8-bba5-4f31-8cb6-d4e76f862f6d")
    conn = Conn(a.host, a.port)
    base = scrape_probe_count(a.probe)
    lat = []
    deadline = time.perf_counter() + a.duration
    k = 0
    late = 0
    while time.perf_counter() < deadline:
        k += 1
        uid = b"%08x-0000-4000-8000-%012x" % (a.run_id & 0xFFFFFFFF, k)
        ub = B64(uid)
        t0 = time.perf_counter()
        conn.send(resp_publish(f.ch_sent, pre + tpl % (ub, ub, B64(ts_text())) + suf))
        while True:
            if scrape_probe_count(a.probe) - base >= k:
                lat.append(time.perf_counter() - t0)
                break
            if time.perf_counter() - t0 > 5.0:
                late += 1
                break
            time.sleep(a.poll)
        rest = a.interval - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)
    lat.sort()
    q = lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
    print(json.dumps({"probes": k, "seen": len(lat), "late_over_5s": late, "p50_ms": q(0.50),
                      "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": q(1.0)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--db", type=int, default=0)
    ap.add_argument("--tasks", type=int, default=10000, help="task lifecycles (4 events each)")
    ap.add_argument("--rate", type=float, default=0, help="task events/s; 0 = unthrottled")
    ap.add_argument("--names", type=int, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--fail", type=float, default=5.0, help="percent of tasks that fail")
    ap.add_argument("--batch", type=int, default=8, help="events per task.multi message")
    ap.add_argument("--run-id", type=int, default=os.getpid(), help="makes task ids unique per run")
    ap.add_argument("--start", type=int, default=0, help="first task index")
    ap.add_argument("--probe", metavar="URL", help="latency probe mode: Prometheus page URL")
    ap.add_argument("--duration", type=float, default=10.0, help="probe mode: seconds")
    ap.add_argument("--interval", type=float, default=0.02, help="probe mode: seconds between probes")
    ap.add_argument("--poll", type=float, default=0.001, help="probe mode: scrape poll period")
    a = ap.parse_args()
    if a.probe:
        run_probe(a)
    else:
        run_flood(a)


if __name__ == "__main__":
    main()
