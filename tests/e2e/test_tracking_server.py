"""The README's tracking-server recipe for real: `mlflow server` on 127.0.0.1, the pipeline's stages
logging to it over HTTP (runs, artifacts through the server, the model registry), and `mlflow ui`
on the server's store showing the same run."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from pipeline.core.processes import free_port
from tests.conftest import background_server, run, write_params

pytestmark = pytest.mark.e2e


def mlflow_command() -> str:
    return str(Path(sys.executable).parent / "mlflow")


def test_stages_log_to_an_mlflow_server_and_mlflow_ui_shows_the_run(workdir):
    write_params(workdir, {"export": {"version": 1, "infra_validation": False, "tflite": False}})
    port = free_port()
    server = [
        mlflow_command(), "server", "--backend-store-uri", "sqlite:///server.db", "--artifacts-destination",
        "./mlartifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with background_server(server, workdir, f"http://127.0.0.1:{port}") as uri:
        environment = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        for name in ("ingest", "validate", "preprocess", "tune", "train", "evaluate", "export"):
            completed = run([sys.executable, "-m", "pipeline", "run", name], workdir, environment=environment)
            assert f"[{name}]" in completed.stdout
        assert not (workdir / "mlflow.db").exists(), "the stages wrote to the local store, not the server"

        import mlflow

        client = mlflow.tracking.MlflowClient(tracking_uri=uri, registry_uri=uri)
        (experiment,) = [e for e in client.search_experiments() if e.name == "keras-pipeline"]
        (pipeline_run,) = client.search_runs([experiment.experiment_id])
        assert pipeline_run.data.metrics["test_accuracy"] > 0.8
        assert pipeline_run.data.tags["pipeline.stage.export"] == "done"
        assert int(client.get_model_version_by_alias("digits", "candidate").version) == 1
        downloaded = client.download_artifacts(pipeline_run.info.run_id, "train", str(workdir / "downloaded"))
        assert (Path(downloaded) / "learning_curves.png").stat().st_size > 1000
        assert any((workdir / "mlartifacts").rglob("learning_curves.png"))  # stored by the server

    ui_port = free_port()
    ui = [mlflow_command(), "ui", "--backend-store-uri", "sqlite:///server.db", "--port", str(ui_port)]
    with background_server(ui, workdir, f"http://127.0.0.1:{ui_port}") as ui_uri:
        with urllib.request.urlopen(f"{ui_uri}/", timeout=30) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
        request = urllib.request.Request(
            f"{ui_uri}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment.experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.loads(response.read())["runs"]
        assert [shown["info"]["run_id"] for shown in runs] == [pipeline_run.info.run_id]
