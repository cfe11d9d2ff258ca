#!/usr/bin/env python3
"""End-to-end flood benchmark: celeriac vs Flower vs celery-exporter on one Redis (scripts/bench-e2e).

Standard library only (the peers run from the venv given with --venv). For each agent in turn, on
the same redis-server and with the same flood (bench/flood.py):

1. rate search: floods of --step-seconds at increasing task-event rates. A step passes when the
   agent's counters (summed over every task event type) reach exactly what was sent within
   --catchup seconds after the flood ends (plus one scrape); the highest passing rate is the
   "zero-loss sustained" rate. CPU-s per million events = utime+stime of the agent's process
   (/proc/PID/stat) from just before the flood to the moment its counters match, over the
   events of that step.
2. memory: a fresh agent process, floods of N tasks (4 events each) at a rate it sustains,
   VmHWM (peak RSS) read from /proc/PID/status once its counters match after each total.
3. latency (celeriac): a flood at half its top rate while bench/flood.py --probe publishes one
   probe task-sent every 20 ms and polls /metrics every 1 ms until it is counted; beside it,
   celeriac's own share over the same flood, `celeriac_pipeline_latency_seconds{pipeline}` from its
   telemetry endpoint (bench/pipeline_latency.py): `celery` from the receiver having an event's
   bytes to the correlator taking it, `metrics` from the correlator's output to the scrape page.

Counters read: celeriac and celery-exporter `celery_task_*_total` (their names are the same),
Flower `flower_events_total{type="task-*"}`.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pipeline_latency
from common import FLOOD, celery_redis_config, free_port, http_get, logger, own_group, parse_prom, proc_cpu, \
    proc_mem, redis_cmd, task_events_counted

COUNTED = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected")
log = logger("bench-e2e")


class Agent:
    name = "?"
    proc = None

    def __init__(self, a, redis_port, workdir):
        self.a = a
        self.redis_port = redis_port
        self.workdir = workdir
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/metrics" % self.port
        self.logf = None

    def command(self):
        raise NotImplementedError

    def count(self):
        raise NotImplementedError

    def start(self):
        numpat = redis_cmd(self.redis_port, "PUBSUB", "NUMPAT")
        self.logf = open(os.path.join(self.workdir, "%s.log" % self.name.split()[0]), "ab")
        cpus = self.a.agent_cpus
        def preexec():
            own_group()  # its session's autogroup at this script's nice
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(self.command(), stdout=self.logf, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env=self.env(), preexec_fn=preexec)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("%s exited at start (see %s)" % (self.name, self.logf.name))
            try:
                if redis_cmd(self.redis_port, "PUBSUB", "NUMPAT") > numpat:
                    self.count()
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise SystemExit("%s did not become ready in 60 s (see %s)" % (self.name, self.logf.name))

    def env(self):
        return dict(os.environ)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class Celeriac(Agent):
    name = "celeriac"

    def __init__(self, *args):
        super().__init__(*args)
        self.telemetry_port = free_port()

    def command(self):
        cfg = os.path.join(self.workdir, "celeriac.yaml")
        with open(cfg, "w") as f:
            f.write(celery_redis_config(
                self.redis_port, "    metrics_interval: %s\n    max_tasks: %d" % (self.a.metrics_interval, self.a.max_tasks),
                self.port, self.telemetry_port))
        return [self.a.celeriac, "run", "-c", cfg]

    def count(self):
        return task_events_counted(self.url, COUNTED)


class Exporter(Celeriac):
    name = "celery-exporter 0.11.2"

    def command(self):
        return [os.path.join(self.a.venv, "bin", "python"), "-c", "from src.cli import cli; cli()",
                "--broker-url=redis://127.0.0.1:%d/0" % self.redis_port,
                "--host=127.0.0.1", "--port=%d" % self.port]


class Flower(Agent):
    name = "Flower 2.2.0"

    def command(self):
        return [os.path.join(self.a.venv, "bin", "celery"),
                "--broker=redis://127.0.0.1:%d/0" % self.redis_port, "flower",
                "--port=%d" % self.port, "--address=127.0.0.1"]

    def env(self):
        e = dict(os.environ)
        e["FLOWER_UNAUTHENTICATED_API"] = "true"
        return e

    def count(self):
        total = 0
        for name, labels, v in parse_prom(http_get(self.url)):
            if name == "flower_events_total" and labels.get("type", "").startswith("task-"):
                total += v
        return int(total)


class Bench:
    def __init__(self, a):
        self.a = a
        self.task_index = 0

    def flood(self, tasks, rate, watch_pid=None):
        """Run one flood; returns (flood result, max pub/sub backlog in bytes seen meanwhile)."""
        cmd = [sys.executable, FLOOD, "--port", str(self.redis_port), "--tasks", str(tasks),
               "--rate", str(rate), "--start", str(self.task_index), "--run-id", str(self.run_id)]
        self.task_index += tasks
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=own_group)
        backlog = 0
        while p.poll() is None:
            backlog = max(backlog, self.backlog())
            time.sleep(0.25)
        out = p.stdout.read()
        if p.returncode != 0:
            raise SystemExit("flood failed: %r" % out)
        return json.loads(out), backlog

    def backlog(self):
        """Largest output buffer of a pattern subscriber (omem), bytes."""
        try:
            text = redis_cmd(self.redis_port, "CLIENT", "LIST")
        except Exception:
            return 0
        m = 0
        for line in text.split("\n"):
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if int(f.get("psub", "0")) > 0:
                m = max(m, int(f.get("omem", "0")))
        return m

    def wait_count(self, agent, base, want, deadline, hard_deadline):
        """Poll the agent's counter until it reaches base+want. Returns (counted, t_match or None)."""
        c = 0
        while True:
            try:
                c = agent.count() - base
            except Exception as e:
                log("scrape failed:", e)
            now = time.time()
            if c >= want:
                return c, now
            if now > hard_deadline:
                return c, None
            time.sleep(0.05)

    def step(self, agent, rate, tasks):
        base = agent.count()
        cpu0 = proc_cpu(agent.pid)
        r, backlog = self.flood(tasks, rate)
        t_end = time.time()
        sent = r["events"]
        counted, t_match = self.wait_count(agent, base, sent, t_end + self.a.catchup,
                                           t_end + self.a.catchup + 30)
        cpu1 = proc_cpu(agent.pid)
        caught_up = None if t_match is None else round(t_match - t_end, 2)
        ok = (t_match is not None and counted == sent and caught_up <= self.a.catchup + agent.scrape_s
              and r["unheard"] == 0)
        res = {"target_rate": rate, "achieved_rate": r["rate"], "sent": sent, "counted": counted,
               "catchup_s": caught_up, "max_backlog_mib": round(backlog / 2**20, 1),
               "cpu_s": round(cpu1 - cpu0, 3),
               "cpu_s_per_M": round((cpu1 - cpu0) / max(1, counted) * 1e6, 2), "pass": ok}
        log(agent.name, json.dumps(res))
        return res

    def rate_search(self, agent, start_rate):
        a = self.a
        best = None
        fail = None
        rate = start_rate
        steps = []
        while True:
            tasks = max(1000, int(rate * a.step_seconds / 4)) if rate else a.unthrottled_tasks
            s = self.step(agent, rate, tasks)
            steps.append(s)
            if s["pass"]:
                best = s
                if rate == 0:
                    break
                if s["achieved_rate"] < 0.95 * rate:
                    break  # the publisher (or Redis) is the limit, not the agent
                nxt = rate * a.factor
                if nxt > a.max_rate:
                    rate = 0  # last step: as fast as the publisher goes
                else:
                    rate = int(nxt)
            else:
                fail = s
                if best is None and rate and rate > 1000:
                    rate = int(rate / 2)  # the first step failed: search downwards
                    continue
                break
        # One or two bisection steps between the best pass and the first failure.
        for _ in range(a.bisect if best and fail and fail["target_rate"] > best["target_rate"] else 0):
            lo, hi = best["target_rate"], fail["target_rate"]
            mid = int((lo + hi) / 2)
            if hi - lo < 0.08 * hi:
                break
            s = self.step(agent, mid, max(1000, int(mid * a.step_seconds / 4)))
            steps.append(s)
            if s["pass"]:
                if s["achieved_rate"] > best["achieved_rate"]:
                    best = s
            else:
                fail = s
        return best, steps

    def memory(self, agent_cls, totals, rate, burst_tasks=0):
        agent = agent_cls(self.a, self.redis_port, self.workdir)
        agent.start()
        out = []
        try:
            done = 0
            base = agent.count()
            cpu0 = proc_cpu(agent.pid)
            for total in totals:
                r, backlog = self.flood(total - done, rate)
                t_end = time.time()
                want = (total) * 4
                counted, t_match = self.wait_count(agent, base, want, t_end + 600, t_end + 900)
                m = proc_mem(agent.pid)
                res = {"tasks": total, "rate": r["rate"], "counted": counted, "ok": counted == want,
                       "catchup_s": None if t_match is None else round(t_match - t_end, 2),
                       "max_backlog_mib": round(backlog / 2**20, 1),
                       "cpu_s_total": round(proc_cpu(agent.pid) - cpu0, 2),
                       "vmhwm_mib": round(m["VmHWM"], 1), "vmrss_mib": round(m["VmRSS"], 1)}
                log(agent.name, "memory", json.dumps(res))
                out.append(res)
                done = total
            if burst_tasks:
                # An unthrottled burst on top: how long until the counters catch up, and the peak
                # RSS while Redis holds the backlog and celeriac's bounded queues are full.
                base = agent.count()
                r, backlog = self.flood(burst_tasks, 0)
                t_end = time.time()
                counted, t_match = self.wait_count(agent, base, r["events"], t_end + 120, t_end + 120)
                m = proc_mem(agent.pid)
                res = {"burst_events": r["events"], "rate": r["rate"], "ok": counted == r["events"],
                       "catchup_s": None if t_match is None else round(t_match - t_end, 2),
                       "max_backlog_mib": round(backlog / 2**20, 1),
                       "vmhwm_mib": round(m["VmHWM"], 1), "vmrss_mib": round(m["VmRSS"], 1)}
                log(agent.name, "burst", json.dumps(res))
                self.burst = res
        finally:
            agent.stop()
        return out

    def latency(self, agent, rate, seconds):
        tasks = max(1000, int(rate * seconds / 4))
        probe = subprocess.Popen([sys.executable, FLOOD, "--port", str(self.redis_port),
                                  "--probe", agent.url, "--duration", str(seconds),
                                  "--run-id", str(self.run_id + 1)], stdout=subprocess.PIPE,
                                 preexec_fn=own_group)
        own = getattr(agent, "telemetry_port", None)
        own_url = "http://127.0.0.1:%d/metrics" % own if own else None
        before = pipeline_latency.read(own_url) if own_url else {}
        r, _ = self.flood(tasks, rate)
        out = json.loads(probe.communicate()[0])
        out["flood_rate"] = r["rate"]
        if own_url:
            delta = pipeline_latency.minus(pipeline_latency.read(own_url), before)
            out["celeriac_own"] = {p: pipeline_latency.summary(b) for p, b in delta.items()}
        log(agent.name, "latency", json.dumps(out))
        return out

    def raw_redis(self):
        """Publisher rate with only a discarding C subscriber (redis-cli) attached."""
        sub = subprocess.Popen(["redis-cli", "-p", str(self.redis_port), "psubscribe", "/0.celeryev/*"],
                               stdout=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)
        try:
            r, _ = self.flood(self.a.unthrottled_tasks, 0)
        finally:
            os.killpg(sub.pid, signal.SIGTERM)
            sub.wait()
        log("raw redis", json.dumps(r))
        return r

    def run(self):
        a = self.a
        self.workdir = tempfile.mkdtemp(prefix="celeriac-bench-")
        self.redis_port = free_port()
        self.run_id = int(time.time()) & 0xFFFFFFF
        redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no",
                                  "--client-output-buffer-limit", "pubsub 0 0 0"],
                                 stdout=open(os.path.join(self.workdir, "redis.log"), "wb"),
                                 stderr=subprocess.STDOUT, preexec_fn=own_group)
        results = {"mode": a.mode, "loadavg_start": open("/proc/loadavg").read().split()[:3]}
        try:
            for _ in range(100):
                try:
                    redis_cmd(self.redis_port, "PING")
                    break
                except OSError:
                    time.sleep(0.05)
            results["redis_version"] = redis_cmd(self.redis_port, "INFO", "server").split(
                "redis_version:")[1].split()[0]
            results["raw"] = self.raw_redis()
            agents = [(Celeriac, "celeriac"), (Flower, "flower"), (Exporter, "exporter")]
            for cls, key in agents:
                if key not in a.only:
                    continue
                log("=== %s" % cls.name)
                agent = cls(a, self.redis_port, self.workdir)
                agent.scrape_s = 2.5 if cls is Exporter else 0.2
                agent.start()
                res = {"name": cls.name}
                try:
                    # Warm-up (workers online, series created), not measured.
                    self.step(agent, 2000, 500)
                    start = a.celeriac_start if cls is Celeriac else a.peer_start
                    best, steps = self.rate_search(agent, start)
                    res["best"], res["steps"] = best, steps
                    if cls is Celeriac and best:
                        half = int((best["achieved_rate"]) / 2)
                        res["latency"] = self.latency(agent, half, a.latency_seconds)
                        # The latency curve at explicit rates (--latency-rates), lowest first.
                        res["latency_curve"] = [self.latency(agent, r, a.latency_seconds)
                                                for r in a.latency_rates]
                finally:
                    agent.stop()
                # Memory at a rate the agent sustains (so what is measured is its state, not a
                # backlog in its queues); celeriac then also gets an unthrottled burst.
                mem_rate = int(0.8 * best["achieved_rate"]) if best else 1000
                totals = a.mem_tasks if cls is Celeriac or a.peers_1m else a.mem_tasks[:1]
                self.burst = None
                res["memory"] = self.memory(cls, totals, mem_rate,
                                            a.burst_tasks if cls is Celeriac else 0)
                res["burst"] = self.burst
                results[key] = res
        finally:
            redis.terminate()
            redis.wait()
            results["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        return results


def fmt_table(r):
    cols = [k for k in ("celeriac", "flower", "exporter") if k in r]
    name = {"celeriac": "celeriac", "flower": "Flower 2.2.0", "exporter": "celery-exporter 0.11.2"}

    def best_rate(k):
        b = r[k].get("best")
        return b["achieved_rate"] if b else None

    def cpu(k):
        b = r[k].get("best")
        return b["cpu_s_per_M"] if b else None

    def mem(k, i):
        m = r[k].get("memory", [])
        return m[i] if i < len(m) else None

    def bound(k):
        """The publisher, not the agent, set the limit (the agent passed the last step)."""
        steps = r[k].get("steps") or []
        if not steps or any(not x["pass"] for x in steps):
            return False
        last = steps[-1]
        return last["target_rate"] == 0 or last["achieved_rate"] < 0.95 * last["target_rate"]

    rows = []
    hdr = ["", *[name[c] for c in cols], "raw Redis (redis-cli subscriber)"]
    f0 = lambda v, fmt="{:,.0f}": "—" if v is None else fmt.format(v)
    raw = r["raw"]["rate"]
    rows.append(["zero-loss sustained events/s", *[
        f0(best_rate(c)) + (" (publisher-bound)" if bound(c) else "") for c in cols], f0(raw)])
    rows.append(["CPU-s per 1M events (at that rate)", *[f0(cpu(c), "{:.2f}") for c in cols], ""])
    rows.append(["events/s per core (1e6 / CPU-s per 1M)", *[
        f0(1e6 / cpu(c) if cpu(c) else None) for c in cols], ""])
    for i in range(2):
        lab = None
        vals = []
        for c in cols:
            m = mem(c, i)
            if m:
                lab = lab or "peak RSS (VmHWM) after %s tasks, MiB" % f"{m['tasks']:,}"
                vals.append(f0(m["vmhwm_mib"], "{:.1f}") + ("" if m["ok"] else " (lost events!)"))
            else:
                vals.append("—")
        if lab:
            rows.append([lab if i == 0 else lab + " (peers: --peers-1m)", *vals, ""])
    if "celeriac" in r and r["celeriac"].get("latency"):
        L = r["celeriac"]["latency"]
        rows.append(["event→/metrics latency p50 / p99, ms (at %s ev/s)" % f"{L['flood_rate']:,.0f}",
                     "%s / %s" % (L["p50_ms"], L["p99_ms"]), *["n/a"] * (len(cols) - 1), ""])
        for p, own in sorted((L.get("celeriac_own") or {}).items()):
            rows.append(["  celeriac's own share, pipeline %s: p50 / p99, ms (%d items)" % (p, own["count"]),
                         "%s / %s" % (own["p50_ms"], own["p99_ms"]), *[""] * (len(cols) - 1), ""])
        for L in r["celeriac"].get("latency_curve") or []:
            rows.append(["  same, at %s ev/s (%d probes)" % (f"{L['flood_rate']:,.0f}", L["probes"]),
                         "%s / %s" % (L["p50_ms"], L["p99_ms"]), *[""] * (len(cols) - 1), ""])
    b = r["celeriac"].get("burst") if "celeriac" in r else None
    if b:
        rows.append(["unthrottled burst of %s events (at %s/s): caught up after, s; VmHWM, MiB"
                     % (f"{b['burst_events']:,}", f"{b['rate']:,.0f}"),
                     "%s; %s%s" % (b["catchup_s"], b["vmhwm_mib"], "" if b["ok"] else " (lost events!)"),
                     *[""] * (len(cols) - 1), ""])
    peers = [c for c in cols if c != "celeriac"]
    if "celeriac" in r and peers and cpu("celeriac"):
        bp = max(peers, key=lambda c: best_rate(c) or 0)
        bc = min((c for c in peers if cpu(c)), key=cpu, default=None)
        ratios = []
        if best_rate(bp):
            ratios.append("celeriac / %s events/s: %.1f×" % (name[bp], best_rate("celeriac") / best_rate(bp)))
        if bc:
            ratios.append("celeriac / %s events/s per core: %.1f×" % (name[bc], cpu(bc) / cpu("celeriac")))
        ratios.append("celeriac / raw Redis rate: %.2f" % (best_rate("celeriac") / raw))
        if bc:
            ratios.append("%s / raw Redis rate: %.3f" % (name[bp], best_rate(bp) / raw))
    else:
        ratios = []
    w = [max(len(row[i]) for row in [hdr] + rows) for i in range(len(hdr))]
    line = lambda row: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(row)) + " |"
    out = [line(hdr), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(x) for x in rows]
    out.append("")
    out += ratios
    out.append("load average (1/5/15 min) at start %s, at end %s; redis-server %s; mode %s"
               % ("/".join(r["loadavg_start"]), "/".join(r["loadavg_end"]), r["redis_version"], r["mode"]))
    return "\n".join(out)


# The run's sizes: --quick, or the full run BENCHMARKS.md reports.
MODES = {
    "quick": dict(step_seconds=3.0, catchup=2.0, factor=1.6, bisect=0,
                  peer_start=5000, celeriac_start=60000, max_rate=400000,
                  unthrottled_tasks=100000, mem_tasks=[5000, 50000], burst_tasks=50000,
                  latency_seconds=5),
    "full": dict(step_seconds=8.0, catchup=2.0, factor=1.4, bisect=2,
                 peer_start=4000, celeriac_start=50000, max_rate=600000,
                 unthrottled_tasks=250000, mem_tasks=[100000, 1000000], burst_tasks=250000,
                 latency_seconds=15),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--celeriac", required=True, help="celeriac binary (release build)")
    ap.add_argument("--venv", required=True, help="virtualenv with flower and prometheus-exporter-celery")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="celeriac,flower,exporter")
    ap.add_argument("--peers-1m", action="store_true", help="also take the peers to 1M tasks (slow)")
    ap.add_argument("--metrics-interval", default="10ms", help="celeriac's celery_correlate metrics_interval")
    ap.add_argument("--max-tasks", type=int, default=100000, help="celeriac's max_tasks")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--latency-rates", default="",
                    help="also measure celeriac's latency at these events/s, e.g. 20000,60000,150000")
    ap.add_argument("--agent-cpus", default="",
                    help="pin the agent to these CPUs (e.g. 1) and this harness, redis-server and "
                         "the publishers to the others, so the load generator does not take the "
                         "agent's CPU time")
    a = ap.parse_args()
    a.only = a.only.split(",")
    a.agent_cpus = {int(c) for c in a.agent_cpus.split(",") if c.strip()}
    if a.agent_cpus:
        others = set(range(os.cpu_count() or 1)) - a.agent_cpus
        if not others:
            raise SystemExit("--agent-cpus leaves no CPU for the load generator")
        os.sched_setaffinity(0, others)  # inherited by redis-server and the publishers
    a.latency_rates = sorted(int(x) for x in a.latency_rates.split(",") if x.strip())
    a.celeriac, a.venv = os.path.abspath(a.celeriac), os.path.abspath(a.venv)
    a.mode = "quick" if a.quick else "full"
    for k, v in MODES[a.mode].items():
        setattr(a, k, v)
    r = Bench(a).run()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    print(fmt_table(r))


if __name__ == "__main__":
    main()
