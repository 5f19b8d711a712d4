"""The real pipeline end to end: `dvc repro` in a temporary git repository, a real SQLite MLflow store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.data.sources import write_digits_images
from tests.conftest import TINY_SEARCH, make_dvc_project, run, serving

pytestmark = pytest.mark.e2e


def mlflow_runs(project: Path) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["keras-pipeline"], output_format="list")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """The tiny digits pipeline, reproduced once for the tests of this module."""
    project = make_dvc_project(
        tmp_path_factory.mktemp("repro"),
        # units 64: the search's first trial is the defaults, and the space's narrowest width is 64 (the tiny
        # default 32 was no value of the space, so the first trial had 64 until the defaults came first)
        {**TINY_SEARCH, "model": {"hidden_units": [64]}, "finetune": {"enabled": "auto"}},
    )
    completed = run(["dvc", "repro"], project)
    return project, completed


def test_every_stage_runs_and_reports(reproduced):
    project, completed = reproduced
    stages = ("ingest", "validate", "preprocess", "tune", "train", "evaluate", "prepare_target", "finetune", "export")
    for stage in stages:
        assert f"[{stage}]" in completed.stdout, completed.stdout[-3000:]
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "loss"} <= set(metrics)
    assert metrics["accuracy"] > 0.8  # 4 tiny epochs: far above the 0.1 of chance
    history = (project / "reports/train/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 5
    for figure in (
        "reports/evaluate/figures/confusion_matrix.png",
        "reports/evaluate/figures/roc.png",
        "reports/train/learning_curves.png",
    ):
        assert (project / figure).stat().st_size > 1000


def test_fine_tuning_on_the_noisy_digits_beats_training_from_scratch(reproduced):
    project, completed = reproduced
    transfer = json.loads((project / "reports/finetune/transfer.json").read_text())
    assert transfer["target"] == "digits_noisy" and transfer["labelled_train_examples"] == 100
    assert transfer["unfrozen_layers"] and transfer["test_examples"] == 270
    assert transfer["transfer_wins"], transfer
    assert transfer["finetuned"]["accuracy"] > transfer["from_scratch"]["accuracy"] + 0.01
    holdout = json.loads((project / "reports/finetune/holdout.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "loss"} <= set(holdout)
    headline = json.loads((project / "reports/finetune/metrics.json").read_text())  # the DVC metrics
    assert headline == {
        "finetuned_accuracy": holdout["accuracy"],
        "from_scratch_accuracy": transfer["from_scratch"]["accuracy"],
        "gain_accuracy": transfer["transfer_gain_accuracy"],
    }
    assert (project / "reports/finetune/figures/transfer.png").stat().st_size > 1000
    assert (project / "reports/finetune/figures/confusion_matrix.png").stat().st_size > 1000
    assert (project / "reports/finetune/data/validate/summary.json").is_file()  # the target passed the gate too
    assert (project / "models/finetuned/model.keras").is_file()
    assert "fine-tuned accuracy=" in completed.stdout


def test_metrics_are_readable_by_dvc(reproduced):
    project, _ = reproduced
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    (workspace,) = shown.values() if "workspace" not in shown else [shown["workspace"]]
    files = {Path(name).parent.name: values["data"] for name, values in workspace["data"].items()}
    assert sorted(files) == ["evaluate", "finetune", "gate", "monitor", "train", "tune"], files
    assert set(files["evaluate"]) >= {"accuracy", "f1", "roc_auc"}
    assert set(files["train"]) == {"epochs_run", "train_seconds"}
    assert {"blessed", "candidate"} <= set(files["gate"]) <= {"blessed", "candidate", "champion"}  # null: no champion
    assert set(files["monitor"]) == {"retrain", "drifted", "live_accuracy"}
    assert sum(len(values) for values in files.values()) <= 20, "only the numbers people compare"


def test_data_docs_are_complete_html(reproduced):
    project, _ = reproduced
    docs = project / "reports/validate/data_docs"
    index = (docs / "index.html").read_text()
    assert index.rstrip().endswith("</html>")
    (page,) = (docs / "validations").rglob("*.html")
    text = page.read_text()
    assert text.rstrip().endswith("</html>")
    assert "decodable" in text and "values must belong to this set" in text  # the rendered expectations
    summary = json.loads((project / "reports/validate/summary.json").read_text())
    assert summary["success"] and summary["rows"] == 1797


def test_a_second_repro_reruns_nothing(reproduced):
    project, _ = reproduced
    completed = run(["dvc", "repro"], project)
    assert "Running stage" not in completed.stdout
    assert "up to date" in completed.stdout


def changed_stages(project: Path) -> set[str]:
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    return set(status)


@pytest.mark.parametrize(
    ("helper", "users"),
    [
        (
            "pipeline/ml/evaluation.py",
            {"tune", "train", "evaluate", "prepare_target", "finetune", "export", "gate", "monitor"},
        ),
        ("pipeline/serving/checks.py", {"export"}),
        (
            "pipeline/core/outputs.py",
            {
                "ingest",
                "validate",
                "preprocess",
                "tune",
                "train",
                "evaluate",
                "prepare_target",
                "finetune",
                "export",
                "gate",
                "monitor",
            },
        ),
    ],
)
def test_a_change_to_a_shared_helper_makes_exactly_its_users_stale(reproduced, helper, users):
    project, _ = reproduced
    path = project / helper
    original = path.read_text()
    try:
        path.write_text(original + "\n# a change\n")
        assert changed_stages(project) == users
    finally:
        path.write_text(original)
    assert changed_stages(project) == set()


def test_one_mlflow_run_holds_params_metrics_tags_and_a_loadable_model(reproduced):
    project, _ = reproduced
    (mlflow_run,) = [run for run in mlflow_runs(project) if "mlflow.parentRunId" not in run.data.tags]
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["train.learning_rate"] == "0.003"
    assert mlflow_run.data.params["hp.batch_size"] in ("32", "64", "128")  # the search's choice
    assert mlflow_run.data.params["data.source"] == "digits"
    assert mlflow_run.data.metrics["test_accuracy"] > 0.8
    assert "val_loss" in mlflow_run.data.metrics
    assert len(mlflow_run.data.tags["git.commit"]) == 40
    for stage in ("validate", "preprocess", "tune", "train", "evaluate", "prepare_target", "finetune", "export"):
        assert mlflow_run.data.tags[f"pipeline.stage.{stage}"] == "done"
    assert mlflow_run.data.metrics["validate_errors"] == 0
    assert mlflow_run.data.metrics["finetune_test_accuracy"] > mlflow_run.data.metrics["scratch_test_accuracy"]
    assert mlflow_run.data.tags["pipeline.stage.monitor"] == "done"
    assert mlflow_run.data.metrics["monitor_retrain"] == 0.0  # the test split is not drift
    assert "finetune_val_loss" in mlflow_run.data.metrics and "scratch_val_loss" in mlflow_run.data.metrics

    import mlflow
    import numpy as np

    report = json.loads((project / "reports/export/export.json").read_text())
    version = mlflow.tracking.MlflowClient().get_model_version("digits", str(report["registered_model"]["version"]))
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (validated,) = [out for out in lock["stages"]["validate"]["outs"] if out["path"] == "data/validated"]
    assert version.tags["dvc.validated_md5"] == validated["md5"]  # the data version, as DVC knows it
    assert version.tags["data.source"] == "digits" and version.tags["git.commit"] == mlflow_run.data.tags["git.commit"]
    assert version.run_id == mlflow_run.info.run_id
    assert np.asarray(
        mlflow.pyfunc.load_model(report["mlflow_model_uri"]).predict(np.zeros((2, 8, 8, 1), "float32"))
    ).shape == (
        2,
        10,
    )


def test_the_registered_model_loads_in_an_interpreter_that_never_imported_the_pipeline(reproduced, tmp_path):
    """As a notebook or batch job elsewhere would: by alias, through MLflow's pyfunc, with its input example."""
    project, _ = reproduced
    store = f"sqlite:///{project / 'mlflow.db'}"
    script = (
        "import sys, json, mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({store!r})\n"
        "model = mlflow.pyfunc.load_model('models:/digits@candidate')\n"
        "example = model.input_example\n"
        "probabilities = np.asarray(model.predict(example))\n"
        "print(json.dumps({'pipeline_imported': any(name.split('.')[0] == 'pipeline' for name in sys.modules),"
        " 'shape': list(probabilities.shape), 'sums': probabilities.sum(axis=1).round(4).tolist(),"
        " 'inputs': model.metadata.get_input_schema().input_names()}))\n"
    )
    completed = run([sys.executable, "-c", script], tmp_path)  # outside the project: nothing of it on sys.path
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["pipeline_imported"] is False
    assert result["shape"] == [2, 10] and result["sums"] == [1.0, 1.0]
    assert result["inputs"] == ["image"]


def test_the_mlflow_ui_opens_on_model_training_and_shows_the_datasets(reproduced):
    project, _ = reproduced
    import mlflow

    (mlflow_run,) = [run for run in mlflow_runs(project) if "mlflow.parentRunId" not in run.data.tags]
    experiment = mlflow.get_experiment(mlflow_run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (project / "mlruns").as_uri()  # in the project, whoever created it
    inputs = {entry.dataset.name: entry for entry in mlflow_run.inputs.dataset_inputs}
    assert set(inputs) == {"digits-train", "digits-validation", "digits-test"}
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (validated,) = [out for out in lock["stages"]["validate"]["outs"] if out["path"] == "data/validated"]
    for split, entry in inputs.items():
        tags = {tag.key: tag.value for tag in entry.tags}
        assert tags["dvc.validated_md5"] == validated["md5"] and tags["split"] == split.split("-")[1]
        assert tags["mlflow.data.context"] in ("training", "validation", "testing")
        assert '"image"' in entry.dataset.schema and len(entry.dataset.digest) == 10
    assert int({tag.key: tag.value for tag in inputs["digits-test"].tags}["examples"]) == 270
    assert mlflow_run.data.tags["mlflow.note.content"].startswith("`dvc repro` of digits")


def test_saved_model_serves_raw_pixels_in_a_process_with_only_tensorflow(reproduced):
    project, _ = reproduced
    version_dir = project / "models/serving/digits/1"
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"signature = tf.saved_model.load({str(version_dir)!r}).signatures['serving_default']\n"
        "print(sorted(signature.structured_input_signature[1]))\n"
        "out = signature(image=tf.constant(np.full((3, 8, 8, 1), 255.0, np.float32)))['output_0']\n"
        "print(out.shape, round(float(out.numpy().sum()), 3))\n"
        "print(any(name.startswith('pipeline') for name in sys.modules))\n"
    )
    lines = run([sys.executable, "-c", script], project).stdout.strip().splitlines()
    assert lines == ["['image']", "(3, 10) 3.0", "False"]


def test_saved_model_cli_shows_the_raw_input_signature(reproduced):
    project, _ = reproduced
    saved_model_cli = Path(sys.executable).parent / "saved_model_cli"
    shown = run([str(saved_model_cli), "show", "--dir", "models/serving/digits/1", "--all"], project).stdout
    assert "signature_def['serving_default']" in shown
    assert "inputs['image'] tensor_info" in shown and "shape: (-1, 8, 8, 1)" in shown


def test_predict_command_on_an_image_folder(reproduced):
    project, _ = reproduced
    completed = run(
        [sys.executable, "-m", "pipeline", "predict", "--model", "models/serving", "--input", "data/ingested/images/3"],
        project,
    )
    lines = completed.stdout.strip().splitlines()
    assert lines[0] == "example,prediction,probability"
    predictions = [line.split(",")[1] for line in lines[1:]]
    assert len(predictions) > 150 and predictions.count("3") / len(predictions) > 0.8


def test_an_experiment_variant_on_penguins_appears_beside_the_first_run(reproduced):
    project, _ = reproduced
    completed = run(["dvc", "exp", "run", "-S", "data.source=penguins", "-S", "train.epochs=5"], project)
    assert "[export] SavedModel penguins" in completed.stdout
    # finetune.enabled: auto, and the default target (digit images) does not fit a table model: said, not hidden
    assert "[finetune] skipped: finetune.enabled is auto and finetune.data (digits_noisy) is not table" in (
        completed.stdout
    )
    runs = {
        mlflow_run.data.params["data.source"]: mlflow_run
        for mlflow_run in mlflow_runs(project)
        if "mlflow.parentRunId" not in mlflow_run.data.tags
    }
    assert set(runs) == {"digits", "penguins"}
    penguins = runs["penguins"]
    assert penguins.data.params["train.epochs"] == "5"
    assert penguins.data.tags.get("dvc.experiment") or penguins.data.tags.get("dvc.baseline_rev")
    assert penguins.data.metrics["test_accuracy"] > 0.8
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert "penguins" in json.dumps(shown)

    # The README's table prediction: new rows (no label column) -> a CSV of predictions.
    import pandas as pd

    new_rows = pd.read_csv(project / "data/ingested/source.csv").drop(columns=["species"]).head(12)
    new_rows.to_csv(project / "new_penguins.csv", index=False)
    predict = [sys.executable, "-m", "pipeline", "predict", "--model", "models/serving/penguins/1"]
    run([*predict, "--input", "new_penguins.csv", "--output", "predictions.csv"], project)
    predictions = pd.read_csv(project / "predictions.csv")
    assert len(predictions) == 12 and set(predictions["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}


def test_the_registered_candidate_is_served_from_the_registry(reproduced):
    project, _ = reproduced
    import urllib.error
    import urllib.request

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    assert int(client.get_model_version_by_alias("digits", "candidate").version) == 1
    assert int(client.get_model_version_by_alias("penguins", "candidate").version) == 1

    with serving("models:/penguins@candidate", project) as server:

        def post(rows):
            request = urllib.request.Request(
                f"{server}/v1/models/penguins:predict", data=json.dumps({"instances": rows}).encode()
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        row = {
            "island": "Biscoe",
            "bill_length_mm": 46.1,
            "bill_depth_mm": 13.2,
            "flipper_length_mm": 211.0,
            "body_mass_g": 4500.0,
            "sex": "female",
            "year": 2007,
        }
        status, answer = post([row, {**row, "sex": None}])
        assert status == 200 and len(answer["predictions"]) == 2 and len(answer["predictions"][0]) == 3
        assert max(answer["predictions"][0]) == answer["predictions"][0][2]  # a Gentoo's measurements
        status, answer = post([{**row, "island": "Atlantis"}])
        assert status == 400 and "'Atlantis' is not a known category" in answer["error"]
        status, answer = post([{**row, "body_mass_g": 40000}])
        assert status == 400 and "outside the trained range" in answer["error"]


def test_bad_data_stops_at_validate_and_the_last_export_is_untouched(reproduced):
    project, _ = reproduced
    serving = {path: path.read_bytes() for path in (project / "models/serving").rglob("*") if path.is_file()}
    images = write_digits_images(project / "data/user/digits")
    corrupt = images / "6" / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(source="image_dir", path="data/user/digits")
    params["validate"]["suite"] = "expectations/digits.yaml"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = run(["dvc", "repro"], project, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "data validation failed" in output
    assert "[ERROR] expect_column_values_to_be_in_set decodable: 1 unexpected" in output
    assert str(Path("data/user/digits/6/broken.png")) in output
    assert "Running stage 'preprocess'" not in output
    after = {path: path.read_bytes() for path in (project / "models/serving").rglob("*") if path.is_file()}
    assert after == serving


def test_the_search_is_a_parent_run_with_its_trials_nested(reproduced):
    project, _ = reproduced
    runs = mlflow_runs(project)
    (parent,) = [run for run in runs if run.data.params.get("data.source") == "digits"]
    trials = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2
    for trial in trials:
        assert trial.info.status == "FINISHED"
        assert {"learning_rate", "optimizer", "units"} <= set(trial.data.params)
        assert trial.data.metrics["score"] > 0 and "val_loss" in trial.data.metrics  # objective auto: val_loss
    assert parent.data.metrics["tune_best_score"] == min(trial.data.metrics["score"] for trial in trials)
    assert "tune.best.learning_rate" in parent.data.tags
    best = json.loads((project / "models/hyperparameters.json").read_text())
    assert best["source"].startswith("random search")
