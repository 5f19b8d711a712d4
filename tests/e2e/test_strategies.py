"""The real train stage under MirroredStrategy (two logical CPU devices) and with mixed precision."""

from __future__ import annotations

import json

import pytest

from tests.conftest import stage, write_params

pytestmark = pytest.mark.e2e


def test_train_under_mirrored_strategy_and_with_mixed_precision(workdir):
    for name in ("ingest", "validate", "preprocess", "tune"):
        stage(name, workdir)
    stage("train", workdir)
    single = json.loads((workdir / "reports/train/metrics.json").read_text())

    write_params(workdir, {"base": {"strategy": "mirrored", "logical_cpus": 2}})
    mirrored = stage("train", workdir)
    assert "strategy mirrored over /device:CPU:0, /device:CPU:1" in mirrored.stderr
    metrics = json.loads((workdir / "reports/train/metrics.json").read_text())
    # Two replicas, each with the configured batch: the global batch doubles, the accuracy stays in band.
    assert abs(metrics["best_val_accuracy"] - single["best_val_accuracy"]) < 0.05, (metrics, single)

    write_params(workdir, {"train": {"mixed_precision": "mixed_bfloat16"}})
    mixed = stage("train", workdir)
    assert "mixed precision: mixed_bfloat16" in mixed.stderr
    import keras

    from pipeline.ml.models import load_trained_model

    model = load_trained_model(workdir / "models/model.keras")
    assert model.get_layer("conv_0").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # this process is untouched
    assert json.loads((workdir / "reports/train/metrics.json").read_text())["best_val_accuracy"] > 0.8
