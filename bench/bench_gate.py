"""The default gate on users' data (issue 29): what `gate.thresholds: auto` decides for a first model, against
the single bar it replaced (accuracy >= 0.9 for every classification), on real tables where 0.9 is out of reach
or trivially easy.

Each set is a fresh project (as a user's clone) run with `dvc repro` up to the gate, `params.yaml`'s defaults
(the search on), a suite profiled from the data itself. Tables that ship inside installed packages (nothing is
downloaded):
- `penguins` (built in; three species, easy: a linear model is right on every test bird);
- `fair`: statsmodels' `fair.csv`, 6,366 women surveyed by Redbook in 1974: whether they had an affair
  (`affairs > 0`) from marriage rating, age, years married, children, religiousness, education and occupations
  (hard: about 0.7 is what the columns allow);
- `anes96`: statsmodels' `anes96.csv`, 944 voters of the 1996 US election: Clinton or Dole from party
  identification, age, education, income and self-placement (`vote`);
- `rotten_tomatoes` (built in; one-sentence reviews, fresh or rotten: about 0.73).

    python bench/bench_gate.py [--sets penguins fair anes96 rotten_tomatoes] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import make_project, sh  # noqa: E402 (a sibling script)

STATSMODELS_COLUMNS = {
    "fair": ("affair", ["rate_marriage", "age", "yrs_married", "children", "religious", "educ", "occupation",
                        "occupation_husb"]),
    "anes96": ("vote", ["popul", "TVnews", "selfLR", "ClinLR", "DoleLR", "PID", "age", "educ", "income"]),
}  # fmt: skip


def statsmodels_table(name: str, folder: Path) -> Path:
    location = Path(importlib.util.find_spec("statsmodels").submodule_search_locations[0]) / "datasets" / name
    raw = pd.read_csv(location / f"{name}.csv", sep=None, engine="python")
    raw.columns = [column.strip("'\"") for column in raw.columns]  # anes96's header names are quoted
    label, columns = STATSMODELS_COLUMNS[name]
    table = raw[columns].copy()
    if name == "fair":
        table[label] = (raw["affairs"] > 0).map({True: "yes", False: "no"})
    else:
        table[label] = raw["vote"].map({0: "Clinton", 1: "Dole"})
    path = folder / f"{name}.csv"
    table.to_csv(path, index=False)
    return path


def run_set(name: str, scratch: Path, overrides: dict) -> dict:
    data = {"source": name}
    if name in STATSMODELS_COLUMNS:
        data = {"source": "csv", "path": str(statsmodels_table(name, scratch)), "label": STATSMODELS_COLUMNS[name][0]}
    project = make_project(scratch, name, {"data": data, "finetune": {"enabled": False}, **overrides})
    if name in STATSMODELS_COLUMNS:
        sh([sys.executable, "-m", "pipeline", "validate", "--profile", "--force"], project)
    completed = subprocess.run(["dvc", "repro", "gate"], cwd=project, capture_output=True, text=True)
    if completed.returncode:
        raise SystemExit(f"{name}: dvc repro failed\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    decision = json.loads((project / "reports" / "gate" / "decision.json").read_text())
    metrics = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())
    trivial, linear = decision["baselines"]["baselines"]
    return {
        "set": name,
        "test examples": metrics["num_examples"],
        "model accuracy": round(metrics["accuracy"], 4),
        "majority class": round(trivial["metrics"]["accuracy"], 4),
        "logistic regression": round(linear["metrics"]["accuracy"], 4),
        "model better than majority (share of resamples)": trivial["model_better"],
        "logistic regression better than model": linear["baseline_better"],
        "behaviour checks passed": f"{sum(check['passes'] for check in decision['behaviour'])}"
        f" of {len(decision['behaviour'])}",
        "old bar (accuracy >= 0.9)": "blessed" if metrics["accuracy"] >= 0.9 else "rejected",
        "auto (baselines)": "blessed" if decision["blessed"] else "rejected",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["penguins", "fair", "anes96", "rotten_tomatoes"])
    parser.add_argument("--smoke", action="store_true", help="penguins, search off, 2 epochs")
    args = parser.parse_args()
    overrides = {}
    if args.smoke:
        args.sets = ["penguins"]
        overrides = {"tune": {"enabled": False}, "train": {"epochs": 2}, "export": {"version": 1}}
    rows = []
    for name in args.sets:
        with tempfile.TemporaryDirectory() as scratch:
            row = run_set(name, Path(scratch), overrides)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
