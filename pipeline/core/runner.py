"""The shared stage runner: configuration, logging, timing, error reporting and MLflow.

Every stage module is a pure function plus a thin `main` that calls `run_stage`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from pipeline.core.config import Config, load_config
from pipeline.core.errors import USER_ERRORS, StageError  # noqa: F401 - StageError: part of this module's interface

log = logging.getLogger("pipeline")


@dataclasses.dataclass
class StageResult:
    """What a stage reports back to the runner."""

    summary: str
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    artifacts: list[Path] = dataclasses.field(default_factory=list)


def quiet_tensorflow() -> None:
    """TensorFlow's C++ log level, unless the user set one: warnings and errors hidden (2), and on a
    machine without an NVIDIA driver errors too (3), where every process would otherwise print
    `failed call to cuInit: UNKNOWN ERROR (303)`: no GPU is the expected state there, not an error."""
    has_driver = any(Path(path).exists() for path in ("/dev/nvidiactl", "/proc/driver/nvidia"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_driver else "3")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    # Libraries' start-up chatter hides the pipeline's own output.
    quiet_tensorflow()
    for noisy in ("great_expectations", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or settings: reported as one clear line, not a traceback."""
    return USER_ERRORS


def run_stage(
    stage: str,
    params_file: str | Path,
    body: Callable[[Config], StageResult],
    track: bool | Callable[[Config], bool] = True,
) -> StageResult:
    """Loads the config, runs `body(config)` inside the pipeline's MLflow run, prints a summary.

    `track(config)` false (a stage that its settings skip): the body runs without MLflow, whose import and
    run lookup are most of such a stage's time (2-3 s of a process that writes a few files).
    Exits with status 2 and a one-line reason on a configuration or data error.
    """
    started = time.perf_counter()
    try:
        config = load_config(params_file)
        configure_logging(config.base.log_level)
        if track(config) if callable(track) else track:
            from pipeline.core import tracking

            with tracking.pipeline_run(config, stage):
                result = body(config)
                tracking.log_stage_result(stage, result)
        else:
            result = body(config)
    except user_errors() as error:
        print(f"pipeline {stage}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    elapsed = time.perf_counter() - started
    print(f"[{stage}] {result.summary} ({elapsed:.1f} s)", flush=True)
    return result


def format_metrics(metrics: dict[str, float], keys: Optional[list[str]] = None) -> str:
    keys = keys or list(metrics)
    return ", ".join(f"{key}={metrics[key]:.4f}" for key in keys if key in metrics)
