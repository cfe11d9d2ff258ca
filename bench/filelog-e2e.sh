#!/usr/bin/env bash
# End-to-end filelog rate: N structlog JSON lines in a file, read by a release celeriac
# (filelog with json_parser → logs exporter to /dev/null), timed from start until
# celeriac_filelog_lines_total = N, beside the raw read of the same file (cat | wc -l).
# Prints lines/s, agent CPU-s, and the ratio.
#
#   bench/filelog-e2e.sh [LINES]      (default 1000000; CELERIAC_BIN overrides the binary)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-1000000}"
BIN="${CELERIAC_BIN:-$ROOT/target/release/celeriac}"
DIR="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
python3 - "$DIR/app.log" "$N" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, 'w') as f:
    for i in range(n):
        f.write('{"eval_id": "e%d", "step": %d, "event": "evaluation.step", "level": "info", '
                '"task_id": "8f3c2a4e-1b7d-4c1e-9a0b-%012x", "timestamp": "2026-12-06T01:02:03.%06dZ"}\n'
                % (i % 97, i, i % 1000, i % 1000000))
PY
SIZE=$(stat -c %s "$DIR/app.log")
TEL=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$DIR/c.yaml" <<YAML
receivers:
  filelog:
    include: ["$DIR/app.log"]
    start_at: beginning
    operators:
      - type: json_parser
        timestamp: { parse_from: attributes.timestamp, layout: '%Y-%m-%dT%H:%M:%S.%fZ' }
        severity: { parse_from: attributes.level }
exporters:
  logs: { path: /dev/null }
service:
  telemetry: { endpoint: 127.0.0.1:$TEL }
  pipelines:
    logs: { receivers: [filelog], exporters: [logs] }
YAML
sync
t0=$(date +%s.%N)
cat "$DIR/app.log" | wc -l >/dev/null
t1=$(date +%s.%N)
start=$(date +%s.%N)
"$BIN" run -c "$DIR/c.yaml" 2>"$DIR/agent.log" &
PID=$!
while :; do
    got=$(curl -s "127.0.0.1:$TEL/metrics" | awk '/^celeriac_filelog_lines_total/ {print $2}')
    [[ ${got:-0} == "$N" ]] && break
    sleep 0.05
done
end=$(date +%s.%N)
ticks=$(awk '{print $14+$15}' /proc/$PID/stat)
hz=$(getconf CLK_TCK)
python3 - "$N" "$SIZE" "$t0" "$t1" "$start" "$end" "$ticks" "$hz" <<'PY'
import sys
n, size, t0, t1, s, e, ticks, hz = sys.argv[1:]
n, size = int(n), int(size)
raw = float(t1) - float(t0)
agent = float(e) - float(s)
cpu = int(ticks) / int(hz)
print(f"lines {n}, {size/1e6:.0f} MB")
print(f"raw read (cat | wc -l): {raw:.2f} s = {n/raw:,.0f} lines/s")
print(f"celeriac filelog+json_parser → logs exporter: {agent:.2f} s wall = {n/agent:,.0f} lines/s; "
      f"{cpu:.2f} CPU-s = {n/cpu:,.0f} lines per CPU-s")
print(f"ratio raw/celeriac (wall): {agent/raw:.1f}x")
PY
