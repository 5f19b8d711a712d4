"""Pipeline benchmarks (run on demand: `make bench`; record the results in docs/benchmarks.md).

1. Training throughput, examples/s: the model fed from the on-disk TFRecord splits versus the
   same model on in-memory tensors (target ratio >= 0.9).
2. End-to-end `dvc repro` wall time on digits and on penguins, and the no-op rerun time.
3. Wall time and peak memory (max RSS) of each stage, each run as its own process.

Usage: python bench/bench_pipeline.py [--epochs N] [--repeats N] [--smoke [--keep DIR]]

--smoke runs every part once on digits with a tiny configuration (tests/e2e/test_bench.py runs it, so
the benchmark cannot rot); --keep leaves the smoke project in DIR (bench_serve.py --smoke serves it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "validate", "preprocess", "tune", "train", "evaluate", "export")
ENVIRONMENT = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def sh(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=ENVIRONMENT, check=True, capture_output=True, text=True)


# A configuration that runs every stage in seconds (--smoke): the numbers mean nothing, the code paths run.
SMOKE = {
    "model": {"filters": [8], "hidden_units": [16]},
    "train": {"epochs": 1},
    "tune": {"enabled": False},
    "finetune": {"enabled": False},
    "export": {"version": 1},
}


def make_project(parent: Path, source: str, overrides: dict | None = None) -> Path:
    """A git + DVC repository holding this project's pipeline, as a user's clone would."""
    project = parent / source
    project.mkdir()
    shutil.copytree(ROOT / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for data in ("user", "feedback"):  # every dependency of the ingest stage
        shutil.copytree(ROOT / "data" / data, project / "data" / data)
    shutil.copytree(ROOT / "expectations", project / "expectations")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = source
    for section, values in (overrides or {}).items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "bench@localhost"],
        ["git", "config", "user.name", "bench"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "bench"],
    ):
        sh(command, project)
    return project


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    sh(command, cwd)
    return time.perf_counter() - started


def stage_peak_memory(project: Path, stage: str) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one stage process, measured by a parent that runs only it."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "started = time.perf_counter()\n"
        f"subprocess.run([sys.executable, '-m', 'pipeline', 'run', {stage!r}], check=True,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    seconds, kilobytes = sh([sys.executable, "-c", probe], project).stdout.split()
    return float(seconds), int(kilobytes) / 1024


def throughput(project: Path, epochs: int, rounds: int) -> tuple[float, float]:
    """Examples/s of the default model: streamed from TFRecords vs in-memory tensors (first epoch excluded)."""
    os.chdir(project)
    import numpy as np
    import tensorflow as tf

    from pipeline.core.config import load_config
    from pipeline.ml.features import load_spec, make_dataset
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.models import build_model

    config = load_config("params.yaml")
    spec = load_spec(config.paths.prepared)
    batch_size = config.train.batch_size
    streamed = make_dataset(
        config.paths.prepared,
        spec,
        "train",
        batch_size,
        shuffle=True,
        seed=0,
        cache_limit_mb=config.train.cache_limit_mb,
    )
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in streamed.unbatch()], strict=True)
    in_memory = (
        tf.data.Dataset.from_tensor_slices((np.stack(images), np.stack(labels)))
        .cache()
        .shuffle(len(labels), seed=0)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    count = spec["splits"]["train"]["num_examples"]

    class EpochTimer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.started)

    # The first models built in a process train slower (warm-up): alternate the two inputs and
    # keep each one's best of several rounds.
    results = {"streamed": [], "in_memory": []}
    for _ in range(rounds):
        for name, dataset in (("streamed", streamed), ("in_memory", in_memory)):
            tf.keras.utils.set_random_seed(0)
            model = build_model(defaults_from_config(config), spec)
            timer = EpochTimer()
            timer.times = []
            model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
            results[name].append(count / statistics.median(timer.times[1:]))
    return max(results["streamed"]), max(results["in_memory"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3, help="no-op reruns to time")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds per input")
    parser.add_argument("--smoke", action="store_true", help="every part once, tiny: checks the benchmark runs")
    parser.add_argument("--keep", help="with --smoke: keep the smoke project in this folder")
    args = parser.parse_args()
    sources, overrides, measured = ("digits", "penguins"), None, STAGES
    if args.smoke:
        sources, overrides, measured = ("digits",), SMOKE, ("ingest",)
        args.epochs, args.repeats, args.rounds = 2, 1, 1
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        parent = Path(args.keep) if args.keep else Path(scratch)
        parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for source in sources:
            project = make_project(parent, source, overrides)
            first = timed(["dvc", "repro"], project)
            noop = statistics.median(timed(["dvc", "repro"], project) for _ in range(args.repeats))
            rows.append((source, first, noop))
            if source == "digits":
                stages = {stage: stage_peak_memory(project, stage) for stage in measured}
                streamed, in_memory = throughput(project, args.epochs, args.rounds)
        print("| data | first `dvc repro` (s) | no-op `dvc repro` (s, median) |\n|---|---|---|")
        for source, first, noop in rows:
            print(f"| {source} | {first:.1f} | {noop:.2f} |")
        print("\n| stage (digits) | wall time (s) | peak RSS (MiB) |\n|---|---|---|")
        for stage, (seconds, peak) in stages.items():
            print(f"| {stage} | {seconds:.1f} | {peak:.0f} |")
        print("\n| training input (digits, default CNN) | examples/s |\n|---|---|")
        print(f"| TFRecord shards via tf.data (the pipeline's input) | {streamed:.0f} |")
        print(f"| in-memory tensors (cached) | {in_memory:.0f} |")
        print(f"| ratio | {streamed / in_memory:.2f} |")


if __name__ == "__main__":
    main()
