#!/usr/bin/env python3
"""Peak memory under one unthrottled burst into a fresh agent.

    python3 bench/burst.py target/release/celeriac 250000 ["    max_tasks: 10000"]

Starts its own redis-server (free port, pub/sub output buffer unlimited) and celeriac with the
benchmark's pipeline (celery_redis -> celery_correlate -> prometheus, correlate defaults plus the
optional third argument, YAML lines under `celery_correlate:`), publishes TASKS tasks (4 events
each) with bench/flood.py as fast as Redis takes them, waits until the agent has counted every
event, and prints one JSON line: events, counted, publish rate, VmHWM/VmRSS in MiB.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import e2e  # noqa: E402

bin_, tasks, extra = sys.argv[1], int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "")
d = tempfile.mkdtemp()
rp, mp = common.free_port(), common.free_port()
redis = subprocess.Popen(["redis-server", "--port", str(rp), "--save", "", "--appendonly", "no",
    "--client-output-buffer-limit", "pubsub 0 0 0", "--dir", d], stdout=subprocess.DEVNULL)
time.sleep(0.5)
cfg = os.path.join(d, "c.yaml")
open(cfg, "w").write(common.celery_redis_config(rp, "    metrics_interval: 10ms\n%s" % extra, mp, common.free_port()))
agent = subprocess.Popen([bin_, "run", "-c", cfg], stdout=open(os.path.join(d, "a.log"), "w"), stderr=subprocess.STDOUT)
url = "http://127.0.0.1:%d/metrics" % mp
def count():
    return common.task_events_counted(url, e2e.COUNTED)
for _ in range(100):
    try:
        if common.redis_cmd(rp, "PUBSUB", "NUMPAT") > 0: count(); break
    except Exception: pass
    time.sleep(0.2)
t0 = time.time()
out = subprocess.run([sys.executable, common.FLOOD, "--port", str(rp), "--tasks", str(tasks), "--rate", "0", "--start", "0", "--run-id", "1"], capture_output=True).stdout
r = json.loads(out)
while count() < r["events"] and time.time() < t0 + 300:
    time.sleep(0.1)
m = common.proc_mem(agent.pid)
print(json.dumps({"tasks": tasks, "extra": extra, "events": r["events"], "counted": count(), "rate": r["rate"], "secs": round(time.time()-t0,1), "VmHWM": round(m["VmHWM"],1), "VmRSS": round(m["VmRSS"],1)}))
agent.terminate(); agent.wait(); redis.terminate(); redis.wait()
