"""celeriac's own share of the latency: `celeriac_pipeline_latency_seconds{pipeline}` read from the
agent's telemetry endpoint, as p50/p99 per pipeline (linear inside a bucket, as Prometheus's
histogram_quantile does). Shared by bench/e2e.py and bench/otlp_e2e.py; standard library only."""

import urllib.request

NAME = "celeriac_pipeline_latency_seconds"


def read(url):
    """{pipeline: [(le, cumulative count)]} from a /metrics page."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode("utf-8", "replace")
    out = {}
    for line in text.split("\n"):
        if not line.startswith(NAME + "_bucket{"):
            continue
        head, _, val = line.rpartition(" ")
        labels = dict(p.split("=", 1) for p in head[head.index("{") + 1:-1].split(","))
        le = labels["le"].strip('"')
        out.setdefault(labels["pipeline"].strip('"'), []).append(
            (float("inf") if le == "+Inf" else float(le), float(val)))
    return out


def minus(after, before):
    """The observations made between two reads."""
    return {p: [(le, n - dict(before.get(p, [])).get(le, 0.0)) for le, n in b]
            for p, b in after.items()}


def quantile(buckets, q):
    """Seconds under which a fraction q of the observations lie; None without observations."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank, lo, below = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (rank - below) / max(n - below, 1e-9)
        lo, below = le, n
    return lo


def summary(buckets):
    """{"count", "p50_ms", "p99_ms"} of one pipeline."""
    ms = lambda s: None if s is None else round(s * 1000, 3)
    return {"count": int(buckets[-1][1]) if buckets else 0,
            "p50_ms": ms(quantile(buckets, 0.5)), "p99_ms": ms(quantile(buckets, 0.99))}
