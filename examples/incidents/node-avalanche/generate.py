#!/usr/bin/env python3
"""Generates recording.jsonl: 40 minutes of a 4-node cluster in which node ip-10-0-1-12
saturates (CPU throttling ramps up, then memory pressure), node ip-10-0-1-14 stops
reporting at minute 30, and pod api-7d4b9 leaks goroutines from minute 8.

Deterministic (fixed seed): re-running it reproduces the file byte for byte.
Usage: python3 generate.py > recording.jsonl
"""
import json
import random
import sys

START_MS = 1_793_613_600_000  # 2026-11-02T10:00:00Z
STEP_MS = 15_000
MINUTES = 40
NODES = ["ip-10-0-1-11", "ip-10-0-1-12", "ip-10-0-1-13", "ip-10-0-1-14"]
HOT, DEAD = "ip-10-0-1-12", "ip-10-0-1-14"
APPS = [("shop", "checkout"), ("shop", "cart"), ("platform", "ingress")]

rng = random.Random(7)
counters = {}


def emit(out, ts, metric, labels, value):
    line = {"ts": ts, "metric": metric, "labels": labels, "value": round(value, 6)}
    out.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")


def counter(key, rate_per_s):
    counters[key] = counters.get(key, 0.0) + max(rate_per_s, 0.0) * STEP_MS / 1000
    return counters[key]


def main(out):
    steps = MINUTES * 60_000 // STEP_MS
    for i in range(steps):
        ts = START_MS + i * STEP_MS
        minute = i * STEP_MS / 60_000
        for node in NODES:
            if node == DEAD and minute >= 30:
                continue
            emit(out, ts, "kubelet_node_name", {"node": node, "job": "kubelet"}, 1)
            psi = 0.01 + rng.uniform(-0.004, 0.004)
            if node == HOT and minute >= 21:
                psi = 0.30 + rng.uniform(-0.03, 0.03)
            emit(out, ts, "node_pressure_memory_waiting_seconds_total", {"node": node},
                 counter(("psi", node), psi))
            for ns, app in APPS:
                rate = 2.0 + rng.uniform(-0.5, 0.5)
                if node == HOT and minute >= 20:
                    rate = 10.0 + min(minute - 20, 5) * 4 + rng.uniform(-1, 1)
                pod = f"{app}-{node[-2:]}"
                labels = {"namespace": ns, "pod": pod, "container": app, "node": node}
                emit(out, ts, "container_cpu_cfs_throttled_periods_total", labels,
                     counter(("cpu", node, app), rate))
        for pod, node in [("api-7d4b9", "ip-10-0-1-11"), ("api-5c2f1", "ip-10-0-1-13")]:
            g = 180 + rng.randint(-5, 5)
            if pod == "api-7d4b9" and minute >= 8:
                g = 180 + (minute - 8) * 60
            emit(out, ts, "go_goroutines", {"namespace": "shop", "pod": pod, "node": node}, g)


if __name__ == "__main__":
    main(sys.stdout)
