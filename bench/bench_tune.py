"""Search benchmark: Hyperband versus random search on digits, best validation accuracy
against the total training epochs spent (run on demand; results in docs/benchmarks.md).

Usage: python bench/bench_tune.py [--random-trials N] [--plot PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_project, sh  # noqa: E402


def run_search(project: Path, algorithm: str, max_trials: int) -> tuple[dict, list[dict]]:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"].update(algorithm=algorithm, max_trials=max_trials, max_seconds=None)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh([sys.executable, "-m", "pipeline", "run", "tune"], project)
    summary = json.loads((project / "reports/tune/metrics.json").read_text())
    with open(project / "reports/tune/trials.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["status"] == "COMPLETED"]
    return summary, rows


def best_so_far(rows: list[dict]) -> list[tuple[int, float]]:
    """(cumulative epochs, best score so far) after each trial, in trial order."""
    points, epochs, best = [], 0, 0.0
    for row in sorted(rows, key=lambda row: int(row["trial"])):
        epochs += int(row["epochs"])
        best = max(best, float(row["score"]))
        points.append((epochs, best))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-trials", type=int, default=10, help="trials of random search (9 epochs max each)")
    parser.add_argument("--plot", default="docs/figures/tune_hyperband_vs_random.png")
    args = parser.parse_args()
    curves = {}
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as scratch:
        project = make_project(Path(scratch), "digits")
        for stage in ("ingest", "validate", "preprocess"):
            sh([sys.executable, "-m", "pipeline", "run", stage], project)
        print("| algorithm | trials | total epochs | best val_accuracy | search time (s) |\n|---|---|---|---|---|")
        for algorithm, trials in (("hyperband", 30), ("random", args.random_trials)):
            summary, rows = run_search(project, algorithm, trials)
            curves[algorithm] = best_so_far(rows)
            print(
                f"| {algorithm} | {summary['trials_completed']} | {summary['total_epochs']} |"
                f" {summary['best_score']:.4f} | {summary['search_seconds']:.0f} |"
            )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for algorithm, points in curves.items():
        axis.step([epochs for epochs, _ in points], [best for _, best in points], where="post", label=algorithm)
    axis.set_xlabel("total training epochs spent")
    axis.set_ylabel("best validation accuracy so far")
    axis.set_title("Hyperband vs random search (digits, default space)")
    axis.legend()
    figure.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=100)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
