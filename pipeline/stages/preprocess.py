"""Stage `preprocess`: clean, normalise statistics, split and write TFRecord shards."""

from __future__ import annotations

from pipeline.core.config import Config
from pipeline.core.runner import StageResult, run_stage
from pipeline.data import preparation


def run(config: Config) -> StageResult:
    return preparation.prepare_configured(config)


def main(params_file: str = "params.yaml") -> None:
    run_stage("preprocess", params_file, run)
