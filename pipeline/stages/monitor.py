"""Stage `monitor`: drift of the test split (or `monitor.data`) against the training data, and the
retraining decision; the check joins the pipeline's MLflow run."""

from __future__ import annotations

from pipeline.core.config import Config
from pipeline.core.runner import StageResult, run_stage
from pipeline.ops import monitoring


def run(config: Config) -> StageResult:
    result, _ = monitoring.check(config, None, None, own_run=False)
    return result


def main(params_file: str = "params.yaml") -> None:
    run_stage("monitor", params_file, run)
