"""Stage `ingest`: a snapshot of the configured data source (and feedback batches) in `paths.ingested`."""

from __future__ import annotations

from pipeline.core.config import Config
from pipeline.core.runner import StageResult, run_stage
from pipeline.data import ingestion


def run(config: Config) -> StageResult:
    return ingestion.snapshot(config)


def main(params_file: str = "params.yaml") -> None:
    run_stage("ingest", params_file, run, track=False)
