"""What the end-to-end benchmarks share (bench/e2e.py, burst.py, otlp_e2e.py, amqp_e2e.py).

Standard library only: free ports, a process's CPU time and memory from /proc, a scrape and its
parse, one Redis command, the task-event total of celeriac's scrape, and the benchmark's Redis
config for celeriac (celery_redis -> celery_correlate -> prometheus).
"""

import os
import socket
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
FLOOD = os.path.join(HERE, "flood.py")
CLK = os.sysconf("SC_CLK_TCK")


def logger(tag):
    """A `log(*a)` writing `[TAG HH:MM:SS] ...` lines to stderr."""

    def log(*a):
        print("[%s %s]" % (tag, time.strftime("%H:%M:%S")), *a, file=sys.stderr, flush=True)

    return log


def own_group():
    """Popen's preexec_fn for the agent, the generator and the sink: a session of their own,
    and that session's autogroup at this script's nice. With the kernel's autogroup scheduling
    (/proc/sys/kernel/sched_autogroup_enabled = 1) CPU time is shared between sessions first,
    so `nice -n 19` on another session's build does not yield the CPU to `nice -n -5` here:
    the agent's single thread then waits 50-130 ms per 100 ms for its CPU (schedstat) and that
    wait, not celeriac, is the latency tail. Setting the group's nice needs root for < 0."""
    os.setsid()
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError:
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def redis_cmd(port, *args):
    """One command, one reply (simple subset of RESP2)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        req = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() if isinstance(x, str) else x for x in args))
        s.sendall(req)
        f = s.makefile("rb")
        line = f.readline()
        if line[:1] == b"$":
            n = int(line[1:])
            return f.read(n + 2)[:-2].decode() if n >= 0 else None
        if line[:1] == b":":
            return int(line[1:])
        if line[:1] == b"-":
            raise RuntimeError(line.decode().strip())
        return line[1:].decode().strip()
    finally:
        s.close()


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime (fields 14, 15)


def proc_mem(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) / 1024.0  # MiB
    return out


def http_get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


def parse_prom(text):
    """[(name, {labels}, value)] for sample lines."""
    out = []
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        head, _, val = line.rpartition(" ")
        if "{" in head:
            name, _, rest = head.partition("{")
            labels = {}
            for part in rest.rstrip("}").split('",'):
                if "=" in part:
                    k, _, v = part.partition("=")
                    labels[k.strip(",")] = v.strip('"')
        else:
            name, labels = head, {}
        try:
            out.append((name, labels, float(val)))
        except ValueError:
            pass
    return out


def task_events_counted(url, counted):
    """The sum of `celery_task_<event>_total` on the scrape at `url` over the events in `counted`."""
    total = 0
    for name, _, v in parse_prom(http_get(url)):
        if name.startswith("celery_task_") and name.endswith("_total") and name[12:-6] in counted:
            total += v
    return int(total)


def celery_redis_config(redis_port, correlate, prom_port, telemetry_port):
    """celeriac's benchmark pipeline: celery_redis -> celery_correlate -> prometheus.

    `correlate` holds the YAML lines under `celery_correlate:` (indented four spaces)."""
    return """receivers:
  celery_redis:
    endpoint: redis://127.0.0.1:%d/0
connectors:
  celery_correlate:
%s
exporters:
  prometheus:
    endpoint: 127.0.0.1:%d
service:
  telemetry:
    endpoint: 127.0.0.1:%d
  pipelines:
    celery:
      receivers: [celery_redis]
      exporters: [celery_correlate]
    metrics:
      receivers: [celery_correlate]
      exporters: [prometheus]
""" % (redis_port, correlate, prom_port, telemetry_port)
