#!/usr/bin/env python3
"""AMQP flood benchmark (scripts/bench-e2e --amqp): celeriac's `celery_amqp` receiver vs
celery-exporter 0.11.2 (`--broker-url amqp://...`) on the same RabbitMQ (127.0.0.1:5672), and what
RabbitMQ itself accepts and delivers here. Runs under target/bench-venv's Python (py-amqp, the
client Celery uses, publishes the flood).

Each run makes a vhost of its own (rabbitmqctl add_vhost, deleted at the end). The flood is
Celery 5.7's AMQP wire format (shared/fixtures/celery-events-amqp.jsonl): per task one `task-sent`
message (routing key `task.sent`, body = the event JSON) and its `task-received`, `task-started`,
`task-succeeded` buffered into `task.multi` messages whose body is a JSON list of --batch events;
`content_type` application/json, `content_encoding` utf-8, header `hostname`, transient.
Bodies are pre-encoded before the clock starts.

Phases, one after the other on the same RabbitMQ:
  rabbitmq:  the publisher alone, into a queue bound like an event receiver's with no consumer
             (RabbitMQ's ingest rate with this client), then a bare py-amqp consumer draining it
             (no_ack, no decoding: RabbitMQ's delivery rate to one Python consumer).
  celeriac:  the agent (celery_amqp -> celery_correlate -> prometheus) consuming while the flood
             is published; events/s = task events / (first publish -> counters match).
  exporter:  celery-exporter 0.11.2 the same way (its counters: celery_task_*_total).
CPU-s per million events = utime+stime of the agent's process (/proc/PID/stat) from just before
the flood to the moment its counters match; RabbitMQ's own CPU (beam.smp) is read the same way.
Prints one JSON object and a table.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import amqp

from common import free_port, proc_cpu

HOST = "127.0.0.1:5672"
COUNTED = ("sent", "received", "started", "succeeded")


def beam_pid():
    out = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def ctl(*args):
    r = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("rabbitmqctl %s failed: %s%s" % (args, r.stdout, r.stderr))


def prom_sum(url, pred):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return None
    total = 0.0
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        head, _, val = line.rpartition(" ")
        name = head.split("{", 1)[0]
        if pred(name):
            try:
                total += float(val)
            except ValueError:
                pass
    return total


def messages(tasks, batch):
    """[(routing_key, body bytes, events)] in publish order, pre-encoded."""
    out, pending, t0 = [], [], time.time()
    for i in range(tasks):
        u, ts = str(uuid.uuid4()), t0 + i * 1e-5
        sent = {"hostname": "gen1@bench", "utcoffset": 0, "pid": 1, "clock": i, "uuid": u,
                "root_id": u, "parent_id": None, "name": "bench.add", "args": "(1, 2)",
                "kwargs": "{}", "retries": 0, "eta": None, "expires": None, "queue": "celery",
                "exchange": "", "routing_key": "celery", "timestamp": ts, "type": "task-sent"}
        out.append(("task.sent", json.dumps(sent).encode(), 1))
        base = {"hostname": "w1@bench", "utcoffset": 0, "pid": 2, "clock": i, "uuid": u}
        pending += [
            dict(base, name="bench.add", args="(1, 2)", kwargs="{}", root_id=u, parent_id=None,
                 retries=0, eta=None, expires=None, timestamp=ts, type="task-received"),
            dict(base, timestamp=ts, type="task-started"),
            dict(base, result="3", runtime=0.001, timestamp=ts, type="task-succeeded"),
        ]
        while len(pending) >= batch:
            out.append(("task.multi", json.dumps(pending[:batch]).encode(), batch))
            pending = pending[batch:]
    if pending:
        out.append(("task.multi", json.dumps(pending).encode(), len(pending)))
    return out


def connect(vhost):
    c = amqp.Connection(host=HOST, userid="guest", password="guest", virtual_host=vhost)
    c.connect()
    ch = c.channel()
    ch.exchange_declare("celeryev", "topic", durable=True, auto_delete=False)
    return c, ch


def publish_all(vhost, msgs):
    c, ch = connect(vhost)
    t0 = time.time()
    for key, body, _ in msgs:
        ch.basic_publish(amqp.Message(body, content_type="application/json",
                                      content_encoding="utf-8",
                                      application_headers={"hostname": "w1@bench"},
                                      delivery_mode=1),
                         exchange="celeryev", routing_key=key)
    dt = time.time() - t0
    c.close()
    return dt


def rabbitmq_phase(vhost, msgs):
    c, ch = connect(vhost)
    q = "bench.%s" % uuid.uuid4()
    ch.queue_declare(q, durable=False, auto_delete=False)
    ch.queue_bind(q, "celeryev", "#")
    beam = beam_pid()
    b0 = proc_cpu(beam) if beam else None
    pub = publish_all(vhost, msgs)
    n = len(msgs)
    got = [0]
    tag = ch.basic_consume(q, no_ack=True, callback=lambda m: got.__setitem__(0, got[0] + 1))
    t0 = time.time()
    while got[0] < n and time.time() - t0 < 300:
        c.drain_events(timeout=5)
    drain = time.time() - t0
    ch.basic_cancel(tag)
    b1 = proc_cpu(beam) if beam else None
    try:
        c.close()  # the queue goes with the vhost
    except Exception:
        pass
    events = sum(m[2] for m in msgs)
    return {"messages": n, "events": events, "publish_s": round(pub, 3),
            "publish_msgs_per_s": round(n / pub), "publish_events_per_s": round(events / pub),
            "drain_s": round(drain, 3), "drain_msgs_per_s": round(got[0] / drain),
            "rabbitmq_cpu_s": None if b0 is None else round(b1 - b0, 2)}


class Agent:
    def __init__(self, a, vhost):
        self.a, self.vhost, self.port = a, vhost, free_port()
        self.url = "amqp://guest:guest@%s/%s" % (HOST, vhost)

    def start(self):
        self.log = tempfile.NamedTemporaryFile(prefix="bench-amqp-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Celeriac(Agent):
    name = "celeriac"

    def command(self):
        self.tel = free_port()
        cfg = f"""
receivers:
  celery_amqp:
    endpoint: {self.url}
    prefetch: {self.a.prefetch}
connectors:
  celery_correlate: {{ metrics_interval: 100ms }}
exporters:
  prometheus: {{ endpoint: 127.0.0.1:{self.port} }}
service:
  telemetry: {{ endpoint: 127.0.0.1:{self.tel} }}
  pipelines:
    celery: {{ receivers: [celery_amqp], exporters: [celery_correlate] }}
    metrics: {{ receivers: [celery_correlate], exporters: [prometheus] }}
"""
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        self.cfg.write(cfg)
        self.cfg.close()
        return [self.a.celeriac, "run", "-c", self.cfg.name]

    def ready(self):
        return prom_sum("http://127.0.0.1:%d/metrics" % self.tel,
                        lambda n: n == "celeriac_celery_amqp_connected") == 1.0

    def count(self):
        return prom_sum("http://127.0.0.1:%d/metrics" % self.port,
                        lambda n: n.startswith("celery_task_") and n.endswith("_total")
                        and n[12:-6] in COUNTED)


class Exporter(Agent):
    name = "celery-exporter 0.11.2"

    def command(self):
        return [os.path.join(self.a.venv, "bin", "python"), "-c", "from src.cli import cli; cli()",
                "--broker-url=" + self.url, "--host=127.0.0.1", "--port=%d" % self.port]

    def ready(self):
        if prom_sum("http://127.0.0.1:%d/metrics" % self.port, lambda n: True) is None:
            return False
        # Its event queue exists once it consumes.
        r = subprocess.run(["rabbitmqctl", "list_queues", "-p", self.vhost, "-q",
                            "--no-table-headers", "name", "consumers"],
                           capture_output=True, text=True).stdout
        return any(l.startswith("celeryev.") and l.split()[-1] != "0" for l in r.splitlines())

    count = Celeriac.count


def agent_phase(agent, vhost, msgs):
    agent.start()
    t0 = time.time()
    while not agent.ready():
        if time.time() - t0 > 60 or agent.proc.poll() is not None:
            agent.stop()
            raise SystemExit("%s did not start; log: %s" % (agent.name, agent.log.name))
        time.sleep(0.2)
    time.sleep(0.5)
    events = sum(m[2] for m in msgs)
    c0 = proc_cpu(agent.proc.pid)
    beam = beam_pid()
    b0 = proc_cpu(beam) if beam else None
    start = time.time()
    pub = publish_all(vhost, msgs)
    seen, done = 0, None
    while time.time() - start < agent.a.timeout:
        seen = agent.count() or 0
        if seen >= events:
            done = time.time()
            break
        time.sleep(0.05)
    c1 = proc_cpu(agent.proc.pid)
    b1 = proc_cpu(beam) if beam else None
    # Whatever arrives late (or never: x-message-ttl 5 s expires what waits too long).
    time.sleep(3)
    final = agent.count() or 0
    agent.stop()
    wall = (done or time.time()) - start
    return {"events": events, "publish_s": round(pub, 3), "seconds": round(wall, 3),
            "events_per_s": round(final / wall) if done else None,
            "counted": int(final), "lost": int(events - final),
            "cpu_s": round(c1 - c0, 2),
            "cpu_s_per_million": round((c1 - c0) / (final / 1e6), 2) if final else None,
            "rabbitmq_cpu_s": None if b0 is None else round(b1 - b0, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--celeriac", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--tasks", type=int, default=50000)
    ap.add_argument("--exporter-tasks", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=8, help="events per task.multi message")
    ap.add_argument("--prefetch", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--only", default="rabbitmq,celeriac,exporter")
    ap.add_argument("--json")
    a = ap.parse_args()
    only = a.only.split(",")
    res = {"loadavg_start": open("/proc/loadavg").read().split()[:3], "tasks": a.tasks,
           "exporter_tasks": a.exporter_tasks, "batch": a.batch, "prefetch": a.prefetch}
    msgs = messages(a.tasks, a.batch)
    small = messages(a.exporter_tasks, a.batch)
    for phase in only:
        vhost = "celeriac-bench-%d-%s" % (os.getpid(), phase)
        ctl("add_vhost", vhost)
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        try:
            if phase == "rabbitmq":
                res["rabbitmq"] = rabbitmq_phase(vhost, msgs)
            elif phase == "celeriac":
                res["celeriac"] = agent_phase(Celeriac(a, vhost), vhost, msgs)
            elif phase == "exporter":
                res["exporter"] = agent_phase(Exporter(a, vhost), vhost, small)
        finally:
            ctl("delete_vhost", vhost)
        print("bench-amqp: %s %s" % (phase, json.dumps(res.get(phase))), file=sys.stderr)
    res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
