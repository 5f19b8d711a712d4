"""Search benchmark: Hyperband versus random search on digits, best validation accuracy
against the total training epochs spent (run on demand; results in docs/benchmarks.md).

Usage: python bench/bench_tune.py [--random-trials N] [--plot PATH] [--smoke]

--smoke: two 1-epoch trials of each algorithm on a tiny model (checks the benchmark runs).
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
from bench_pipeline import SMOKE, make_project, sh  # noqa: E402


def run_search(
    project: Path, algorithm: str, max_trials: int, max_epochs: int | None = None
) -> tuple[dict, list[dict]]:
    params = yaml.safe_load((project / "params.yaml").read_text())
    # scored by validation accuracy, as the figures in docs/benchmarks.md (the default objective is val_loss)
    params["tune"].update(
        enabled=True, algorithm=algorithm, max_trials=max_trials, max_seconds=None, objective="val_accuracy"
    )
    if max_epochs:
        params["tune"]["max_epochs"] = max_epochs
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh([sys.executable, "-m", "pipeline", "run", "tune"], project)
    summary = json.loads((project / "reports/tune/summary.json").read_text())
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
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: checks the benchmark runs")
    args = parser.parse_args()
    curves = {}
    budgets = (("hyperband", 30, None), ("random", args.random_trials, None))
    if args.smoke:
        budgets = (("hyperband", 1, 2), ("random", 1, 1))
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as scratch:
        project = make_project(Path(scratch), "digits", SMOKE if args.smoke else None)
        for stage in ("ingest", "validate", "preprocess"):
            sh([sys.executable, "-m", "pipeline", "run", stage], project)
        print("| algorithm | trials | total epochs | best val_accuracy | search time (s) |\n|---|---|---|---|---|")
        for algorithm, trials, max_epochs in budgets:
            summary, rows = run_search(project, algorithm, trials, max_epochs)
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
    if args.smoke:
        args.plot = str(Path(tempfile.gettempdir()) / "bench_tune_smoke.png")
    figure.savefig(args.plot, dpi=100)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
