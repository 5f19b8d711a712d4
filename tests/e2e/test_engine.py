"""`data.engine: beam` (Apache Beam's FnApiRunner, two worker processes) against `local` on the same data:
the same validation verdicts (every count and example line), the same validated data, for tables (CSV and
Parquet, chunk by chunk) and images (decoded and hashed by the workers); then the same prepared data, byte
for byte: split membership and order, training statistics, every TFRecord shard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, stage, write_params

pytest.importorskip("apache_beam")

ENGINES = {"local": {"engine": "local"}, "beam": {"engine": "beam", "engine_workers": 2}}
VOLATILE = ("suite", "seconds")  # the suite's path differs between the two project folders


def hostile_penguins() -> pd.DataFrame:
    """The penguins table with what users' tables hold: a negative mass, an unknown island, a text in a
    number column, a missing label, duplicated rows, spread over several chunks."""
    import palmerpenguins

    table = palmerpenguins.load_penguins()
    table["body_mass_g"] = table["body_mass_g"].astype(object)
    table.loc[5, "body_mass_g"] = -40.0
    table.loc[120, "island"] = "Atlantis"
    table.loc[200, "body_mass_g"] = "heavy"
    table.loc[260, "species"] = None
    return pd.concat([table, table.iloc[[10, 300]]], ignore_index=True)


def validated(
    parent: Path,
    engine: str,
    source: dict,
    data: Path | None,
    preprocess: dict | None = None,
    settings: dict | None = None,
    runner: str = "--runner=FnApiRunner --direct_num_workers=2",
):
    """Runs ingest and validate (and preprocess with these settings, if given) in a fresh folder with `engine`
    (or Beam with `settings`, whose `runner` the log names); returns (summary.json, validated data and the
    prepared files' bytes)."""
    folder = parent / engine
    (folder / "data" / "feedback").mkdir(parents=True)
    shutil.copytree(ROOT / "expectations", folder / "expectations")
    if data is not None:
        shutil.copy(data, folder / "data" / data.name)
    params = {"data": {**source, **(settings or ENGINES[engine])}, "validate": {"chunk_rows": 50}}
    write_params(folder, {**params, "preprocess": preprocess or {}})
    ingested = stage("ingest", folder)
    if source["source"] == "digits":  # the images' bytes are hashed for the fingerprint by the engine's workers
        assert ("task(s) on Apache Beam" in ingested.stderr) == (engine != "local"), ingested.stderr[-3000:]
    finished = stage("validate", folder, check=False)
    on_beam = f"task(s) on Apache Beam ({runner})" in finished.stderr
    assert on_beam == (engine != "local"), finished.stderr[-3000:]
    summary = json.loads((folder / "reports" / "validate" / "summary.json").read_text())
    for key in VOLATILE:
        summary.pop(key, None)
    outputs = {}
    if finished.returncode == 0:
        for path in sorted((folder / "data" / "validated").iterdir()):
            outputs[path.name] = pd.read_parquet(path) if path.suffix == ".parquet" else json.loads(path.read_text())
    else:
        assert finished.returncode == 2, finished.stderr[-3000:]
        (error,) = [line for line in finished.stderr.splitlines() if line.startswith("pipeline validate: error")]
        outputs["error"] = error
    if preprocess is not None:
        finished = stage("preprocess", folder)
        assert ("task(s) on Apache Beam" in finished.stderr) == (engine != "local"), finished.stderr[-3000:]
        prepared = folder / "data" / "prepared"
        outputs["prepared"] = {path.name: path.read_bytes() for path in sorted(prepared.iterdir())}
    return summary, outputs


def assert_same(local: tuple[dict, dict], beam: tuple[dict, dict]) -> None:
    assert local[0] == beam[0]
    assert local[1].keys() == beam[1].keys()
    for name, value in local[1].items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, beam[1][name], check_exact=True)
        else:
            assert value == beam[1][name], name


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_a_hostile_table_gets_the_same_verdicts_on_beam_as_locally(tmp_path, file_format):
    data = tmp_path / f"penguins.{file_format}"
    table = hostile_penguins()
    if file_format == "csv":
        table.to_csv(data, index=False)
    else:  # row groups of 64 rows: the chunks of 50 straddle them
        table.astype({"body_mass_g": str}).to_parquet(data, index=False, row_group_size=64)
    source = {"source": file_format, "path": f"data/{data.name}", "label": "species"}
    local, beam = (validated(tmp_path, engine, source, data) for engine in ENGINES)
    assert_same(local, beam)
    assert local[0]["success"] is False and local[0]["chunks"] == 7
    failed = {(check["expectation"], json.dumps(check["column"])) for check in local[0]["failures"]}
    assert failed == {  # what validating the table whole finds too (chunks once paired unrelated checks)
        ("expect_column_values_to_not_be_null", '"species"'),
        ("expect_column_values_to_be_in_set", '"island"'),
        ("expect_column_values_to_be_between", '"body_mass_g"'),
        ("expect_column_values_to_be_in_type_list", '"body_mass_g"'),
        ("expect_compound_columns_to_be_unique", json.dumps(list(table.columns))),
    }
    assert local[1]["error"].startswith("pipeline validate: error: data validation failed: 4 error(s), 1 warning(s)")


@pytest.mark.parametrize("missing_values", ["impute", "drop"])
def test_the_clean_table_gets_the_same_validated_and_prepared_data_on_beam(tmp_path, missing_values):
    import palmerpenguins

    data = tmp_path / "penguins.csv"
    palmerpenguins.load_penguins().to_csv(data, index=False)
    source = {"source": "csv", "path": "data/penguins.csv", "label": "species"}
    settings = {"shard_size": 32, "missing_values": missing_values}
    local, beam = (validated(tmp_path / missing_values, engine, source, data, settings) for engine in ENGINES)
    assert_same(local, beam)
    assert local[0]["success"] is True and len(local[1]["table.parquet"]) == 344
    spec = json.loads(local[1]["prepared"]["spec.json"])
    counts = {split: spec["splits"][split]["num_examples"] for split in spec["splits"]}
    assert sum(counts.values()) == (344 if missing_values == "impute" else 333)  # 11 rows miss a feature
    assert len(spec["splits"]["train"]["files"]) == -(-counts["train"] // 32)  # read from 7 row groups of 50


DIGITS, DIGITS_PREPROCESS = {"source": "digits"}, {"shard_size": 256}


@pytest.fixture(scope="module")
def local_digits(tmp_path_factory):
    """The digits validated and prepared by the local engine: what every other engine must give."""
    return validated(tmp_path_factory.mktemp("digits"), "local", DIGITS, None, DIGITS_PREPROCESS)


def test_images_are_decoded_by_the_workers_with_the_same_manifest_verdicts_and_shards(tmp_path, local_digits):
    local, beam = local_digits, validated(tmp_path, "beam", DIGITS, None, DIGITS_PREPROCESS)
    assert_same(local, beam)
    assert local[0]["success"] is True and len(local[1]["manifest.parquet"]) == 1797
    spec = json.loads(local[1]["prepared"]["spec.json"])
    assert spec["splits"]["train"]["num_examples"] == 1257 and len(spec["splits"]["train"]["files"]) == 5


@pytest.fixture
def worker_pool(tmp_path):
    """Beam's worker pool, as Flink and Spark run it on Kubernetes (beside each task manager): a service
    started on its own, in another folder, that starts the SDK workers a runner asks it for."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    elsewhere = tmp_path / "worker-pool"
    elsewhere.mkdir()
    log = elsewhere / "pool.log"
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # it starts `python`
        "PYTHONPATH": str(ROOT),  # the project installed in the workers' image
    }
    with open(log, "w") as output:
        pool = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            cwd=elsewhere,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Started worker pool servicer" not in log.read_text():
            assert pool.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield port, log
    finally:
        os.killpg(pool.pid, signal.SIGKILL)
        pool.wait()


def test_a_worker_pool_started_elsewhere_runs_the_tasks_as_on_a_flink_or_spark_cluster(
    tmp_path, worker_pool, local_digits
):
    """The job goes through a job service (Beam's embedded one: a Flink or Spark job server on a cluster) to
    workers the pool started in its own folder: they work in the project's folder, by its relative paths."""
    port, pool_log = worker_pool
    options = [
        "--runner=PortableRunner",
        "--job_endpoint=embed",
        "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{port}",
    ]
    settings = {"engine": "beam", "engine_options": options}
    pool = validated(tmp_path, "pool", DIGITS, None, DIGITS_PREPROCESS, settings, runner="--runner=PortableRunner")
    assert_same(local_digits, pool)
    assert "Starting worker with command" in pool_log.read_text()  # the pool's own workers ran the tasks
