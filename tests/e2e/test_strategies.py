"""Every stage that builds, compiles, loads or fits a model (tune, train, evaluate, finetune, export,
gate, monitor) under the non-default strategies and precisions a GPU run uses, caught on a CPU:
OneDeviceStrategy with mixed_float16 (what one GPU gets), and MirroredStrategy over two logical CPUs
with mixed_bfloat16."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_dvc_project, run

pytestmark = pytest.mark.e2e

QUICK = {
    "tune": {"enabled": True, "algorithm": "random", "max_trials": 1, "max_epochs": 1},
    "finetune": {"enabled": "auto", "head_epochs": 2, "fine_tune_epochs": 2},
}
VARIANTS = {
    "one_device-mixed_float16": (
        {"base": {"strategy": "one_device"}, "train": {"mixed_precision": "mixed_float16"}},
        "OneDeviceStrategy",
        "float16",
    ),
    "mirrored-mixed_bfloat16": (
        {"base": {"strategy": "mirrored", "logical_cpus": 2}, "train": {"mixed_precision": "mixed_bfloat16"}},
        "MirroredStrategy",
        "bfloat16",
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_whole_pipeline_runs_under_the_strategy_and_precision(tmp_path, variant):
    overrides, strategy, compute_dtype = VARIANTS[variant]
    settings = {**QUICK, **overrides, "train": {**overrides["train"], "epochs": 3}}
    project = make_dvc_project(tmp_path, settings)
    completed = run(["dvc", "repro"], project, timeout=900)
    for stage in ("tune", "train", "evaluate", "finetune", "export", "gate", "monitor"):
        assert f"[{stage}]" in completed.stdout, completed.stdout[-3000:]
    assert "skipped" not in json.loads((project / "reports/finetune/transfer.json").read_text())

    export = json.loads((project / "reports/export/export.json").read_text())
    assert export["compute_dtype"] == compute_dtype
    assert export["max_abs_difference"] <= export["parity_tolerance"]
    assert {spec["dtype"] for spec in export["signature"]["outputs"].values()} == {"float32"}

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (pipeline_run,) = [
        found
        for found in mlflow.search_runs(experiment_names=["keras-pipeline"], output_format="list")
        if "mlflow.parentRunId" not in found.data.tags
    ]
    params = pipeline_run.data.params
    assert params["runtime.strategy"] == strategy
    assert params["runtime.precision"] == f"mixed_{compute_dtype}"
    assert params["runtime.replicas"] == ("2" if strategy == "MirroredStrategy" else "1")
    assert params["runtime.deterministic"] == "True" and params["runtime.jit_compile"] == "False"

    from pipeline.ml.models import load_trained_model

    model = load_trained_model(project / "models/model.keras")
    assert model.get_layer("conv_0").dtype_policy.name == f"mixed_{compute_dtype}"
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert json.loads((project / "reports/evaluate/metrics.json").read_text())["accuracy"] > 0.5


def test_the_default_text_model_trains_on_two_replicas_in_bfloat16_and_serves_in_float32(tmp_path):
    """Text's linear MLP keeps its terms sparse through training and serving: MirroredStrategy over two logical
    CPUs with mixed_bfloat16, through the export's parity checks (SavedModel and TFLite) and the gate."""
    settings = {
        "data": {"source": "rotten_tomatoes"},
        "model": {"hidden_units": "auto"},  # the default: a linear model over the sparse terms, not the tiny [32]
        "base": {"strategy": "mirrored", "logical_cpus": 2},
        "train": {"mixed_precision": "mixed_bfloat16", "epochs": 3},
        "tune": {"enabled": False},
        "gate": {"thresholds": {"accuracy": 0.6}},  # a tiny budget's model: not held to the baselines
    }
    project = make_dvc_project(tmp_path, settings)
    completed = run(["dvc", "repro", "gate"], project, timeout=900)
    assert "[gate]" in completed.stdout, completed.stdout[-3000:]
    export = json.loads((project / "reports/export/export.json").read_text())
    assert export["compute_dtype"] == "bfloat16"
    assert export["max_abs_difference"] < 1e-5  # LogTfIdf and the output layer compute in float32 under any policy
    assert export["tflite"]["float"]["max_abs_difference"] < 1e-5
    assert json.loads((project / "reports/evaluate/metrics.json").read_text())["accuracy"] > 0.6
