import dataclasses

import pytest

from pipeline.core import tracking
from pipeline.core.config import load_config
from pipeline.core.runner import StageResult
from tests.conftest import ROOT


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


def test_the_data_version_is_the_validated_datas_hash_in_dvc_lock(config, workdir):
    assert tracking.data_version(config) == {"data.fingerprint": "none", "data.source": config.data.source}
    (workdir / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  validate:\n    cmd: python -m pipeline run validate\n    outs:\n"
        f"    - path: {config.paths.reports}/validate/summary.json\n      md5: 1111\n"
        f"    - path: {config.paths.validated}\n      md5: 2222.dir\n      size: 10\n"
    )
    assert tracking.data_version(config)["dvc.validated_md5"] == "2222.dir"


def test_stages_of_one_execution_share_one_run_in_a_real_sqlite_store(config, workdir):
    import mlflow

    for stage, metric in (("train", "train_best_val_loss"), ("evaluate", "test_accuracy")):
        with tracking.pipeline_run(config, stage):
            tracking.log_stage_result(stage, StageResult(summary="", metrics={metric: 0.5}))
    (only,) = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    stage_metrics = {name: value for name, value in only.data.metrics.items() if not name.startswith("system/")}
    assert stage_metrics == {"train_best_val_loss": 0.5, "test_accuracy": 0.5}
    assert only.data.params["model.filters"] == "[16]"
    assert only.data.tags["pipeline.stage.evaluate"] == "done"

    variant = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=9))
    with tracking.pipeline_run(variant, "train"):
        pass
    runs = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    assert sorted(run.data.params["train.epochs"] for run in runs) == ["4", "9"]


ORPHAN = """
import os, sys, time
from pipeline.core import tracking
from pipeline.core.config import load_config
with tracking.pipeline_run(load_config("params.yaml"), "train"):
    print("open", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def own_store(workdir, monkeypatch):
    """An absolute store URI for this test (MLflow caches stores by URI: a relative one would be shared)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")


def test_a_run_left_running_by_a_killed_stage_is_marked_killed_by_the_next_stage(config, own_store):
    import os
    import signal
    import subprocess
    import sys

    import mlflow

    stage_process = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True)
    assert stage_process.stdout.readline().strip() == "open"
    os.kill(stage_process.pid, signal.SIGKILL)  # as a machine or container dies: no exit handler runs
    stage_process.wait()
    tracking.configure(config)
    (orphan,) = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    assert orphan.info.status == "RUNNING"

    variant = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=9))  # another run key
    with tracking.pipeline_run(variant, "train"):
        pass
    runs = {
        run.info.run_id: run
        for run in mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    }
    assert runs[orphan.info.run_id].info.status == "KILLED"
    assert runs[orphan.info.run_id].data.tags["pipeline.stage.train"] == "killed"
    assert sorted(run.info.status for run in runs.values()) == ["FINISHED", "KILLED"]


def test_a_run_held_by_a_live_process_is_left_alone(config, own_store):
    import subprocess
    import sys

    import mlflow

    stage_process = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True)
    try:
        assert stage_process.stdout.readline().strip() == "open"
        variant = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=9))
        with tracking.pipeline_run(variant, "train"):
            pass
        statuses = sorted(
            run.info.status
            for run in mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
        )
        assert statuses == ["FINISHED", "RUNNING"]  # a parallel queue worker's run is not an orphan
    finally:
        stage_process.kill()
        stage_process.wait()


@pytest.mark.parametrize("resumed", [True, False])
def test_the_trials_of_a_search_that_resumes_are_left_to_it_and_others_are_settled(config, own_store, resumed):
    """A killed search's trial run may belong to a trial its oracle had already recorded: the resumed search
    marks it FINISHED. Marking it KILLED first (it raced in CI) would lose that; an abandoned run's trials
    are settled with it."""
    import subprocess
    import sys

    import mlflow

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    experiment = tracking.configure(config)
    parent = mlflow.start_run(
        tags={tracking.KEY_TAG: "k1", tracking.OWNER_TAG: f"{tracking.socket.gethostname()}:{gone.pid}"}
    )
    child = mlflow.start_run(nested=True)
    child_id, parent_id = child.info.run_id, parent.info.run_id
    mlflow.end_run("RUNNING")  # leaves both open in the store, as a SIGKILL would
    mlflow.end_run("RUNNING")
    settled = tracking.settle_orphaned_runs(experiment.experiment_id, resuming_key="k1" if resumed else "k2")
    client = mlflow.tracking.MlflowClient()
    assert client.get_run(parent_id).info.status == "KILLED"
    assert client.get_run(child_id).info.status == ("RUNNING" if resumed else "KILLED")
    assert settled == (1 if resumed else 2)


def test_long_stages_log_system_metrics_on_one_timeline(config, own_store):
    import time

    import mlflow

    sampled = dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, system_metrics_interval_s=0.2))

    def steps() -> list[int]:  # a client made now: the stage set this test's store as MLflow's tracking URI
        (only,) = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
        history = mlflow.tracking.MlflowClient().get_metric_history(
            only.info.run_id, "system/cpu_utilization_percentage"
        )
        return sorted(point.step for point in history)

    with tracking.pipeline_run(sampled, "tune"):
        time.sleep(1.5)
    after_tune = steps()
    assert len(after_tune) >= 3 and after_tune == list(range(len(after_tune)))
    with tracking.pipeline_run(sampled, "evaluate"):  # short stages are not sampled
        time.sleep(0.5)
    assert steps() == after_tune
    with tracking.pipeline_run(sampled, "train"):  # the next stage continues the timeline
        time.sleep(1.0)
    assert steps() == list(range(len(steps()))) and len(steps()) >= len(after_tune) + 2
    (only,) = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    assert "system/system_memory_usage_megabytes" in only.data.metrics


def test_a_stage_shorter_than_the_sampling_interval_still_logs_one_sample(config, own_store):
    import mlflow

    with tracking.pipeline_run(config, "tune"):  # the default interval (seconds) is far longer than this stage
        pass
    (only,) = mlflow.search_runs(experiment_names=[config.tracking.experiment], output_format="list")
    assert "system/cpu_utilization_percentage" in only.data.metrics


def test_ui_links_open_the_model_training_view_of_the_runs_and_their_comparison():
    links = tracking.ui_links("http://127.0.0.1:5000/", "7", ["b", "a"])
    assert links["runs"] == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert links["newest run"].endswith("/#/experiments/7/runs/b?workflowType=machine_learning")
    assert links["compare"] == (
        "http://127.0.0.1:5000/#/compare-runs?runs=%5B%22b%22%2C%20%22a%22%5D&experiments=%5B%227%22%5D"
        "&workflowType=machine_learning"
    )
    assert set(tracking.ui_links("http://h:1", "7", [])) == {"runs"}


def test_pipeline_ui_without_a_store_says_to_run_the_pipeline_first(workdir, own_store, capsys):
    from pipeline.cli import main

    assert main(["ui"]) == 2
    error = capsys.readouterr().err
    assert "no MLflow store at sqlite:///" in error and "run the pipeline first (`dvc repro`)" in error
    assert not (workdir / "mlflow.db").exists()


def test_each_process_of_a_distributed_stage_has_its_own_system_metrics(monkeypatch):
    for name in ("KERASTUNER_TUNER_ID", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert tracking.process_role() is None
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
    assert tracking.process_role() == "tuner1"
    monkeypatch.delenv("KERASTUNER_TUNER_ID")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}')
    assert tracking.process_role() == "worker1"


CREATE = """
from pipeline.core import tracking
from pipeline.core.config import load_config
tracking.configure(load_config("params.yaml"))
"""


def test_a_store_killed_while_being_created_is_never_left_half_built(config, workdir, monkeypatch):
    """SIGKILLs a first stage at instants across the store's creation (MLflow's schema migrations, about a
    second after its start here): each time there is either no store or a whole one, which the next stage
    opens. Before the fix some kills left "table ... already exists" for good."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import mlflow

    for index, delay in enumerate(0.9 + step * 0.15 for step in range(14)):  # 0.9 s to 2.85 s
        store = workdir / f"store-{index}.db"  # a new store each time: MLflow caches stores by URI
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        process = subprocess.Popen(
            [sys.executable, "-c", CREATE], cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        tracking.configure(config)  # the next stage opens (or creates) the store
        assert mlflow.get_experiment_by_name(config.tracking.experiment) is not None, f"killed at {delay:.2f} s"


def test_stages_their_settings_skip_write_their_outputs_without_mlflow(workdir):
    """The search off and fine-tuning off: each stage still writes its declared outputs, in a process that never
    imports MLflow (its import and run lookup were 2-4 s of each such stage, which writes a few files)."""
    import subprocess
    import sys

    for stage in ("tune", "prepare_target", "finetune"):
        script = (
            "import sys\n"
            "from pipeline.cli import main\n"
            f"sys.argv = ['pipeline', 'run', '{stage}']\n"
            "main()\n"
            "assert 'mlflow' not in sys.modules, 'imported MLflow'\n"
        )
        completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=workdir)
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert "skipped" in completed.stdout or "search disabled" in completed.stdout
    assert (workdir / "models" / "hyperparameters.json").is_file()
    assert (workdir / "reports" / "finetune" / "transfer.json").is_file()
    assert not (workdir / "mlflow.db").exists()
