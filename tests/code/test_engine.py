"""The data engine's contract: results in task order whatever finished first, user errors raised as they
are (not as a runner's traceback), settings checked before anything runs."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.core.config import ConfigError, config_from_dict
from pipeline.core.errors import DataError
from pipeline.data.engine import Engine, beam_options
from tests.conftest import default_params, merged


def slow_first(task: int) -> tuple[int, int]:
    time.sleep(0.3 if task == 0 else 0.0)  # the first task finishes last
    return task * task, os.getpid()


def fails_on_three(task: int) -> int:
    if task == 3:
        raise DataError(f"task {task}: a bad row")
    return task


def test_the_local_engine_runs_the_tasks_in_order_in_this_process():
    assert list(Engine().map(slow_first, [0, 1, 2])) == [(0, os.getpid()), (1, os.getpid()), (4, os.getpid())]
    with pytest.raises(DataError, match="task 3: a bad row"):
        list(Engine().map(fails_on_three, range(5)))


def test_beam_returns_results_in_task_order_from_its_worker_processes(tmp_path, monkeypatch, caplog):
    """And leaves nothing in the system's temporary folder, with no try of a runner that downloads itself (the
    DirectRunner's PrismRunner left a `beam-temp*` folder there for each pipeline)."""
    import logging
    import tempfile

    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    caplog.set_level(logging.INFO)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    pytest.importorskip("apache_beam")
    engine = Engine("beam", workers=2, scratch=str(scratch))
    results = list(engine.map(slow_first, list(range(8))))
    assert [square for square, _ in results] == [task * task for task in range(8)]
    assert os.getpid() not in {pid for _, pid in results}  # the workers ran them
    with pytest.raises(DataError, match="task 3: a bad row"):
        list(engine.map(fails_on_three, list(range(6))))
    assert list(scratch.iterdir()) == []  # no results left behind
    assert list(system_temp.iterdir()) == []
    assert "Prism" not in caplog.text


def test_beam_options_default_to_local_worker_processes_unless_a_runner_is_given():
    assert beam_options(3, []) == [
        "--runner=FnApiRunner",
        "--direct_num_workers=3",
        "--direct_running_mode=multi_processing",
    ]
    flink = ["--runner=FlinkRunner", "--flink_master=host:8081"]
    assert beam_options(3, flink) == flink


def test_tasks_go_through_a_job_service_as_on_a_flink_or_spark_cluster(tmp_path):
    """`data.engine_options` with a runner are Beam's own: the portable runner submits the job to a job service
    (here Beam's embedded one, with the workers in this process) as it would to Flink's or Spark's job server."""
    pytest.importorskip("apache_beam")
    options = ("--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK")
    engine = Engine("beam", options=options, scratch=str(tmp_path))
    assert [square for square, _ in engine.map(slow_first, list(range(5)))] == [0, 1, 4, 9, 16]
    with pytest.raises(DataError, match="task 3: a bad row"):
        list(engine.map(fails_on_three, list(range(6))))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"engine_workers": 0}, "data.engine_workers = 0 is not valid"),
        ({"engine_options": ["runner=FlinkRunner"]}, "data.engine_options = ['runner=FlinkRunner'] is not valid"),
        ({"engine": "spark"}, "data.engine = 'spark' is not valid"),
    ],
)
def test_engine_settings_are_checked_before_anything_runs(data, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(merged(default_params(), {"data": data}))
