"""Time series quality: the pipeline's forecasts on real series against the last-value, seasonal-naive and
moving-average forecasts of the same test windows, for each model family, with the search off and on.

Series (real, shipped inside installed packages; nothing is downloaded):
- `sunspots`: yearly sunspot numbers 1700-2008 (309 steps; the solar cycle, about 11 years, is the season);
- `co2`: weekly CO2 at Mauna Loa 1958-2001 (2,284 steps, 59 missing, interpolated; season 52 weeks);
- `elec_equip`: monthly orders of electrical equipment in the euro area 1995-2016 (257 steps; season 12);
- `realgdp`: statsmodels' `macrodata`, quarterly US real GDP 1959-2009 (203 steps; season 4) with real consumption
  and investment beside it, brought as a user's CSV with `data.time_column` (three columns in each window).

Each series runs the stages ingest to evaluate in a fresh folder with `params.yaml`'s defaults (`data.horizon: 3`,
`preprocess.window: auto`), a suite profiled from the data itself; the baselines are computed by `evaluate` on the
same test windows. MASE is the model's MAE over the seasonal-naive forecast's.

Usage: python bench/bench_series.py [--sets sunspots co2 elec_equip realgdp] [--families mlp rnn cnn transformer]
    [--seeds 42 ...] [--search]  (also the default search, `tune.enabled: true`) [--set SECTION.KEY=VALUE ...]
    [--drift]  (the monitor's series tests on every stretch of each held-out block, and on the same stretches
    with changes four times as wide) [--smoke]  (sunspots, the MLP, 2 epochs: checks the benchmark runs)
    [--transfer]  (only this: a model of US real consumption fine-tuned on 120 quarters of real GDP, against the
    same network trained on them from scratch, per seed)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES: dict[str, dict] = {}  # --set: params.yaml overrides by section


def write_set(name: str, folder: Path) -> dict:
    """The series as the `data` section of params.yaml (a CSV in `folder`, or the built-in source)."""
    if name != "realgdp":
        return {"source": name}
    table = macro_series("realgdp").rename(columns={"value": "realgdp"})
    for column in ("realcons", "realinv"):
        table[column] = macro_series(column)["value"]
    path = folder / "data" / "user" / "realgdp.csv"
    table.to_csv(path, index=False)
    return {"source": "csv", "path": str(path), "label": "realgdp", "time_column": "quarter"}


def run_stages(folder: Path, data: dict, model: dict, stages, search: bool = False, seed: int = 42, epochs=None):
    """Each stage as `dvc repro` runs it (its own process), timed from outside."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tune"]["enabled"] = search
    params["finetune"]["enabled"] = False
    params["base"]["seed"] = seed
    params["train"]["epochs"] = epochs or params["train"]["epochs"]
    params["data"].update(data)
    params["model"].update(model)
    for section, values in OVERRIDES.items():
        params[section].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    seconds = {}
    for stage in stages:
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", "pipeline", "run", stage], cwd=folder, capture_output=True)
        if completed.returncode:
            raise SystemExit(f"{stage} failed:\n{completed.stderr.decode(errors='replace')[-3000:]}")
        seconds[stage] = time.perf_counter() - started
    return seconds


def linear_baseline(folder: Path) -> float | None:
    """The MASE of the linear baseline that `evaluate` fitted on the same windows (`baselines.json`)."""
    path = folder / "reports" / "evaluate" / "baselines.json"
    measured = json.loads(path.read_text()) if path.is_file() else {"baselines": []}
    scores = [entry["metrics"]["mase"] for entry in measured["baselines"] if entry["role"] == "linear"]
    return round(scores[0], 3) if scores else None


def macro_series(column: str, quarters: int | None = None) -> pd.DataFrame:
    """A column of statsmodels' `macrodata` (quarterly US figures 1959-2009) as `quarter`, `value`; the last
    `quarters` only, if given."""
    location = Path(importlib.util.find_spec("statsmodels").submodule_search_locations[0])
    raw = pd.read_csv(location / "datasets" / "macrodata" / "macrodata.csv")
    starts = pd.PeriodIndex.from_fields(year=raw["year"].astype(int), quarter=raw["quarter"].astype(int), freq="Q")
    table = pd.DataFrame({"quarter": starts.to_timestamp().strftime("%Y-%m-%d"), "value": raw[column]})
    return table if quarters is None else table.iloc[-quarters:]


def transfer_rows(seeds: list[int]) -> list[dict]:
    """A model trained on US real consumption (203 quarters) fine-tuned on a short stretch of real GDP (the last
    120 quarters), against the same network trained on that stretch from scratch (the finetune stage)."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for sub in ("data/user", "data/feedback", "expectations"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        macro_series("realcons").to_csv(folder / "data/user/consumption.csv", index=False)
        macro_series("realgdp", 120).to_csv(folder / "data/user/gdp.csv", index=False)
        source = {"source": "csv", "path": "data/user/consumption.csv", "label": "value", "time_column": "quarter"}
        target = {**source, "path": "data/user/gdp.csv"}
        profile = [sys.executable, "-m", "pipeline", "validate", "--profile", "--force"]
        run_stages(folder, target, {}, ())
        subprocess.run(profile, cwd=folder, check=True, capture_output=True)
        run_stages(folder, source, {}, ())
        subprocess.run(profile, cwd=folder, check=True, capture_output=True)
        OVERRIDES.setdefault("finetune", {}).update(enabled=True, data=target, labelled_per_class=None)
        run_stages(folder, source, {}, ("ingest", "validate", "preprocess", "prepare_target"))
        for seed in seeds:
            run_stages(folder, source, {}, ("tune", "train", "finetune"), seed=seed)
            result = json.loads((folder / "reports" / "finetune" / "transfer.json").read_text())
            row = {
                "seed": seed,
                "target training windows": result["labelled_train_examples"],
                "test windows": result["test_examples"],
                "fine-tuned MASE": round(result["finetuned"]["mase"], 3),
                "from scratch MASE": round(result["from_scratch"]["mase"], 3),
                "gain": round(result["transfer_gain_mase"], 3),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def drift_rates(folder: Path, name: str) -> list[dict]:
    """How often the monitor's series tests fire on stretches of the held-out blocks (false alarms), and on the
    same stretches with every change four times as wide."""
    from types import SimpleNamespace

    from pipeline.core.config import MonitorConfig
    from pipeline.core.spec import load
    from pipeline.ml.modalities import model_modality
    from pipeline.ops.monitoring import read_reference

    prepared = folder / "data" / "prepared"
    spec = load(prepared)
    defaults = MonitorConfig()
    settings = SimpleNamespace(
        series_change_shift=defaults.series_change_shift, series_spread_ratio=defaults.series_spread_ratio
    )
    reference, _ = read_reference(prepared, spec, "train")
    modality, rows = model_modality(spec.kind), []
    for split in ("validation", "test"):
        held, _ = read_reference(prepared, spec, split)
        count = len(next(iter(held.values())))
        size = min(count, 30)
        stretches = [slice(start, start + size) for start in range(0, count - size + 1)]
        for label, widen in (("as it is", 1.0), ("changes x4", 4.0)):
            alarms = 0
            for stretch in stretches:
                current = {}
                for feature, values in held.items():
                    windows = values[stretch]
                    current[feature] = windows.mean() + widen * (windows - windows.mean())
                families = modality.drift_families(reference, current, spec, settings, (None, None))
                alarms += bool(families["series"]["drifted"])
            row = {
                "set": name,
                "block": split,
                "stretch": f"{size} windows",
                "stretches": len(stretches),
                "data": label,
                "retrain": f"{100 * alarms / len(stretches):.0f} %",
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["sunspots", "co2", "elec_equip", "realgdp"])
    parser.add_argument("--families", nargs="+", default=["mlp", "rnn", "cnn", "transformer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--search", action="store_true", help="also the default search (tune.enabled: true)")
    parser.add_argument("--smoke", action="store_true", help="sunspots, the MLP, 2 epochs")
    parser.add_argument("--set", nargs="*", default=[], help="params.yaml overrides: section.key=value")
    parser.add_argument("--drift", action="store_true", help="also the series drift tests' alarm rates")
    parser.add_argument("--transfer", action="store_true", help="only the transfer-learning comparison")
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        OVERRIDES.setdefault(section, {})[name] = yaml.safe_load(value)
    if args.transfer:
        print(pd.DataFrame(transfer_rows(args.seeds)).to_markdown(index=False))
        return
    epochs = None
    if args.smoke:
        args.sets, args.families, args.seeds, epochs = ["sunspots"], ["mlp"], [42], 2
    rows, drift_rows = [], []
    for name in args.sets:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            for sub in ("data/user", "data/feedback"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            data = write_set(name, folder)
            run_stages(folder, data, {}, ())  # params.yaml, for the profile
            profile = [sys.executable, "-m", "pipeline", "validate", "--profile", "--force"]
            subprocess.run(profile, cwd=folder, check=True, capture_output=True)
            run_stages(folder, data, {}, ("ingest", "validate", "preprocess"))
            spec = json.loads((folder / "data" / "prepared" / "spec.json").read_text())
            runs = [(family, False) for family in args.families] + ([("auto", True)] if args.search else [])
            for family, search in runs:
                for seed in args.seeds:
                    model = {"family": family}
                    seconds = run_stages(folder, data, model, ("tune", "train", "evaluate"), search, seed, epochs)
                    metrics = json.loads((folder / "reports" / "evaluate" / "metrics.json").read_text())
                    if search:
                        chosen = json.loads((folder / "models" / "hyperparameters.json").read_text())
                        family = f"search: {chosen['hyperparameters']['family']}"
                    row = {
                        "set": name,
                        "family": family,
                        "seed": seed,
                        "test windows": metrics["num_examples"],
                        "MASE": round(metrics["mase"], 3),
                        "MAE": round(metrics["mae"], 3),
                        "sMAPE %": round(metrics["smape"], 2),
                        "last value MAE": round(metrics["last_value_mae"], 3),
                        "seasonal naive MAE": round(metrics["seasonal_naive_mae"], 3),
                        "moving average MAE": round(metrics["moving_average_mae"], 3),
                        "linear baseline MASE": linear_baseline(folder),
                        "base": spec["series"]["base"],
                        "window": spec["series"]["window"],
                        "s (tune+train)": round(seconds["tune"] + seconds["train"], 1),
                    }
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            if args.drift:
                drift_rows += drift_rates(folder, name)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    if len(args.seeds) > 1:
        print(table.groupby(["set", "family"])["MASE"].agg(["mean", "min", "max"]).round(3).to_markdown())
    if drift_rows:
        print(pd.DataFrame(drift_rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
