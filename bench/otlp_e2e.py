#!/usr/bin/env python3
"""OTLP pass-through benchmark (scripts/bench-e2e otlp): otlp → batch → otlp, CPU per million items.

Standard library only. Layout on a 2-CPU machine (--agent-cpus, default "1"): the agent alone on
its CPU(s), the load generator and the counting sink (both `otlp-load`, target/release/examples)
on the others, so the agent's CPU time is its own.

For each case (signal × protocol × request size × gzip):
1. the generator's ceiling: the generator straight against the sink (no agent) — what the load
   side can do on its CPUs; a case is only meaningful while the agent's rate stays below it;
2. the agent: a fresh celeriac with `otlp (grpc+http) → batch → otlp (grpc, to the sink)`, the
   generator flooding it for --seconds; then wait until the sink has every item the agent
   accepted (zero loss is checked, not assumed), and read the agent's utime+stime from
   /proc/PID/stat over the whole interval. Figures: items/s accepted, CPU-s per million items,
   items per CPU-second, peak RSS (VmHWM).

With --latency, each traces case without gzip is run again at half the rate it reached, the
generator stamping each request's first span with its send time: the sink reports the spans'
age on arrival (end to end: generator → agent → sink), the agent its own share,
`celeriac_pipeline_latency_seconds{pipeline="traces"}` (bench/pipeline_latency.py), both p50/p99.
"""

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pipeline_latency
from common import free_port, logger, own_group, proc_cpu, proc_mem

log = logger("bench-otlp")


def taskset(cpus, cmd):
    return ["taskset", "-c", cpus] + cmd if cpus else cmd


def fifo(on, prio, cmd):
    """With --fifo (latency runs only, paced): SCHED_FIFO, so no other process delays it."""
    return ["chrt", "-f", str(prio)] + cmd if on else cmd


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on %d" % port)


class Sink:
    def __init__(self, load, cpus, workdir, rt=False):
        pf = os.path.join(workdir, "sink.port")
        if os.path.exists(pf):
            os.unlink(pf)
        self.p = subprocess.Popen(fifo(rt, 5, taskset(cpus, [load, "sink", "--port-file", pf,
                                                             "--threads", "1"])),
                                  preexec_fn=own_group)
        end = time.time() + 20
        while not os.path.exists(pf):
            if time.time() > end or self.p.poll() is not None:
                raise RuntimeError("sink did not start")
            time.sleep(0.05)
        grpc, count = open(pf).read().split()
        self.grpc_port, self.count_port = int(grpc), int(count)

    def counts(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/count" % self.count_port, timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        self.p.terminate()
        self.p.wait()


ITEM_KEY = {"traces": "spans", "metrics": "data_points", "logs": "log_records"}


def agent_config(grpc_port, http_port, telemetry_port, sink_port, batch, timeout="200ms", queue="",
                 channels=0):
    """`otlp → batch → otlp`; with `batch` 0, `otlp → otlp` (no batching wait). `queue`: the
    exporter's sending_queue settings (flow YAML), default the collector's; `channels`:
    service.channel_capacity (0: celeriac's default)."""
    processors = "processors: [batch], " if batch else ""
    declared = f"""processors:
  batch: {{ send_batch_size: {batch}, timeout: {timeout} }}
""" if batch else ""
    queue = f"\n    sending_queue: {queue}" if queue else ""
    capacity = f"\n  channel_capacity: {channels}" if channels else ""
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:{grpc_port} }}
      http: {{ endpoint: 127.0.0.1:{http_port} }}
{declared}exporters:
  otlp:
    endpoint: http://127.0.0.1:{sink_port}
    compression: none{queue}
service:
  telemetry: {{ endpoint: 127.0.0.1:{telemetry_port} }}{capacity}
  pipelines:
    traces: {{ receivers: [otlp], {processors}exporters: [otlp] }}
    metrics: {{ receivers: [otlp], {processors}exporters: [otlp] }}
    logs: {{ receivers: [otlp], {processors}exporters: [otlp] }}
"""


def flat_config(grpc_port, http_port, telemetry_port, sink_port, batch, timeout="200ms", queue="",
                channels=0):
    """The same pipeline in celeriac's own (pre-collector) receiver shape, for older builds."""
    return agent_config(grpc_port, http_port, telemetry_port, sink_port, batch, timeout, queue,
                        channels).replace(
        f"""    protocols:
      grpc: {{ endpoint: 127.0.0.1:{grpc_port} }}
      http: {{ endpoint: 127.0.0.1:{http_port} }}""",
        f"""    grpc: {{ endpoint: 127.0.0.1:{grpc_port} }}
    http: {{ endpoint: 127.0.0.1:{http_port} }}""")


def send(a, target_port, protocol, signal, items, gzip, seconds, rate=None, stamp=False):
    cmd = [a.load, "send", "--target", "127.0.0.1:%d" % target_port, "--protocol", protocol,
           "--signal", signal, "--items", str(items), "--connections", str(a.connections),
           "--in-flight", str(a.in_flight), "--seconds", str(seconds), "--threads", "1"]
    if gzip:
        cmd.append("--gzip")
    if rate:
        cmd += ["--rate", str(rate)]
    if stamp:
        cmd.append("--stamp")
    out = subprocess.run(fifo(a.fifo and rate, 5, taskset(a.load_cpus, cmd)), capture_output=True,
                         text=True, check=True, preexec_fn=own_group)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(a, workdir, signal, protocol, items, gzip, rate=None, stamp=False):
    """One case; at `rate` requests/s (default: --rate, else as fast as accepted), with `stamp`
    also the latency figures."""
    rt = a.fifo and stamp
    sink = Sink(a.load, a.load_cpus, workdir, rt)
    try:
        # 1. The generator's own ceiling (gRPC straight to the sink; HTTP has no direct peer).
        ceiling = None
        if protocol == "grpc" and not stamp:
            ceiling = send(a, sink.grpc_port, "grpc", signal, items, gzip, a.ceiling_seconds)
        base = sink.counts()[ITEM_KEY[signal]]

        gp, hp, tp = free_port(), free_port(), free_port()
        cfg = os.path.join(workdir, "agent.yaml")
        with open(cfg, "w") as f:
            f.write(agent_config(gp, hp, tp, sink.grpc_port, a.batch, a.batch_timeout, a.queue,
                                 a.channel_capacity))
        if subprocess.run([a.celeriac, "validate", "-c", cfg], capture_output=True).returncode != 0:
            # A build from before the collector's `protocols:` shape: the same pipeline, flat.
            with open(cfg, "w") as f:
                f.write(flat_config(gp, hp, tp, sink.grpc_port, a.batch, a.batch_timeout, a.queue,
                                 a.channel_capacity))
        cmd = [a.celeriac, "run", "-c", cfg]
        cg_out = os.path.join(a.callgrind, "callgrind.%s-%s-%d-%s.out" % (
            signal, protocol, items, "gzip" if gzip else "plain")) if a.callgrind else None
        if cg_out:
            os.makedirs(a.callgrind, exist_ok=True)
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   "--callgrind-out-file=" + cg_out] + cmd
        agent = subprocess.Popen(fifo(rt, 10, taskset(a.agent_cpus, cmd)), preexec_fn=own_group,
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "agent.log"), "w"))
        try:
            wait_port(gp, 120 if cg_out else 20)
            wait_port(hp, 120 if cg_out else 20)
            time.sleep(0.3)
            if cg_out:
                subprocess.run(["callgrind_control", "--instr=on", str(agent.pid)],
                               check=True, capture_output=True)
            cpu0 = proc_cpu(agent.pid)
            t0 = time.time()
            sent = send(a, gp if protocol == "grpc" else hp, protocol, signal, items, gzip, a.seconds,
                        rate or a.rate, stamp)
            want = base + sent["items_ok"]
            end = time.time() + (300 if cg_out else 30)
            got = sink.counts()[ITEM_KEY[signal]]
            while got < want and time.time() < end:
                time.sleep(0.05)
                got = sink.counts()[ITEM_KEY[signal]]
            cpu = proc_cpu(agent.pid) - cpu0
            wall = time.time() - t0
            hwm = proc_mem(agent.pid)["VmHWM"]
            own = pipeline_latency.read("http://127.0.0.1:%d/metrics" % tp).get(signal, [])
            e2e = sink.counts().get("e2e_ms")
            if cg_out:
                subprocess.run(["callgrind_control", "--instr=off", str(agent.pid)],
                               check=True, capture_output=True)
        finally:
            agent.terminate()
            agent.wait()
        delivered = got - base
        ir = None
        if cg_out:
            # Instructions per item, from the event totals of the dump(s) callgrind wrote.
            ir = 0
            for f in os.listdir(a.callgrind):
                if f.startswith(os.path.basename(cg_out)):
                    for line in open(os.path.join(a.callgrind, f)):
                        if line.startswith("totals:") or line.startswith("summary:"):
                            ir = max(ir, int(line.split()[1]))
            ir = ir / max(delivered, 1)
        latency = {"e2e_ms": e2e, "celeriac_ms": pipeline_latency.summary(own),
                   "requests_per_s": rate} if stamp else None
        return {
            "latency": latency,
            "instructions_per_item": ir,
            "signal": signal, "protocol": protocol, "items": items, "gzip": gzip,
            "accepted": sent["items_ok"], "refused_requests": sent["requests_refused"],
            "errors": sent["errors"], "delivered": delivered, "lost": sent["items_ok"] - delivered,
            "items_per_s": sent["items_ok"] / sent["seconds"],
            "cpu_s_per_million": cpu / max(delivered, 1) * 1e6,
            "items_per_cpu_s": delivered / cpu if cpu > 0 else 0,
            "agent_cpu_s": cpu, "wall_s": wall, "peak_rss_mib": hwm,
            "generator_ceiling_items_per_s": ceiling["items_per_second"] if ceiling else None,
            "request_bytes": sent["request_bytes"],
        }
    finally:
        sink.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--celeriac", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--agent-cpus", default="1")
    ap.add_argument("--load-cpus", default="0")
    ap.add_argument("--signals", default="traces,metrics,logs")
    ap.add_argument("--protocols", default="grpc,http")
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--gzip", default="off,on")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--ceiling-seconds", type=float, default=3)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8192,
                    help="the batch processor's send_batch_size; 0: no batch processor")
    ap.add_argument("--batch-timeout", default="200ms", help="the batch processor's timeout")
    ap.add_argument("--queue", default="",
                    help="the otlp exporter's sending_queue, flow YAML (default: the collector's)")
    ap.add_argument("--channel-capacity", type=int, default=0,
                    help="service.channel_capacity, batches per channel (default: celeriac's)")
    ap.add_argument("--fifo", action="store_true",
                    help="latency runs: agent, generator and sink at SCHED_FIFO (chrt), so no "
                         "other process on the machine delays them")
    ap.add_argument("--rate", type=float, default=0,
                    help="requests per second over all connections (default: as fast as accepted)")
    ap.add_argument("--callgrind", metavar="DIR",
                    help="run the agent under valgrind's callgrind, counting only while the load "
                         "runs; report instructions per item and leave the profiles in DIR")
    ap.add_argument("--latency", action="store_true",
                    help="also run each traces case without gzip at half its rate, with latency figures")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="celeriac-otlp-bench-") as wd:
        for signal in a.signals.split(","):
            for protocol in a.protocols.split(","):
                for items in (int(x) for x in a.sizes.split(",")):
                    for gz in a.gzip.split(","):
                        r = run_case(a, wd, signal, protocol, items, gz == "on")
                        log(json.dumps(r))
                        rows.append(r)
                        if a.latency and signal == "traces" and gz == "off":
                            half = r["items_per_s"] / 2 / items
                            r["half_rate"] = run_case(a, wd, signal, protocol, items, False, half, True)
                            log(json.dumps(r["half_rate"]))
    print("| signal | protocol | items/request | gzip | items/s | CPU-s per 1M | items per CPU-s | "
          "peak RSS MiB | lost | generator ceiling items/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ceil = "%.0f" % r["generator_ceiling_items_per_s"] if r["generator_ceiling_items_per_s"] else "–"
        print("| %s | %s | %d | %s | %.0f | %.2f | %.0f | %.0f | %d | %s |" % (
            r["signal"], r["protocol"], r["items"], "on" if r["gzip"] else "off", r["items_per_s"],
            r["cpu_s_per_million"], r["items_per_cpu_s"], r["peak_rss_mib"], r["lost"], ceil))
    lat = [r for r in rows if r.get("half_rate")]
    if lat:
        print()
        print("| protocol | items/request | items/s (half the top) | end-to-end p50 / p99 ms | "
              "celeriac's own p50 / p99 ms | observed items | lost |")
        print("|---|---|---|---|---|---|---|")
        for r in lat:
            h = r["half_rate"]
            L = h["latency"]
            print("| %s | %d | %.0f | %s / %s | %s / %s | %d | %d |" % (
                r["protocol"], r["items"], h["items_per_s"], L["e2e_ms"]["p50"], L["e2e_ms"]["p99"],
                L["celeriac_ms"]["p50_ms"], L["celeriac_ms"]["p99_ms"], L["celeriac_ms"]["count"],
                h["lost"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
