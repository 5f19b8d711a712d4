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
from typing import Any, Optional

from pipeline.config import Config, ConfigError, load_config

log = logging.getLogger("pipeline")


@dataclasses.dataclass
class StageResult:
    """What a stage reports back to the runner."""

    summary: str
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    artifacts: list[Path] = dataclasses.field(default_factory=list)


class StageError(RuntimeError):
    """A stage cannot go on; the message says why and what to do."""


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    # Libraries' start-up chatter hides the pipeline's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for noisy in ("great_expectations", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or settings: reported as one clear line, not a traceback."""
    from pipeline.datasets import DataError

    return (ConfigError, DataError, StageError)


def run_stage(
    stage: str,
    params_file: str | Path,
    body: Callable[[Config], StageResult],
    track: bool = True,
) -> StageResult:
    """Loads the config, runs `body(config)` inside the pipeline's MLflow run, prints a summary.

    Exits with status 2 and a one-line reason on a configuration or data error.
    """
    started = time.perf_counter()
    try:
        config = load_config(params_file)
        configure_logging(config.base.log_level)
        if track:
            from pipeline import tracking

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


def setup_tensorflow(config: Config) -> Any:
    """Splits the CPU into logical devices if asked, seeds every generator, applies op determinism,
    picks the distribution strategy and the mixed-precision policy; returns the strategy."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from pipeline.distribute import apply_precision, get_strategy, split_cpu

    if config.base.logical_cpus:
        split_cpu(config.base.logical_cpus)
    strategy = get_strategy(config.base.strategy)  # first: a multi-worker strategy needs a fresh runtime
    keras.utils.set_random_seed(config.base.seed)
    if config.base.deterministic:
        tf.config.experimental.enable_op_determinism()
    apply_precision(config.train.mixed_precision, strategy)
    return strategy


def tool(name: str) -> str:
    """A command installed beside this interpreter (the project's .venv/bin), else found on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def format_metrics(metrics: dict[str, float], keys: Optional[list[str]] = None) -> str:
    keys = keys or list(metrics)
    return ", ".join(f"{key}={metrics[key]:.4f}" for key in keys if key in metrics)
