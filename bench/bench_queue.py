"""Queued experiments benchmark: N variants queued with `dvc exp run --queue` and run J at a time by
`dvc exp run --run-all --jobs J`, all writing the project's one SQLite MLflow store (issue 16).

It runs tests/e2e/test_experiments.py (the CI test: 3 variants, 2 workers) with more variants and
workers; the test checks that every run, its params, metrics, datasets and registered version landed in
the project's store, that the store passes SQLite's integrity check, and the MLflow UI in a browser.
Record the times in docs/benchmarks.md.

Usage: python bench/bench_queue.py [--variants N] [--jobs J ...] [--smoke]
--smoke only checks that the test is found and configured (CI runs the test itself).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=4, help="queued learning rates (at most 5)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[2, 4], help="parallel queue workers to try")
    parser.add_argument("--smoke", action="store_true", help="collect the test only")
    args = parser.parse_args()
    failures = 0
    for jobs in args.jobs[:1] if args.smoke else args.jobs:
        environment = {**os.environ, "QUEUE_VARIANTS": str(args.variants), "QUEUE_JOBS": str(jobs)}
        test = "tests/e2e/test_experiments.py"
        command = [sys.executable, "-m", "pytest", test, "-q", "-s", "-p", "no:cacheprovider"]
        if args.smoke:
            command.append("--collect-only")
        completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
        lines = [
            line
            for line in completed.stdout.splitlines()
            if "queued experiments" in line or "passed" in line or line.startswith(("FAILED", "E  "))
        ]
        print(f"{args.variants} variants, {jobs} worker(s): {'ok' if completed.returncode == 0 else 'FAILED'}")
        print("\n".join(lines) or completed.stdout[-3000:])
        failures += completed.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
