import dataclasses

import pytest

from pipeline.core import tracking
from pipeline.core.config import load_config
from pipeline.core.runner import StageResult


@pytest.fixture
def config(workdir):
    return load_config("params.yaml")


def test_run_key_follows_settings_and_data(config, workdir):
    key = tracking.run_key(config)
    assert key == tracking.run_key(load_config("params.yaml"))
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, learning_rate=0.01))
    assert tracking.run_key(changed) != key
    (workdir / "data" / "ingested").mkdir(parents=True)
    (workdir / "data" / "ingested" / "source.json").write_text('{"fingerprint": "abc"}')
    assert tracking.run_key(config) != key


def test_stages_of_one_execution_share_one_run_in_a_real_sqlite_store(config, workdir):
    import mlflow

    for stage, metric in (("train", "train_best_val_loss"), ("evaluate", "test_accuracy")):
        with tracking.pipeline_run(config, stage):
            tracking.log_stage_result(stage, StageResult(summary="", metrics={metric: 0.5}))
    (only,) = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    assert only.data.metrics == {"train_best_val_loss": 0.5, "test_accuracy": 0.5}
    assert only.data.params["model.filters"] == "[16]"
    assert only.data.tags["pipeline.stage.evaluate"] == "done"

    variant = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=9))
    with tracking.pipeline_run(variant, "train"):
        pass
    runs = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    assert sorted(run.data.params["train.epochs"] for run in runs) == ["4", "9"]
