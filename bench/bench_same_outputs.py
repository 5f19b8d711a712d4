"""Same outputs before and after a refactoring: `dvc repro` of two versions of the code on the same data.

Each version (a git revision, or the working tree) is copied into a temporary folder and runs the whole
pipeline with `base.deterministic: true` on each data source asked for. What is compared, file by file:
- `data/prepared`: every shard's bytes and the parsed `spec.json` (less its `version` field, which a new
  contract may add);
- every holdout metric (`reports/evaluate/metrics.json`, and the fine-tuning's `reports/finetune/holdout.json`);
- the exported SavedModel's predictions, through `pipeline predict` on a CSV of the ingested table (tables) or
  the image folder of the first class (images);
- the gate's decision.

Usage: python bench/bench_same_outputs.py [--before REV] [--after REV|worktree] [--sources digits penguins] [--smoke]
Exit 1 when anything differs; the differences are printed. Results are kept in --cache (one folder per
revision and source), so a second comparison against the same revision does not rerun it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKTREE = "worktree"


def checkout(revision: str, target: Path) -> str:
    """The project at `revision` (or the working tree's tracked and new files) in `target`; returns its name."""
    if revision == WORKTREE:
        files = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True, text=True,
        ).stdout.split("\0")  # fmt: skip
        for name in filter(None, files):
            source = ROOT / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
        subprocess.run(["git", "init", "-q"], cwd=target, check=True)
        subprocess.run(["git", "add", "-A"], cwd=target, check=True)
        subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "w"], cwd=target)
        return WORKTREE
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "checkout", "-q", revision], cwd=target, check=True)
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=target, capture_output=True, text=True, check=True
    ).stdout.strip()


def run_pipeline(project: Path, source: str) -> float:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base"]["deterministic"] = True
    params["data"]["source"] = source
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The copy's own code, not the editable install's: PYTHONPATH comes before site-packages.
    environment = {**os.environ, "PYTHONPATH": str(project), "DVC_NO_ANALYTICS": "1"}
    environment.pop("MLFLOW_TRACKING_URI", None)  # the copy's own store
    started = time.perf_counter()
    completed = subprocess.run(["dvc", "repro"], cwd=project, env=environment, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(
            f"dvc repro failed in {project} on {source}:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
        )
    return time.perf_counter() - started


def predictions(project: Path, source: str) -> str:
    ingested = project / "data" / "ingested"
    tables = sorted(ingested.glob("source.csv")) + sorted(ingested.glob("source.parquet"))
    if tables:
        import pandas as pd

        table = pd.read_parquet(tables[0]) if tables[0].suffix == ".parquet" else pd.read_csv(tables[0])
        batch = project / "batch.csv"
        table.head(200).to_csv(batch, index=False)
    else:
        batch = sorted(path for path in (ingested / "images").iterdir() if path.is_dir())[0]
    environment = {**os.environ, "PYTHONPATH": str(project)}
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", "--model", "models/serving", "--input", str(batch)],
        cwd=project, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    if completed.returncode != 0:
        raise SystemExit(f"pipeline predict failed in {project}:\n{completed.stderr[-3000:]}")
    return completed.stdout.replace(str(project), "<project>")


def outputs(project: Path, source: str) -> dict:
    prepared = project / "data" / "prepared"
    spec = json.loads((prepared / "spec.json").read_text())
    spec.pop("version", None)
    result = {
        "shards": {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(prepared.glob("*.tfrecord"))
        },
        "spec": spec,
        "metrics": json.loads((project / "reports" / "evaluate" / "metrics.json").read_text()),
        "predictions": predictions(project, source),
        "gate": json.loads((project / "reports" / "gate" / "decision.json").read_text()).get("blessed"),
    }
    holdout = project / "reports" / "finetune" / "holdout.json"
    if holdout.is_file():
        result["finetune"] = json.loads(holdout.read_text())
    return result


def measured(revision: str, source: str, cache: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as folder:
        project = Path(folder) / "project"
        project.mkdir()
        name = checkout(revision, project)
        saved = cache / f"{name}-{source}.json"
        if name != WORKTREE and saved.is_file():
            return json.loads(saved.read_text())
        seconds = run_pipeline(project, source)
        result = {**outputs(project, source), "seconds": round(seconds, 1)}
    cache.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=1))
    return result


def differences(before: dict, after: dict, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key == "seconds":
                continue
            if key not in before or key not in after:
                found.append(f"{path}{key}: only {'after' if key not in before else 'before'}")
            else:
                found += differences(before[key], after[key], f"{path}{key}.")
        return found
    return [] if before == after else [f"{path[:-1]}: {str(before)[:200]!r} -> {str(after)[:200]!r}"]


def smoke() -> int:
    """Both kinds of copy hold the project, and the comparison finds a changed value and a missing key."""
    for revision in ("HEAD", WORKTREE):
        with tempfile.TemporaryDirectory(prefix="same-outputs-") as folder:
            checkout(revision, Path(folder))
            assert (Path(folder) / "params.yaml").is_file() and (Path(folder) / "dvc.yaml").is_file()
    found = differences({"a": {"b": 1, "c": 2}, "seconds": 1}, {"a": {"b": 1, "c": 3, "d": 4}, "seconds": 2})
    assert found == ["a.c: '2' -> '3'", "a.d: only after"], found
    print("smoke: the copies and the comparison work")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="HEAD")
    parser.add_argument("--after", default=WORKTREE)
    parser.add_argument("--sources", nargs="+", default=["digits", "penguins"])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench-same-outputs")
    parser.add_argument("--smoke", action="store_true", help="check the copies and the comparison, run nothing")
    args = parser.parse_args()
    if args.smoke:
        return smoke()
    failed = 0
    for source in args.sources:
        before = measured(args.before, source, args.cache)
        after = measured(args.after, source, args.cache)
        found = differences(before, after)
        print(
            f"{source}: {len(before['shards'])} shards, metrics {before['metrics']},"
            f" {before['seconds']} s before / {after['seconds']} s after: "
            + ("identical" if not found else f"{len(found)} differences")
        )
        for line in found:
            print(f"  {line}")
        failed += bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
