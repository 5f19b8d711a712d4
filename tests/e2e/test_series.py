"""Time series end to end: the built-in sunspots through `dvc repro` (every stage, the gate and the monitor), served
as windows the way TF Serving's REST API and MLflow's clients send them, forecast from the tail of a CSV, and
monitored on new observations; and a user's CSV of two monthly series told apart by an id column, with a gap and
a missing value, through an LSTM."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_dvc_project, run, serving, stage
from tests.e2e.test_zoo import holdout, run_stages

pytestmark = pytest.mark.e2e

SERIES = {
    "data": {"source": "sunspots"},
    "model": {"hidden_units": [32]},
    "train": {"epochs": 40, "early_stopping_patience": 10, "learning_rate": 0.003},
    "monitor": {"min_examples": 10},  # 22 test windows: the default 30 would skip the monitor's checks
}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    project = make_dvc_project(tmp_path_factory.mktemp("series"), SERIES)
    run(["dvc", "repro"], project)
    return project


def post(server: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{server}/v1/models/sunspots:predict", data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_every_stage_runs_and_the_forecast_beats_the_naive_ones(reproduced):
    metrics, predictions = holdout(reproduced)
    assert metrics["mase"] < 1.0, metrics
    assert metrics["mae"] < min(metrics[f"{name}_mae"] for name in ("last_value", "seasonal_naive", "moving_average"))
    assert set(predictions.columns) >= {"window", "step", "actual", "predicted"} and predictions["step"].max() == 3
    per_step = pd.read_csv(reproduced / "reports/evaluate/per_step.csv")
    assert list(per_step["step"]) == [1, 2, 3] and (reproduced / "reports/evaluate/figures/forecast.png").is_file()
    spec = json.loads((reproduced / "data/prepared/spec.json").read_text())
    blocks = spec["series"]["blocks"]
    assert blocks["train"][1] < blocks["validation"][0] <= blocks["validation"][1] < blocks["test"][0]
    export = json.loads((reproduced / "reports/export/export.json").read_text())
    assert export["infra_validation"]["servable"] is True
    assert export["tflite"]["float"]["max_abs_difference"] < 1e-3  # TFLite builtin ops, same forecasts
    gate = json.loads((reproduced / "reports/gate/decision.json").read_text())
    assert gate["blessed"] is True and gate["metric"] == "mase", gate
    drift = json.loads((reproduced / "reports/monitor/drift.json").read_text())
    assert "skipped" not in drift and drift["retrain"] is False, drift["reasons"]  # the test block is no drift
    assert drift["feedback"]["metric"] == "mase" and drift["feedback"]["degraded"] is False


def test_the_api_takes_raw_windows_and_refuses_what_is_not_one(reproduced):
    history = pd.read_csv(reproduced / "data/ingested/source.csv")["sunspots"].tolist()
    window = history[-22:]
    with serving("models/serving", reproduced) as server:
        status, answer = post(server, {"instances": [window, history[-23:-1]]})  # one column: plain lists
        assert status == 200 and np.asarray(answer["predictions"]).shape == (2, 3), answer
        status, single = post(server, {"instances": [window]})
        # a batch of one and of two may round the last float digit apart (their matrix products differ)
        np.testing.assert_allclose(single["predictions"][0], answer["predictions"][0], rtol=1e-6)
        status, named = post(server, {"instances": [{"sunspots": window}]})
        assert status == 200 and named["predictions"][0] == single["predictions"][0]
        status, columnar = post(server, {"inputs": {"sunspots": [window]}})
        assert status == 200 and columnar["outputs"][0] == single["predictions"][0]
        status, problem = post(server, {"instances": [window[:-1]]})
        assert status == 400 and "expected a list of the last 22 values" in problem["error"], problem
        status, problem = post(server, {"instances": [[*window[:-1], "lots"]]})
        assert status == 400 and "[21]: 'lots' is not a number" in problem["error"], problem
        status, problem = post(server, b'{"instances": [[' + b"1, " * 21 + b"NaN]]}")
        assert status == 400 and "finite number" in problem["error"], problem


def test_predict_forecasts_what_follows_the_tail_of_a_csv(reproduced):
    source = pd.read_csv(reproduced / "data/ingested/source.csv")
    source.tail(30).to_csv(reproduced / "recent.csv", index=False)
    predicted = run(["pipeline", "predict", "--model", "models/serving", "--input", "recent.csv"], reproduced)
    lines = predicted.stdout.strip().splitlines()
    assert lines[-2] == "example,prediction_1,prediction_2,prediction_3" and lines[-1].startswith("2008-01-01,")
    source.tail(10).to_csv(reproduced / "short.csv", index=False)
    refused = run(["pipeline", "predict", "--model", "models/serving", "--input", "short.csv"], reproduced, check=False)
    assert refused.returncode == 2 and "the model reads the last 22" in refused.stderr


def test_the_registered_model_forecasts_in_an_interpreter_without_the_pipeline(reproduced, tmp_path):
    store = f"sqlite:///{reproduced / 'mlflow.db'}"
    script = (
        "import sys, json, mlflow, numpy as np\n"
        f"mlflow.set_tracking_uri({store!r})\n"
        "model = mlflow.pyfunc.load_model('models:/sunspots@champion')\n"
        "window = np.linspace(10, 120, 22, dtype='float32')[None, :]\n"
        "print(json.dumps({'pipeline_imported': any(name.split('.')[0] == 'pipeline' for name in sys.modules),"
        " 'outputs': np.asarray(model.predict({'sunspots': window})).tolist(),"
        " 'example': list(np.asarray(model.predict(model.input_example)).shape)}))\n"
    )
    result = json.loads(run([sys.executable, "-c", script], tmp_path).stdout.strip().splitlines()[-1])
    assert result["pipeline_imported"] is False
    assert np.asarray(result["outputs"]).shape == (1, 3) and result["example"] == [2, 3]


def test_the_monitor_judges_new_observations_by_their_changes_and_the_forecast_error(reproduced):
    source = pd.read_csv(reproduced / "data/ingested/source.csv")
    recent = source.tail(60)
    recent.to_csv(reproduced / "recent.csv", index=False)
    result = run(["pipeline", "monitor", "--data", "recent.csv", "--output", "reports/recent"], reproduced)
    report = json.loads((reproduced / "reports/recent/drift.json").read_text())
    assert report["retrain"] is False, (report["reasons"], result.stdout)
    assert report["feedback"]["metric"] == "mase"
    wild = recent.assign(sunspots=recent["sunspots"].mean() + 4 * (recent["sunspots"] - recent["sunspots"].mean()))
    wild.to_csv(reproduced / "wild.csv", index=False)  # the same cycles, four times as wide
    run(["pipeline", "monitor", "--data", "wild.csv", "--output", "reports/wild"], reproduced, check=False)
    report = json.loads((reproduced / "reports/wild/drift.json").read_text())
    assert report["retrain"] is True and "sunspots (change spread)" in report["families"]["series"]["drifted"]


def two_series(months: int = 144) -> pd.DataFrame:
    """Monthly sales of two shops, each with its own level and season, one with a missing month and a missing
    value, in the order exports have them (shop by shop, newest first)."""
    generator = np.random.default_rng(3)
    rows = []
    for shop, level in (("north", 100.0), ("south", 40.0)):
        dates = pd.date_range("2015-01-01", periods=months, freq="MS")
        season = 10 * np.sin(2 * np.pi * np.arange(months) / 12)
        sales = level + season + np.arange(months) * 0.2 + generator.normal(0, 1, months)
        temperature = 15 + 8 * np.sin(2 * np.pi * (np.arange(months) - 3) / 12) + generator.normal(0, 0.5, months)
        frame = pd.DataFrame({"shop": shop, "month": dates.strftime("%Y-%m-%d"), "sales": sales, "temp": temperature})
        rows.append(frame.iloc[::-1])
    table = pd.concat(rows, ignore_index=True)
    table = table.drop(index=10).reset_index(drop=True)  # a missing month of north
    table.loc[50, "temp"] = np.nan
    return table


def test_a_users_csv_of_two_series_with_gaps_trains_an_lstm_and_never_mixes_them(workdir):
    two_series().to_csv(workdir / "data/user/sales.csv", index=False)
    data = {
        "source": "csv", "path": "data/user/sales.csv", "label": "sales", "time_column": "month",
        "series_id_column": "shop", "horizon": 2,
    }  # fmt: skip
    model = {"family": "rnn", "rnn_units": 16, "hidden_units": [16]}
    train = {"epochs": 30, "early_stopping_patience": 10}
    export = {"version": 1, "infra_validation": False, "tflite": True}
    preprocess = {"window": 12}
    run_stages(workdir, {"data": data, "model": model, "train": train, "export": export, "preprocess": preprocess})
    spec = json.loads((workdir / "data/prepared/spec.json").read_text())
    assert spec["series"]["frequency"] == "MS" and spec["series"]["seasonal_period"] == 12
    assert spec["series"]["id_column"] == "shop" and [feature["column"] for feature in spec["features"]] == [
        "sales",
        "temp",
    ]
    assert spec["splits"]["test"]["num_examples"] == 2 * (round(144 * 0.15) - 12 - 2 + 1)  # each shop's own windows
    metrics, _ = holdout(workdir)
    assert metrics["mase"] < 1.0, metrics
    exported = json.loads((workdir / "reports/export/export.json").read_text())
    assert exported["tflite"]["float"]["max_abs_difference"] < 1e-3
    assert set(exported["signature"]["inputs"]) == {"sales", "temp"}


def test_a_repeated_or_unparseable_time_stops_validation_naming_it(workdir):
    table = two_series().query("shop == 'north'").drop(columns=["shop"]).iloc[::-1].reset_index(drop=True)
    table.to_csv(workdir / "data/user/north.csv", index=False)
    data = {"source": "csv", "path": "data/user/north.csv", "label": "sales", "time_column": "month"}
    run_stages(workdir, {"data": data}, stages=("ingest", "validate"))  # the suite, from the clean series
    table.loc[40, "month"] = table.loc[39, "month"]
    table.to_csv(workdir / "data/user/north.csv", index=False)
    assert stage("ingest", workdir).returncode == 0
    assert stage("validate", workdir, check=False).returncode != 0
    summary = json.loads((workdir / "reports/validate/summary.json").read_text())
    assert [check["column"] for check in summary["failures"]] == ["month"], summary["failures"]
    table.loc[40, "month"] = "next spring"
    table.to_csv(workdir / "data/user/north.csv", index=False)
    assert stage("ingest", workdir).returncode == 0
    failed = stage("validate", workdir, check=False)
    assert failed.returncode != 0 and "line 42: 'month' holds 'next spring'" in failed.stderr


def test_new_observations_added_as_feedback_extend_the_series_and_old_times_are_refused(workdir):
    table = two_series().query("shop == 'north'").drop(columns=["shop"]).iloc[::-1].reset_index(drop=True)
    table.iloc[:-6].to_csv(workdir / "data/user/north.csv", index=False)
    table.iloc[-6:].to_csv(workdir / "newest.csv", index=False)
    data = {"source": "csv", "path": "data/user/north.csv", "label": "sales", "time_column": "month"}
    run_stages(workdir, {"data": data, "preprocess": {"window": 12}}, stages=("ingest", "validate", "preprocess"))
    before = json.loads((workdir / "data/prepared/spec.json").read_text())["series"]["blocks"]["test"][1]
    run(["pipeline", "feedback", "add", "newest.csv"], workdir)
    for name in ("ingest", "validate", "preprocess"):
        stage(name, workdir)
    after = json.loads((workdir / "data/prepared/spec.json").read_text())["series"]["blocks"]["test"][1]
    assert (before, after) == (table["month"].iloc[-7], table["month"].iloc[-1])
    table.iloc[-20:-14].to_csv(workdir / "again.csv", index=False)  # months the series already has
    run(["pipeline", "feedback", "add", "again.csv"], workdir)
    stage("ingest", workdir)
    assert stage("validate", workdir, check=False).returncode != 0
    summary = json.loads((workdir / "reports/validate/summary.json").read_text())
    assert [check["expectation"] for check in summary["failures"]] == ["expect_column_values_to_be_increasing"]


def test_the_registered_version_carries_its_model_card_and_the_mlflow_ui_shows_it(reproduced):
    import os
    from pathlib import Path

    import mlflow

    from pipeline.core.processes import background_server, free_port
    from tests.e2e.test_experiments import CHROMIUM, CHROMIUM_FLAGS

    card = (reproduced / "reports/gate/model_card.md").read_text()
    assert card.startswith("# Model card: sunspots v1\n") and "| mase |" in card
    assert "| seasonal_naive_mase | 1.0000 |" in card and "| last_value_mase |" in card  # the baselines beside
    assert "the next 3 values of `sunspots` from a window of 22 steps" in card
    client = mlflow.tracking.MlflowClient(f"sqlite:///{reproduced / 'mlflow.db'}")
    version = client.get_model_version("sunspots", "1")
    assert version.description == card
    artifacts = {item.path for item in client.list_artifacts(version.run_id, "model_card")}
    assert artifacts == {"model_card/model_card.md", "model_card/model_card.html"}
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (or set CHROMIUM_PATH)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium, or set CHROMIUM_PATH)")
    playwright = pytest.importorskip("playwright.sync_api")
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "ui", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with background_server(command, base, cwd=reproduced), playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/#/models/sunspots/versions/1")  # the version's page, as a user opens it from the registry
        page.get_by_role("heading", name="Model card: sunspots v1").wait_for(timeout=60_000)
        assert page.get_by_role("cell", name="mase", exact=True).count() >= 1  # the metrics table is rendered
        shots = Path(os.environ.get("MLFLOW_UI_SCREENSHOTS") or reproduced)  # `make screenshots`: the README's
        page.set_viewport_size({"width": 1400, "height": 1300})
        page.get_by_role("heading", name="Model card: sunspots v1").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "mlflow_model_card.png"))
        browser.close()
