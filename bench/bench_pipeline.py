"""Pipeline benchmarks (run on demand: `make bench`; record the results in docs/benchmarks.md).

1. Speed of the default run (issue 18): the first `dvc repro` of penguins and of digits with every stage's
   time (DVC's view, the stage's own summary line, and its imports), the no-op rerun, and TensorFlow
   Extended's own penguin example run in the same session on the same machine, with the ratio.
2. --throughput: training examples/s, the model fed from the on-disk TFRecord splits versus the same
   model on in-memory tensors (target ratio >= 0.9).
3. --memory: wall time and peak memory (max RSS) of each stage, each run as its own process.

Usage: python bench/bench_pipeline.py [--sources penguins digits] [--tfx DIR | --no-tfx] [--throughput]
       [--memory] [--repeats N] [--smoke [--keep DIR]]

TFX 1.16 needs Python 3.8-3.10: `--tfx DIR` uses (or creates, with `uv`, from PyPI) a virtual environment there
with `tfx==1.16.0`. Its example code comes from the installed package, its data from ../shared/peers (or is
made from the palmerpenguins table the way TFX's `penguins_processed.csv` was).

--smoke runs every part once on digits with a tiny configuration (tests/e2e/test_bench.py runs it, so
the benchmark cannot rot); --keep leaves the smoke project in DIR (bench_serve.py --smoke serves it).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
MEMORY_STAGES = ("ingest", "validate", "preprocess", "tune", "train", "evaluate", "export")
ENVIRONMENT = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
TFX_VERSION = "1.16.0"
TFX_DATA = ROOT.parent / "shared" / "peers" / "tfx-penguin" / "data"


def sh(command: list[str], cwd: Path, environment: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=environment or ENVIRONMENT, check=True, capture_output=True, text=True)


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
    # Round trip: params.yaml keeps its comments, as in a user's clone (DVC parses the whole file for each stage).
    round_trip = YAML()
    params = round_trip.load(ROOT / "params.yaml")
    params["data"]["source"] = source
    for section, values in (overrides or {}).items():
        params[section].update(values)
    round_trip.dump(params, project / "params.yaml")
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


def timestamped_lines(command: list[str], cwd: Path, environment: dict) -> tuple[float, list[tuple[float, str]]]:
    """Runs `command`, stdout and stderr merged; returns (wall seconds, [(seconds since start, line)])."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    if process.wait():
        tail = "\n".join(line for _, line in lines[-30:])
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{tail}")
    return time.perf_counter() - started, lines


RUNNING = re.compile(r"^Running stage '([\w-]+)'")
SUMMARY = re.compile(r"^\[([\w-]+)\] .*\(([\d.]+) s\)$")
# `python -X importtime`: "import time: self [us] | cumulative | imported package"; a top-level import
# is one whose name is not indented.
IMPORT = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| ( *)\S")


def stage_times(wall: float, lines: list[tuple[float, str]]) -> dict[str, dict[str, float]]:
    """Per stage: `wall` from DVC announcing it to the next announcement (process start, imports, the work,
    DVC saving its outputs), `own` the stage's summary line (from its `run_stage` start), and `imports` the
    seconds of its top-level imports (only when the run had PYTHONPROFILEIMPORTTIME set)."""
    stages: dict[str, dict[str, float]] = {}
    current = None
    for seconds, line in lines:
        if match := RUNNING.match(line):
            if current:
                stages[current]["wall"] = seconds - stages[current]["started"]
            current = match.group(1)
            stages[current] = {"started": seconds, "own": 0.0, "imports": 0.0}
        elif current and (match := SUMMARY.match(line)) and match.group(1) == current:
            stages[current]["own"] = float(match.group(2))
        elif current and (match := IMPORT.match(line)) and not match.group(2):
            stages[current]["imports"] += int(match.group(1)) / 1e6
    if current:
        stages[current]["wall"] = wall - stages[current]["started"]
    return stages


def timed_repro(
    project: Path, imports: bool = False, only: str | None = None
) -> tuple[float, dict[str, dict[str, float]]]:
    """`dvc repro` timed stage by stage; `imports`: forced, each stage's imports timed too; `only`: that stage."""
    environment = {**ENVIRONMENT, **({"PYTHONPROFILEIMPORTTIME": "1"} if imports else {})}
    command = ["dvc", "repro", "--force"] if imports else ["dvc", "repro"]
    command += ["--single-item", only] if only else []
    wall, lines = timestamped_lines(command, project, environment)
    return wall, stage_times(wall, lines)


def bare_import_seconds(module: str, repeats: int = 3) -> float:
    """Median wall time of a fresh `python -c "import <module>"`."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sh([sys.executable, "-c", f"import {module}"], ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_accuracy(project: Path) -> float | None:
    metrics = project / "reports" / "evaluate" / "metrics.json"
    if not metrics.is_file():
        return None
    values = yaml.safe_load(metrics.read_text())
    return values.get("test_accuracy", values.get("accuracy"))


# TensorFlow Extended's own penguin example, beside ours.


def tfx_python(venv: Path) -> Path:
    """The Python of a virtual environment with TFX; created with uv when missing (Python 3.10, from PyPI)."""
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import tfx"], capture_output=True).returncode == 0:
        return python
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is None:
        raise SystemExit("--tfx needs `uv` to install TFX (pip's resolver struggles with tfx 1.16): pip install uv")
    base = subprocess.run([uv, "python", "find", "3.10"], capture_output=True, text=True).stdout.strip()
    base = base or next(iter(sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python")))), "")
    if not base:
        raise SystemExit("--tfx needs a Python 3.10 (TFX 1.16 supports 3.9-3.10): `uv python install 3.10` or pyenv")
    print(f"installing TFX {TFX_VERSION} into {venv} (Python {base}) ...", flush=True)
    # pip inside the environment: TFX installs the user's module file as a wheel with `python -m pip`;
    # dill: Apache Beam 2.74 made it an extra, and tfx_bsl imports it.
    subprocess.run([uv, "venv", "--seed", "-q", "-p", base, str(venv)], check=True)
    # keras-tuner 1.3.5: TFX 1.16 builds its models with Keras 2 (tf_keras, TF_USE_LEGACY_KERAS=1), which
    # keras-tuner 1.4 rejects when Keras 3 is installed (TensorFlow 2.16 needs it installed); keras 3.6:
    # uv's newest Keras 3 breaks TFX's BulkInferrer on TensorFlow 2.16.
    packages = [f"tfx=={TFX_VERSION}", "dill>=0.3.1.1,<0.3.2", "keras-tuner==1.3.5", "keras==3.6.0"]
    subprocess.run([uv, "pip", "install", "-q", "-p", str(python), *packages], check=True)
    return python


def tfx_penguin_data(destination: Path) -> None:
    """TFX's example data: the copy in ../shared/peers, else made from palmerpenguins as TFX made it
    (complete rows, species as 0/1/2, each measurement scaled to [0, 1])."""
    if TFX_DATA.is_dir():
        shutil.copytree(TFX_DATA, destination)
        return
    import palmerpenguins

    columns = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    table = palmerpenguins.load_penguins().dropna(subset=columns)[["species", *columns]]
    table["species"] = table["species"].map({"Adelie": 0, "Chinstrap": 1, "Gentoo": 2})
    for column in columns:
        low, high = table[column].min(), table[column].max()
        table[column] = (table[column] - low) / (high - low)
    table.columns = ["species", "culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_g"]
    (destination / "labelled").mkdir(parents=True)
    (destination / "unlabelled").mkdir()
    table.to_csv(destination / "labelled" / "penguins_processed.csv", index=False)
    table.drop(columns="species").head(10).to_csv(destination / "unlabelled" / "penguins_unlabelled.csv", index=False)


COMPONENT = re.compile(r"Component (\S+) is (running|finished)")


def run_tfx(python: Path, parent: Path) -> tuple[float, dict[str, float]]:
    """TFX's `penguin_pipeline_local.py` (LocalDagRunner, Beam DirectRunner), first run from nothing, as
    its README runs it: Python module files and data under $HOME/penguin, pipeline root under $HOME/tfx.
    Returns (wall seconds, seconds per component)."""
    home = parent / "tfx-home"
    example = home / "penguin"
    example.mkdir(parents=True)
    where = sh([str(python), "-c", "import tfx, os; print(os.path.dirname(tfx.__file__))"], parent)
    package = Path(where.stdout.strip())
    for file in (package / "examples" / "penguin").glob("*.py"):
        shutil.copy(file, example / file.name)
    tfx_penguin_data(example / "data")
    # TFX 1.16 is built for Keras 2: without this TF 2.16 gives it Keras 3 and its BulkInferrer fails.
    environment = {**ENVIRONMENT, "HOME": str(home), "TF_USE_LEGACY_KERAS": "1"}
    wall, lines = timestamped_lines([str(python), "penguin_pipeline_local.py"], example, environment)
    started, components = {}, {}
    for seconds, line in lines:
        if match := COMPONENT.search(line):
            name, state = match.groups()
            if state == "running":
                started[name] = seconds
            else:
                components[name] = seconds - started.pop(name, seconds)
    return wall, components


# --memory and --throughput


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
    from pipeline.core.spec import load as load_spec
    from pipeline.ml.features import make_dataset
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
    name = spec.image.name
    images, labels = zip(*[(x[name].numpy(), y.numpy()) for x, y in streamed.unbatch()], strict=True)
    in_memory = (
        tf.data.Dataset.from_tensor_slices(({name: np.stack(images)}, np.stack(labels)))
        .cache()
        .shuffle(len(labels), seed=0)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    count = spec.split("train").num_examples

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


def print_stage_table(source: str, wall: float, stages: dict[str, dict[str, float]], accuracy) -> None:
    print(f"\n| stage ({source}) | wall, DVC's view (s) | the stage's own line (s) | imports (s) |\n|---|---|---|---|")
    for stage, times in stages.items():
        imports = f"{times['imports']:.1f}" if times["imports"] else "-"
        print(f"| {stage} | {times['wall']:.1f} | {times['own']:.1f} | {imports} |")
    dvc = wall - sum(times["wall"] for times in stages.values())
    print(f"| (DVC before the first stage and after the last) | {dvc:.1f} | | |")
    print(f"| **first `dvc repro`** | **{wall:.1f}** | test accuracy {accuracy} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="+", default=["penguins", "digits"], help="data sources to run")
    parser.add_argument("--tfx", default=str(ROOT / ".bench" / "tfx-venv"), help="TFX virtual environment")
    parser.add_argument("--no-tfx", action="store_true", help="skip TensorFlow Extended's penguin example")
    parser.add_argument("--imports", action="store_true", help="a forced rerun timing every stage's imports")
    parser.add_argument("--memory", action="store_true", help="peak memory of each stage (digits)")
    parser.add_argument("--throughput", action="store_true", help="training input throughput (digits)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3, help="no-op reruns to time")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds per input")
    parser.add_argument("--smoke", action="store_true", help="every part once, tiny: checks the benchmark runs")
    parser.add_argument("--keep", help="with --smoke: keep the smoke project in this folder")
    args = parser.parse_args()
    overrides, memory_stages = None, MEMORY_STAGES
    if args.smoke:  # everything but TFX (an install of its own)
        args.sources, args.no_tfx, args.imports, args.memory, args.throughput = ["digits"], True, True, True, True
        overrides, memory_stages = SMOKE, ("ingest",)
        args.epochs, args.repeats, args.rounds = 2, 1, 1
    imported_stage = "preprocess" if args.smoke else None  # smoke: the import timing of one stage, not a second run
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        parent = Path(args.keep) if args.keep else Path(scratch)
        parent.mkdir(parents=True, exist_ok=True)
        import_repeats = 1 if args.smoke else 3
        tensorflow_import = bare_import_seconds("tensorflow", import_repeats)
        print(
            f"bare `import tensorflow` in a fresh process: {tensorflow_import:.2f} s (median of {import_repeats})",
            flush=True,
        )
        tfx = None
        if not args.no_tfx:
            tfx = run_tfx(tfx_python(Path(args.tfx)), parent)
            print(f"TFX {TFX_VERSION} penguin example, first run: {tfx[0]:.1f} s", flush=True)
        rows = []
        for source in args.sources:
            project = make_project(parent, source, overrides)
            wall, stages = timed_repro(project)
            accuracy = test_accuracy(project)
            noop = statistics.median(timed(["dvc", "repro"], project) for _ in range(args.repeats))
            rows.append((source, wall, noop, accuracy))
            print_stage_table(source, wall, stages, accuracy)
            if args.imports:
                forced_wall, forced = timed_repro(project, imports=True, only=imported_stage)
                print(f"\n| stage ({source}, forced rerun) | wall (s) | imports (s) | imports / bare TF import |")
                print("|---|---|---|---|")
                for stage, times in forced.items():
                    ratio = times["imports"] / tensorflow_import
                    print(f"| {stage} | {times['wall']:.1f} | {times['imports']:.1f} | {ratio:.2f} |")
            if source == "digits" and args.memory:
                memory = {stage: stage_peak_memory(project, stage) for stage in memory_stages}
                print("\n| stage (digits) | wall time (s) | peak RSS (MiB) |\n|---|---|---|")
                for stage, (seconds, peak) in memory.items():
                    print(f"| {stage} | {seconds:.1f} | {peak:.0f} |")
            if source == "digits" and args.throughput:
                streamed, in_memory = throughput(project, args.epochs, args.rounds)
                print("\n| training input (digits, default CNN) | examples/s |\n|---|---|")
                print(f"| TFRecord shards via tf.data (the pipeline's input) | {streamed:.0f} |")
                print(f"| in-memory tensors (cached) | {in_memory:.0f} |")
                print(f"| ratio | {streamed / in_memory:.2f} |")
        print("\n| data | first `dvc repro` (s) | no-op `dvc repro` (s, median) | test accuracy | vs TFX's first run |")
        print("|---|---|---|---|---|")
        for source, wall, noop, accuracy in rows:
            ratio = f"{wall / tfx[0]:.2f}x" if tfx and source == "penguins" else "-"
            print(f"| {source} | {wall:.1f} | {noop:.2f} | {accuracy} | {ratio} |")
        if tfx:
            print(f"| TFX {TFX_VERSION} penguin example | {tfx[0]:.1f} | | | 1.00x |")
            print("\n| TFX component | seconds |\n|---|---|")
            for component, seconds in tfx[1].items():
                print(f"| {component} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
