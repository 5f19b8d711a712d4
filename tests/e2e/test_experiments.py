"""DVC's ways of running experiments all log into the project's MLflow store: three variants queued
and run two at a time in temporary copies of the workspace (which DVC deletes afterwards); then the
MLflow UI over that store, in a real browser, shows them side by side."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.processes import background_server, free_port
from tests.conftest import make_dvc_project, run

pytestmark = pytest.mark.e2e

# bench/bench_queue.py runs this module with more variants and workers (QUEUE_VARIANTS <= 5, QUEUE_JOBS).
VARIANTS, JOBS = int(os.environ.get("QUEUE_VARIANTS", "3")), int(os.environ.get("QUEUE_JOBS", "2"))
RATES = ("0.01", "0.003", "0.001", "0.0003", "0.0001")[:VARIANTS]
# Debian's chromium (.ci/run installs it), or the browser named by CHROMIUM_PATH.
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def queued_project(tmp_path_factory) -> Path:
    project = make_dvc_project(tmp_path_factory.mktemp("queued"), {"train": {"epochs": 2}})
    for rate in RATES:
        run(["dvc", "exp", "run", "--queue", "-S", f"train.learning_rate={rate}"], project)
    started = time.monotonic()
    run(["dvc", "exp", "run", "--run-all", "--jobs", str(JOBS)], project, timeout=1800)
    print(f"{VARIANTS} queued experiments, {JOBS} at a time: {time.monotonic() - started:.0f} s")
    return project


def pipeline_runs(project: Path) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return [
        found
        for found in mlflow.search_runs(experiment_names=["keras-pipeline"], output_format="list")
        if "mlflow.parentRunId" not in found.data.tags
    ]


def test_three_queued_variants_run_two_at_a_time_land_in_the_projects_store(queued_project):
    project = queued_project
    status = run(["dvc", "queue", "status"], project).stdout
    assert status.count("Success") == VARIANTS, status

    import mlflow

    runs = pipeline_runs(project)
    assert sorted(found.data.params["train.learning_rate"] for found in runs) == sorted(RATES)
    assert all(found.info.status == "FINISHED" and "test_accuracy" in found.data.metrics for found in runs)
    assert len({found.data.tags["dvc.experiment"] for found in runs}) == VARIANTS  # named after DVC's experiments
    assert all(len(found.inputs.dataset_inputs) == 3 for found in runs)
    assert all(found.info.artifact_uri.startswith((project / "mlruns").as_uri()) for found in runs)
    assert all("system/cpu_utilization_percentage" in found.data.metrics for found in runs)
    versions = mlflow.tracking.MlflowClient().search_model_versions("name = 'digits'")
    assert len(versions) == VARIANTS, "each queued run registered its model in the project's registry"
    for found in runs:  # the artifacts outlive DVC's temporary copies
        assert mlflow.artifacts.list_artifacts(run_id=found.info.run_id)
    with sqlite3.connect(project / "mlflow.db") as connection:
        assert connection.execute("pragma integrity_check").fetchone() == ("ok",)
    assert not list(Path(project / ".dvc" / "tmp").glob("exps/tmp*/mlflow.db"))
    drop = "pipeline/|data/|models/|reports/|expectations|Created"  # as the README
    table = run(["dvc", "exp", "show", "--only-changed", "--drop", drop, "--csv"], project).stdout.splitlines()
    header = table[0].split(",")
    assert "train.learning_rate" in header and "accuracy" in header and "blessed" in header, header
    assert len(header) <= 25, header  # 275 with every param and metric; the CSV adds rev and typ
    assert len([line for line in table[1:] if line.strip()]) >= VARIANTS + 1  # the workspace and the experiments
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    assert len(json.dumps(metrics)) < 4000, "only the numbers people compare are DVC metrics"


def test_the_mlflow_ui_in_a_browser_shows_the_queued_variants_side_by_side(queued_project):
    """`pipeline ui` prints the addresses and serves the store; headless Chromium opens them as a user
    would and must see the three runs with their data, learning rates and test accuracy, in the runs
    table (after picking those columns) and in the compare view (differences only). With
    MLFLOW_UI_SCREENSHOTS=DIR (`make screenshots`) the pictures are kept there for the README."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (or set CHROMIUM_PATH)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium, or set CHROMIUM_PATH)")
    playwright = pytest.importorskip("playwright.sync_api")
    project = queued_project
    runs = sorted(pipeline_runs(project), key=lambda found: found.info.run_name)
    rates = [f"{float(found.data.params['train.learning_rate']):g}" for found in runs]
    accuracies = [found.data.metrics["test_accuracy"] for found in runs]
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "ui", "--port", str(port), "--compare", str(len(runs))]
    shots = Path(os.environ.get("MLFLOW_UI_SCREENSHOTS") or project / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with background_server(command, f"http://127.0.0.1:{port}", cwd=project) as server:
        printed = [server.stdout.readline() for _ in range(4)]  # runs, newest run, compare, serving
        links = dict(line.strip().split(": ", 1) for line in printed if line.startswith(("runs:", "compare:")))
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1680, "height": 560})

            page.goto(links["runs"])
            for found in runs:
                page.get_by_text(found.info.run_name, exact=True).first.wait_for(timeout=60_000)
            close_assistant(page)
            assert "Token Usage" not in page.inner_text("body"), "the UI opened in its GenAI view"
            page.get_by_role("button", name="Columns", exact=True).click()  # as a user picks what to compare
            for column in ("train.learning_rate", "test_accuracy"):
                page.get_by_placeholder("Search columns").fill(column)
                page.get_by_text(column, exact=True).last.click()
            page.keyboard.press("Escape")
            page.get_by_text(repr(accuracies[0]), exact=True).first.wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert f"{len(runs)} matching runs" in body
            assert body.count("digits-train") >= len(runs), "each run lists its training data"
            for rate, accuracy in zip(rates, accuracies, strict=True):
                assert rate in body and repr(accuracy) in body
            page.screenshot(path=shots / "mlflow_runs.png")

            page.goto(links["compare"])
            page.get_by_text(f"Comparing {len(runs)} Runs").wait_for(timeout=60_000)
            close_assistant(page)
            page.get_by_text("Visualizations").first.click()  # folds the plots: the tables come up
            toggles = page.get_by_text("Show diff only")
            for index in range(toggles.count()):
                toggles.nth(index).click()
            page.set_viewport_size({"width": 1680, "height": 1050})
            page.get_by_role("rowheader", name="train.learning_rate").wait_for(timeout=30_000)
            page.get_by_text(f"Comparing {len(runs)} Runs").scroll_into_view_if_needed()  # the run names on top
            page.screenshot(path=shots / "mlflow_compare.png")  # before scrolling: its two panes drift apart
            scroll_to_text(page, "test_accuracy", within="accuracy")  # the first metric row, alphabetically
            body = page.inner_text("body")
            details = body[body.index("Run details") :]
            assert "train.learning_rate" in details and "test_accuracy" in details
            assert "finetune.head_epochs" not in details, "only the params that differ are listed"
            for found, rate, accuracy in zip(runs, rates, accuracies, strict=True):
                assert found.info.run_name in details and rate in details and f"{round(accuracy, 3):g}" in details
            browser.close()
    for picture in ("mlflow_runs.png", "mlflow_compare.png"):
        assert (shots / picture).stat().st_size > 20_000, f"{picture}: an empty page?"


# Root in a container, no GPU, and a closed network: without these Chromium stalls on background requests.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def scroll_to_text(page, text: str, within: str, steps: int = 40) -> None:
    """Scrolls the table whose row `within` is drawn (the compare view draws only the rows in sight) until a row
    `text` shows."""
    anchor = page.get_by_text(within, exact=True).first.bounding_box()
    page.mouse.move(anchor["x"] + anchor["width"] + 200, anchor["y"] + anchor["height"] / 2)  # over the values
    for _ in range(steps):
        if page.get_by_text(text, exact=True).count():
            page.get_by_text(text, exact=True).first.scroll_into_view_if_needed()
            return
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(200)
    raise AssertionError(f"{text!r} never appeared in the table holding {within!r}")


def close_assistant(page) -> None:
    """MLflow 3.17 opens an assistant panel beside the first page a browser shows; a user closes it."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
