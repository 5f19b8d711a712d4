"""Stage `validate`: the Great Expectations gate; nothing trains on data that failed it."""

from __future__ import annotations

from pipeline.core.config import Config
from pipeline.core.runner import StageResult, run_stage
from pipeline.data import validation


def run(config: Config) -> StageResult:
    return validation.validate_configured(config)


def main(params_file: str = "params.yaml") -> None:
    run_stage("validate", params_file, run)
