"""Every command the README shows is run by a test or by CI, or says here why it cannot be.

A command added to the README without an entry below fails this test; so does an entry naming a
test that does not exist.
"""

import re

from tests.conftest import ROOT

# README command (its start) -> the test that runs it ("file::test"), "ci: ..." or "not here: why"
SERVER_TEST = "tests/e2e/test_tracking_server.py::test_stages_log_to_an_mlflow_server_and_mlflow_ui_shows_the_run"
UI_TEST = "tests/e2e/test_experiments.py::test_the_mlflow_ui_in_a_browser_shows_the_queued_variants_side_by_side"
PROFILE_TEST = "tests/code/test_stages.py::test_profile_writes_a_suite_that_the_same_data_passes"
WORKERS_TEST = "tests/e2e/test_multiworker.py::test_the_train_stage_on_two_workers_matches_one_worker"
ENGINE_TEST = "tests/e2e/test_engine.py::test_the_clean_table_gets_the_same_validated_and_prepared_data_on_beam"
COVERED = {
    "make repro": "ci: .ci/run runs `make test`, whose e2e tests run `dvc repro` (make repro = make install + that)",
    "make test": "ci: .ci/run",
    "make test-fast": "ci: the same pytest run, filtered by markers (make test covers it)",
    "make lint": "ci: .ci/run",
    "make bench": "not here: benchmarks run on demand (minutes); results in docs/benchmarks.md",
    "source .venv/bin/activate": "not here: shell set-up",
    "$EDITOR": "not here: the user edits the suite",
    "mlflow ui": SERVER_TEST,
    "pipeline ui": UI_TEST,
    "make screenshots": f"{UI_TEST} (the same test, keeping its pictures in docs/figures)",
    "mlflow server": SERVER_TEST,
    "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 dvc repro": SERVER_TEST,
    "dvc exp run -S tune.enabled=false -S train.learning_rate": (
        "tests/e2e/test_gate.py::test_first_blessed_worse_refused_a_forced_override_then_better_promoted"
    ),
    "dvc exp run -S data.source=penguins": (
        "tests/e2e/test_repro.py::test_an_experiment_variant_on_penguins_appears_beside_the_first_run"
    ),
    "dvc exp run -S base.strategy=mirrored -S base.logical_cpus=2": (
        "tests/e2e/test_strategies.py::test_the_whole_pipeline_runs_under_the_strategy_and_precision"
    ),
    "dvc exp show": (  # the README's exact command and the width of its table
        "tests/e2e/test_experiments.py::test_three_queued_variants_run_two_at_a_time_land_in_the_projects_store"
    ),
    "dvc exp run --queue -S train.learning_rate": (
        "tests/e2e/test_experiments.py::test_three_queued_variants_run_two_at_a_time_land_in_the_projects_store"
    ),
    "dvc exp run --run-all --jobs 2": (
        "tests/e2e/test_experiments.py::test_three_queued_variants_run_two_at_a_time_land_in_the_projects_store"
    ),
    "dvc metrics show": "tests/e2e/test_repro.py::test_metrics_are_readable_by_dvc",
    "git add expectations/ && dvc repro": PROFILE_TEST,
    "pipeline validate --profile": PROFILE_TEST,
    "pipeline predict --model models/serving --input data/ingested/images/3": (
        "tests/e2e/test_repro.py::test_predict_command_on_an_image_folder"
    ),
    "pipeline predict --model models/serving --input some_images/": (
        "tests/e2e/test_repro.py::test_predict_command_on_an_image_folder"
    ),
    "pipeline predict --model models/serving/penguins/<version> --input new_penguins.csv": (
        "tests/e2e/test_repro.py::test_an_experiment_variant_on_penguins_appears_beside_the_first_run"
    ),
    "pipeline tune --workers 2": "tests/e2e/test_tune.py::test_a_chief_and_two_workers_share_one_search",
    "export KERASTUNER_ORACLE_IP": (
        "tests/e2e/test_tune.py::test_a_chief_and_two_workers_share_one_search (the launcher sets exactly these)"
    ),
    "KERASTUNER_TUNER_ID=chief": "tests/e2e/test_tune.py::test_a_chief_and_two_workers_share_one_search",
    "KERASTUNER_TUNER_ID=tuner0": "tests/e2e/test_tune.py::test_a_chief_and_two_workers_share_one_search",
    "pipeline gate --force-bless": (
        "tests/e2e/test_gate.py::test_first_blessed_worse_refused_a_forced_override_then_better_promoted"
    ),
    "pipeline monitor --data": "tests/e2e/test_feedback_loop.py::test_drift_feedback_retrain_gate_and_push",
    "pipeline feedback add": "tests/e2e/test_feedback_loop.py::test_drift_feedback_retrain_gate_and_push",
    "RECENT_DATA=path/to/recent_batch BASE_REV=main .ci/retrain": (
        "tests/e2e/test_feedback_loop.py::test_drift_feedback_retrain_gate_and_push (`pipeline retrain`, which"
        " .ci/retrain execs: tests/code/test_workflow.py::test_the_workflow_triggers_and_delegates_to_the_script)"
    ),
    "pipeline serve --model models/serving": "tests/e2e/test_serve.py::test_status_and_metadata_answer_like_tf_serving",
    "pipeline serve --model models:/digits@candidate": (
        "tests/e2e/test_repro.py::test_the_registered_candidate_is_served_from_the_registry"
    ),
    "curl -s localhost:8501/v1/models/digits/metadata": (
        "tests/e2e/test_serve.py::test_status_and_metadata_answer_like_tf_serving"
    ),
    "curl -s -X POST localhost:8501/v1/models/digits:predict": (
        "tests/e2e/test_serve.py::test_test_examples_get_the_models_own_predictions"
    ),
    "saved_model_cli show": "tests/e2e/test_repro.py::test_saved_model_cli_shows_the_raw_input_signature",
    "pipeline train --workers 2": WORKERS_TEST,
    "export TF_CONFIG=": WORKERS_TEST + " (the launcher sets exactly this, per worker)",
    "pipeline run train": WORKERS_TEST,
    'pip install -e ".[beam]"': "ci: make install installs the dev extras, which include apache-beam",
    "dvc repro -f validate": ENGINE_TEST + " (the validate stage with data.engine beam: what that command runs)",
    "python -m apache_beam.runners.worker.worker_pool_main --service_port=50000": (
        "tests/e2e/test_engine.py::test_a_worker_pool_started_elsewhere_runs_the_tasks_as_on_a_flink_or_spark_cluster"
    ),
    "docker build": "not here: no Docker engine; tests/code/test_docker.py lints the Dockerfile (hadolint)",
    "docker run": "not here: no Docker engine (nor the tensorflow/serving image)",
}


DOCUMENTS = ["README.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[str]:
    """The commands of every `bash` block of the README and of docs/*.md."""
    text = "\n".join((ROOT / document).read_text() for document in DOCUMENTS)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command:
                commands.append(command)
    return commands


def test_every_readme_command_is_run_by_a_test_or_ci_or_says_why_not():
    commands = readme_commands()
    assert len(commands) > 30
    uncovered = [command for command in commands if not any(command.startswith(start) for start in COVERED)]
    assert uncovered == [], "README commands that no test runs: add a test, then an entry in COVERED"


def test_every_test_named_as_coverage_exists():
    missing = []
    for where in COVERED.values():
        for file, name in re.findall(r"(tests/\S+\.py)::(\w+)", where):
            path = ROOT / file
            if not path.is_file() or f"def {name}(" not in path.read_text():
                missing.append(f"{file}::{name}")
    assert missing == []


def test_the_readme_shows_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make repro", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
