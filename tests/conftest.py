"""Shared fixtures: tiny configurations and throw-away project folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.runner import quiet_tensorflow

ROOT = Path(__file__).resolve().parents[1]

quiet_tensorflow()  # as every stage process does
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Small enough to train in seconds on 2 cores, big enough to learn digits well above chance.
TINY_OVERRIDES = {
    "model": {"filters": [16], "hidden_units": [32], "dropout": 0.0},
    "train": {"epochs": 4, "batch_size": 32, "learning_rate": 0.003, "early_stopping_patience": 4},
    "export": {"version": 1},
    "tune": {"enabled": False},  # the defaults above; tests of the search turn it on with a tiny budget
    "finetune": {"enabled": False},  # tests of transfer learning turn it on
}
TINY_SEARCH = {"tune": {"enabled": True, "algorithm": "random", "max_trials": 2, "max_epochs": 2}}


# The longest files start first, longest first: `make test` hands whole files to two processes in collection order
# (--no-loadscope-reorder: xdist would otherwise start with the files that hold the most tests, the quick unit
# tests), and a long file handed out last leaves the other process idle at the end. Their seconds of test time in
# a fresh-clone CI run (2026-12-06): bench 827, strategies 447, engine 366, repro 327, experiments 289, series 289,
# gate 246, feedback loop 243, text 230, notebooks 218, chaos 213, object store 167, tune 165, zoo 156, training
# 136, tracking server 127, multi-worker 95, serve 93; the other files 84 or less.
SLOWEST_FIRST = (
    "tests/e2e/test_bench.py",
    "tests/e2e/test_strategies.py",
    "tests/e2e/test_engine.py",
    "tests/e2e/test_repro.py",
    "tests/e2e/test_experiments.py",
    "tests/e2e/test_series.py",
    "tests/e2e/test_gate.py",
    "tests/e2e/test_feedback_loop.py",
    "tests/e2e/test_text.py",
    "tests/e2e/test_notebooks.py",
    "tests/e2e/test_chaos.py",
    "tests/e2e/test_object_store.py",
    "tests/e2e/test_tune.py",
    "tests/e2e/test_zoo.py",
    "tests/e2e/test_training.py",
    "tests/e2e/test_tracking_server.py",
    "tests/e2e/test_multiworker.py",
    "tests/e2e/test_serve.py",
)


def pytest_collection_modifyitems(items) -> None:
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))  # stable: files stay whole


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def merged(params: dict, overrides: dict) -> dict:
    result = {section: dict(values) for section, values in params.items()}
    for section, values in overrides.items():
        result.setdefault(section, {}).update(values)
    return result


def write_params(directory: Path, overrides: dict | None = None) -> Path:
    params = merged(merged(default_params(), TINY_OVERRIDES), overrides or {})
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run(
    command: list[str], cwd: Path, check: bool = True, timeout: int = 600, environment: dict | None = None
) -> subprocess.CompletedProcess:
    environment = environment or dict(os.environ)
    environment = {**environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"}
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment, timeout=timeout)
    if check and completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {completed.returncode}\nstdout:\n{completed.stdout[-4000:]}"
            f"\nstderr:\n{completed.stderr[-4000:]}"
        )
    return completed


def stage(name: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pipeline", "run", name], cwd, check=check)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """An empty folder with tiny params.yaml, as the current directory."""
    write_params(tmp_path)
    (tmp_path / "data" / "user").mkdir(parents=True)
    (tmp_path / "data" / "feedback").mkdir(parents=True)
    shutil.copytree(ROOT / "expectations", tmp_path / "expectations")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_dvc_project(parent: Path, overrides: dict | None = None) -> Path:
    """A git + DVC repository holding this project's pipeline (code, dvc.yaml) with tiny params."""
    project = parent / "project"
    project.mkdir()
    shutil.copytree(ROOT / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "user", project / "data" / "user")
    shutil.copytree(ROOT / "data" / "feedback", project / "data" / "feedback")
    shutil.copytree(ROOT / "expectations", project / "expectations")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    write_params(project, overrides)
    run(["git", "init", "-q"], project)
    run(["git", "config", "user.email", "tests@localhost"], project)
    run(["git", "config", "user.name", "tests"], project)
    run(["dvc", "init", "-q"], project)
    run(["dvc", "config", "core.analytics", "false"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny pipeline"], project)
    return project


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    return make_dvc_project(tmp_path)


@pytest.fixture(autouse=True)
def isolated_tracking_uri():
    """`mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI: undo it after each test, or the
    next test's stage processes would write into this test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def interrupt_stage(name: str, cwd: Path, progress, at_least: int, timeout: float = 300) -> int:
    """Starts stage `name`, kills it (SIGKILL, its whole process group) once `progress()` reaches
    `at_least` (or it ends, or `timeout` passes), and returns the progress it had made."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", name],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while progress() < at_least and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return progress()


@contextlib.contextmanager
def serving(model: str, cwd: Path, timeout: float = 120):
    """`pipeline serve --model MODEL` on a free localhost port; yields its base URL once /health answers."""
    from pipeline.core.processes import free_port

    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--model", model, "--port", str(port)]
    with background_server(command, cwd, f"http://127.0.0.1:{port}", timeout) as base:
        yield base


@contextlib.contextmanager
def background_server(command: list[str], cwd: Path, base: str, timeout: float = 120, environment=None):
    """Runs a server command; yields `base` once `<base>/health` answers; stops it (SIGTERM) after."""
    from pipeline.core.processes import background_server as server

    with server(command, base, timeout, cwd=cwd, environment=environment):
        yield base
