"""MLflow tracking: one run per pipeline execution, shared by every stage process.

DVC runs each stage as its own process, so stages find their run by a key: a hash of the
settings, the pipeline's code and the ingested data. Two `dvc exp run -S ...` variants have
different keys and so appear as two runs side by side in the MLflow UI; the stages of one
execution (same settings, code and data) all write into the same run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from pipeline.core.config import Config
from pipeline.core.locations import sqlite_file
from pipeline.core.processes import leave_loaded_objects_out_of_collections, process_running

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `pipeline` package
KEY_TAG = "pipeline.key"
OWNER_TAG = "pipeline.owner"  # host:pid of the stage process that has the run open


def code_fingerprint() -> str:
    """A hash of the pipeline package's source files."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def data_fingerprint(config: Config) -> str:
    description = Path(config.paths.ingested) / "source.json"
    if not description.is_file():
        return "none"
    return json.loads(description.read_text()).get("fingerprint", "none")


def data_version(config: Config, lock_file: str | Path = "dvc.lock") -> dict[str, str]:
    """The version of the data a model was trained on: the pipeline's fingerprint of the source
    files and, inside a DVC repository, the DVC hash of the validated data (from dvc.lock)."""
    version = {"data.fingerprint": data_fingerprint(config), "data.source": config.data.source}
    lock = Path(lock_file)
    if lock.is_file():
        import yaml

        # libyaml's parser where PyYAML has it: every stage reads the lock, DVC's own file (about 0.1 s in Python)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        stages = (yaml.load(lock.read_text(), Loader=loader) or {}).get("stages", {})
        for out in stages.get("validate", {}).get("outs", []):
            if Path(out.get("path", "")) == Path(config.paths.validated) and out.get("md5"):
                version["dvc.validated_md5"] = out["md5"]
    return version


def run_key(config: Config) -> str:
    """Identifies a pipeline execution: the same settings, code and data give the same key."""
    payload = json.dumps(
        {"params": config.to_flat_dict(), "code": code_fingerprint(), "data": data_fingerprint(config)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def git_commit() -> Optional[str]:
    try:
        completed = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None


# MLflow's UI opens an experiment in its GenAI view unless the experiment says it holds model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def configure(config: Config, name: str | None = None):
    """Points MLflow at the configured store and experiment (created with its artifacts beside a local
    store, and declared as model training); returns the experiment."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = config.tracking.resolved_uri
    mlflow.set_tracking_uri(uri)
    name = name or config.tracking.experiment
    with store_lock(uri):  # parallel queue workers must not both create the store or the experiment
        create_store(uri, config.tracking.artifact_location)
        experiment = _experiment(mlflow, config, name)
    return experiment


def create_store(uri: str, artifact_location: str | None) -> None:
    """Creates a missing local SQLite store completely or not at all: MLflow builds its schema with a
    chain of migrations, and a process killed in the middle left a store no later stage could open
    ("table ... already exists"). So the store is built under a temporary name and renamed into place."""
    path = sqlite_file(uri)
    if path is None or path.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    temporary = path.with_name(f".{path.name}.creating")
    temporary.unlink(missing_ok=True)  # what a process killed while creating it left
    store = SqlAlchemyStore(f"sqlite:///{temporary}", artifact_location or (path.parent / "mlruns").as_uri())
    store.engine.dispose()
    os.replace(temporary, path)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a local SQLite store (`<store>.lock`), held while the store and the
    experiment are looked up or created: two processes creating one store at once break its schema."""
    path = sqlite_file(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _experiment(mlflow, config: Config, name: str):
    if mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=config.tracking.artifact_location, tags=EXPERIMENT_KIND)
        except mlflow.exceptions.MlflowException:  # a parallel queue worker created it first
            pass
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get("mlflow.experimentKind") is None:  # a store made by an earlier version
        mlflow.set_experiment_tags(EXPERIMENT_KIND)
    return experiment


def run_tags(config: Config, key: str) -> dict[str, str]:
    tags = {
        KEY_TAG: key,
        "pipeline.data_source": config.data.source,
        "pipeline.data_fingerprint": data_fingerprint(config),
        "pipeline.code_fingerprint": code_fingerprint(),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.commit"] = commit
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        tags["dvc.experiment"] = experiment
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        tags["dvc.baseline_rev"] = baseline
    return tags


@contextlib.contextmanager
def pipeline_run(config: Config, stage: str) -> Iterator[object]:
    """Starts (or reopens) the MLflow run of this pipeline execution and logs all params."""
    import mlflow

    experiment = configure(config)
    key = run_key(config)
    settle_orphaned_runs(experiment.experiment_id, resuming_key=key)
    tags = run_tags(config, key)
    existing = mlflow.search_runs(filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1, output_format="list")
    if existing:
        run_id = existing[0].info.run_id
        log.info("MLflow: continuing run %s (%s)", run_id, key)
        context = mlflow.start_run(run_id=run_id)
    else:
        name = os.environ.get("DVC_EXP_NAME") or f"{config.data.source}-{config.model_family}-{key[:6]}"
        context = mlflow.start_run(run_name=name, tags={**tags, "mlflow.note.content": describe(config, key)})
    with context as run, system_metrics(run.info.run_id, stage, config.tracking.system_metrics_interval_s):
        mlflow.set_tags(tags)  # a reopened run gets this execution's commit and experiment name
        mlflow.log_params({name: _param_value(value) for name, value in config.to_flat_dict().items()})
        mlflow.set_tags({f"pipeline.stage.{stage}": "running", OWNER_TAG: owner()})
        leave_loaded_objects_out_of_collections()  # MLflow and its store are loaded
        yield run
        mlflow.set_tag(f"pipeline.stage.{stage}", "done")


# The stages whose resource use is worth a look: the search and the two that train.
SYSTEM_METRICS_STAGES = ("tune", "train", "finetune")


@contextlib.contextmanager
def system_metrics(run_id: str, stage: str, interval_s: float | None) -> Iterator[None]:
    """MLflow's own system metrics (CPU, memory, disk, network; GPU where `pynvml` finds one) sampled
    every `interval_s` seconds while a long stage runs, as MLflow names them (`system/...`: the run's
    System metrics tab). The stages of a run make one timeline (each continues at the step after the
    last one logged); the processes of a distributed search or training each log their own
    (`system/<process>/...`), which their simultaneous samples would otherwise overwrite."""
    if interval_s is None or stage not in SYSTEM_METRICS_STAGES:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, node_id=process_role(), resume_logging=True)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()  # drops the sample in progress: a stage shorter than the interval would log none
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()


def process_role() -> str | None:
    """This process's part in a distributed stage: Keras Tuner's `KERASTUNER_TUNER_ID` (chief, tuner0, ...)
    or the `TF_CONFIG` task of a multi-worker training (worker0, ...); None for a single process."""
    tuner = os.environ.get("KERASTUNER_TUNER_ID")
    if tuner:
        return tuner
    try:
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task") or {}
    except (ValueError, AttributeError):
        return None
    return f"{task['type']}{task.get('index', 0)}" if task.get("type") else None


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def settle_orphaned_runs(experiment_id: str, resuming_key: str | None = None) -> int:
    """Marks KILLED the runs of the current experiment left RUNNING by a stage process of this machine
    that no longer exists (killed, or the machine restarted), with their nested runs (search trials),
    so that the MLflow UI never shows a run as running forever. Returns how many runs were settled.

    Runs opened on other machines are left alone: only their owner can tell whether they still run. The
    nested runs of the run this execution reopens (`resuming_key`) are left to the resumed search too: it
    settles each trial from its oracle (FINISHED if the oracle recorded it, KILLED if it runs again)."""
    import mlflow

    client = mlflow.tracking.MlflowClient()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    host = socket.gethostname()
    settled = 0
    for run in running:
        owner_host, _, pid = run.data.tags.get(OWNER_TAG, "").rpartition(":")
        if owner_host != host or not pid.isdigit() or process_running(int(pid)):
            continue
        children = []
        if run.data.tags.get(KEY_TAG) != resuming_key:
            children = client.search_runs(
                [experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'",
            )
        for child in [*children, run]:
            for name, value in child.data.tags.items():
                if name.startswith("pipeline.stage.") and value == "running":
                    client.set_tag(child.info.run_id, name, "killed")
            client.set_terminated(child.info.run_id, status="KILLED")
            settled += 1
        log.warning("MLflow: run %s was left running by process %s, which is gone; marked KILLED", run.info.run_id, pid)
    return settled


def describe(config: Config, key: str) -> str:
    """The run's description in the MLflow UI (Markdown)."""
    experiment = os.environ.get("DVC_EXP_NAME")
    how = f"`dvc exp run` experiment `{experiment}`" if experiment else "`dvc repro`"
    return (
        f"{how} of {config.data.source} data with a {config.model_family} model"
        f" (`{config.tracking.experiment}`, run key `{key}`). Every stage that runs logs here: params, holdout"
        " metrics, learning curves, the datasets, the model and its registered version with the gate's decision."
    )


def _param_value(value: object) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def log_stage_result(stage: str, result) -> None:
    import mlflow

    if result.metrics:
        mlflow.log_metrics({name: float(value) for name, value in result.metrics.items()})
    for artifact in result.artifacts:
        artifact = Path(artifact)
        if artifact.is_dir():
            mlflow.log_artifacts(str(artifact), artifact_path=f"{stage}/{artifact.name}")
        elif artifact.is_file():
            mlflow.log_artifact(str(artifact), artifact_path=stage)


def log_hyperparameters(hyperparameters: dict) -> None:
    """The hyperparameters a model was trained with, as `hp.<name>` params of the active run.

    A rerun in the same run that found other values (a search with a wall-clock budget) cannot
    overwrite MLflow params: those values go to `hp.<name>` tags instead.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    values = {f"hp.{name}": _param_value(value) for name, value in hyperparameters.items()}
    try:
        mlflow.log_params(values)
    except MlflowException:
        log.warning("MLflow: this run already holds other hyperparameters; recording these as hp.* tags")
        mlflow.set_tags(values)


SPLIT_CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}


def log_datasets(config: Config, spec, schema) -> None:
    """The data the run used, as MLflow datasets (the run page's Datasets, the runs table's column) and
    the split sizes as `data_<split>_examples` metrics. The train stage logs them, not preprocess: DVC
    restores an unchanged split from its run cache without running preprocess, so a new run (another
    learning rate) would lack them. One dataset per split, named `<source>-<split>`, with a digest from
    DVC's hash of the validated data (so two runs on different data are told apart at a glance), the
    prepared folder as source, the model inputs' `schema` (an MLflow Schema), and the git commit and example
    counts as tags."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    version = data_version(config)
    base = version.get("dvc.validated_md5") or version["data.fingerprint"]
    source = resolve_dataset_source(str(Path(config.paths.prepared).resolve()))
    commit = git_commit() or "unknown"
    mlflow.log_metrics({f"data_{split}_examples": spec.split(split).num_examples for split in SPLIT_CONTEXTS})
    for split, context in SPLIT_CONTEXTS.items():
        digest = hashlib.sha256(f"{base}:{split}".encode()).hexdigest()[:10]
        dataset = MetaDataset(source=source, name=f"{config.data.source}-{split}", digest=digest, schema=schema)
        tags = {"split": split, "examples": str(spec.split(split).num_examples), "git.commit": commit}
        tags.update({key: value for key, value in version.items() if key.startswith("dvc.")})
        mlflow.log_input(dataset, context=context, tags=tags)


# MLflow 3.17's UI shows every experiment in its GenAI mode unless the address (or the user's toggle,
# kept in the browser) says otherwise: the experiment's `mlflow.experimentKind` tag no longer decides it.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_links(base_url: str, experiment_id: str, run_ids: list[str]) -> dict[str, str]:
    """Addresses in the MLflow UI that open on what a user compares: the experiment's runs table, the
    newest run's page and the compare view of `run_ids` (two or more), all in the model-training view."""
    from urllib.parse import quote

    base = base_url.rstrip("/")
    links = {"runs": f"{base}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"}
    if run_ids:
        links["newest run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_ids[0]}?{MODEL_TRAINING_VIEW}"
    if len(run_ids) >= 2:
        runs, experiments = quote(json.dumps(run_ids)), quote(json.dumps([experiment_id]))
        links["compare"] = f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&{MODEL_TRAINING_VIEW}"
    return links


def newest_pipeline_runs(experiment_id: str, count: int) -> list[str]:
    """The ids of the newest `count` pipeline runs (not search trials) of an experiment, newest first."""
    import mlflow

    runs = mlflow.tracking.MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.`{KEY_TAG}` != ''", order_by=["attributes.start_time DESC"]
    )
    return [run.info.run_id for run in runs if "mlflow.parentRunId" not in run.data.tags][:count]


def ui(config: Config, host: str, port: int, compare: int) -> int:
    """`pipeline ui`: prints the addresses of the runs table and the compare view of the newest runs, then
    serves the project's store with `mlflow ui` (a tracking server's URI: only the addresses)."""
    from pipeline.core.errors import ConfigError
    from pipeline.core.processes import tool

    uri = config.tracking.resolved_uri
    local = not uri.startswith(("http://", "https://"))  # a database this command can serve; else a server
    store = sqlite_file(uri)
    if store is not None and not store.is_file():
        raise ConfigError(f"no MLflow store at {uri} yet: run the pipeline first (`dvc repro`)")
    experiment = configure(config)
    base = f"http://{host}:{port}" if local else uri
    links = ui_links(base, experiment.experiment_id, newest_pipeline_runs(experiment.experiment_id, compare))
    for name, link in links.items():
        print(f"{name}: {link}", flush=True)
    if not local:
        return 0
    command = [tool("mlflow"), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "2"]
    print(f"serving {uri} (Ctrl-C stops it)", flush=True)
    os.execvp(command[0], command)  # this process becomes the UI: stopping it stops the UI, nothing is left behind
