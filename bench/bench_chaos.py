"""Chaos benchmark: the crash-safety test (tests/e2e/test_chaos.py) with more kills and several seeds.

Each round SIGKILLs `dvc repro` once in every stage, at a seeded random instant (start-up, mid-epoch,
mid-write, between stages); then `dvc repro` must succeed, `dvc status` be clean and the metrics equal
an uninterrupted run's. Record the kill points tried and survived in docs/benchmarks.md.

Usage: python bench/bench_chaos.py [--rounds N] [--seeds S ...] [--smoke]
--smoke only checks that the test is found and configured (CI runs the test itself, one round).
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
    parser.add_argument("--rounds", type=int, default=3, help="kills per stage, per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--smoke", action="store_true", help="collect the test only")
    args = parser.parse_args()
    failures = 0
    for seed in args.seeds[:1] if args.smoke else args.seeds:
        environment = {**os.environ, "CHAOS_ROUNDS": str(args.rounds), "CHAOS_SEED": str(seed)}
        command = [sys.executable, "-m", "pytest", "tests/e2e/test_chaos.py", "-q", "-s", "-p", "no:cacheprovider"]
        if args.smoke:
            command.append("--collect-only")
        completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
        lines = [
            line for line in completed.stdout.splitlines() if line.startswith(("kill points", "1 passed", "1 test"))
        ]
        print(f"seed {seed}, {args.rounds} round(s): {'ok' if completed.returncode == 0 else 'FAILED'}")
        print("\n".join(lines) or completed.stdout[-3000:])
        failures += completed.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
