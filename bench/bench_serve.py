"""Serving load benchmark: concurrent clients on loopback for a bounded time (run on demand).

Starts `pipeline serve` on an exported model, then for single-example and batched requests runs
CLIENTS threads for SECONDS each, and reports p50 / p99 latency and requests/s; compares with
calling the loaded SavedModel in-process on the same inputs.

Usage: python bench/bench_serve.py [--model models/serving] [--clients 4] [--seconds 10] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np


def load(url: str, body: bytes, clients: int, seconds: float) -> tuple[list[float], float]:
    """Latencies (s) of every request sent by `clients` threads in `seconds`, and the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client():
        own = []
        while time.monotonic() < stop:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            own.append(time.perf_counter() - started)
        with lock:
            latencies.extend(own)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/serving")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the benchmark still works")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds = 2, 1.0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.core.processes import background_server, free_port
    from pipeline.serving.loading import load_served_model

    served = load_served_model(args.model)
    generator = np.random.default_rng(0)
    shape = served.spec.image.shape
    single = generator.integers(0, 256, (1, *shape)).astype(np.float32)
    batch = generator.integers(0, 256, (args.batch, *shape)).astype(np.float32)

    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--model", args.model, "--port", str(port)]
    url = f"http://127.0.0.1:{port}/v1/models/{served.name}:predict"
    with background_server(command, f"http://127.0.0.1:{port}", timeout=120):
        rows = []
        for name, inputs in (("single example", single), (f"batch of {args.batch}", batch)):
            body = json.dumps({"instances": inputs.tolist()}).encode()
            load(url, body, 1, 1.0)  # warm-up
            latencies, wall = load(url, body, args.clients, args.seconds)
            in_process = []
            for _ in range(200):
                started = time.perf_counter()
                served.predict({"image": inputs})
                in_process.append(time.perf_counter() - started)
            rows.append(
                (
                    name,
                    len(latencies) / wall,
                    len(latencies) * len(inputs) / wall,
                    percentile(latencies, 0.5),
                    percentile(latencies, 0.99),
                    statistics.median(in_process),
                )
            )
    print(f"{args.clients} concurrent clients for {args.seconds:.0f} s each, on 127.0.0.1\n")
    print("| request | requests/s | examples/s | p50 (ms) | p99 (ms) | in-process p50 (ms) | HTTP overhead p50 (ms) |")
    print("|---|---|---|---|---|---|---|")
    for name, rate, examples, p50, p99, local in rows:
        print(
            f"| {name} | {rate:.0f} | {examples:.0f} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {local * 1000:.2f} |"
            f" {(p50 - local) * 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
