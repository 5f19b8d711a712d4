"""Every benchmark in bench/ runs in its smoke mode, so none can break unnoticed (results are not checked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run

pytestmark = pytest.mark.e2e

BENCH = ROOT / "bench"


def bench(script: str, *arguments: str, cwd: Path = ROOT) -> str:
    return run([sys.executable, str(BENCH / script), "--smoke", *arguments], cwd, timeout=900).stdout


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory) -> Path:
    """bench_pipeline.py's smoke run, kept: the trained and exported digits model of a tiny `dvc repro`."""
    kept = tmp_path_factory.mktemp("bench")
    output = bench("bench_pipeline.py", "--keep", str(kept))
    assert "| digits |" in output and "| ratio |" in output, output
    return kept / "digits"


def test_bench_pipeline(smoke_project):
    assert (smoke_project / "models" / "serving").is_dir()


def test_bench_serve(smoke_project):
    assert "| batch of 32 |" in bench("bench_serve.py", "--model", "models/serving", cwd=smoke_project)


def test_bench_monitor(smoke_project):
    assert "retrain in" in bench("bench_monitor.py", cwd=smoke_project)


def test_bench_validation():
    assert "PNG images" in bench("bench_validation.py")


def test_bench_scale():
    assert "x1 (1797 images)" in bench("bench_scale.py")


def test_bench_engine():
    pytest.importorskip("apache_beam")
    output = bench("bench_engine.py")
    assert "| table | 344 rows | beam |" in output and "| True | True |" in output and "False" not in output


def test_bench_object_store():
    pytest.importorskip("s3fs")
    output = bench("bench_object_store.py")
    assert "| disk | - | 1 |" in output and "| bucket | 5 ms | 16 |" in output


def test_bench_tune():
    output = bench("bench_tune.py")
    assert "| hyperband |" in output and "| random |" in output


def test_bench_augmentation():
    assert "| 8 | none |" in bench("bench_augmentation.py")


def test_bench_chaos():
    assert "ok" in bench("bench_chaos.py")


def test_bench_queue():
    assert "4 variants, 2 worker(s): ok" in bench("bench_queue.py")


def test_bench_same_outputs():
    assert "smoke: the copies and the comparison work" in bench("bench_same_outputs.py")


def test_bench_text():
    assert '"set": "rotten_tomatoes", "family": "mlp"' in bench("bench_text.py")


def test_bench_series():
    assert '"set": "sunspots", "family": "mlp"' in bench("bench_series.py")


def test_bench_fresh_env(smoke_project):
    output = bench("bench_fresh_env.py", "--project", str(smoke_project), "--model", "digits", "--alias", "candidate")
    assert '"mlflow_models_predict"' in output and '"pyfunc_by_alias"' in output, output


def test_bench_speed():
    output = bench("bench_speed.py")
    assert '"epoch ratio"' in output and '"repro ratio"' in output and '"floor ratio"' in output, output


def test_bench_gate():
    output = bench("bench_gate.py")
    assert '"set": "penguins"' in output and '"auto (baselines)"' in output, output


def test_every_benchmark_has_a_smoke_test_here():
    text = Path(__file__).read_text()
    assert [script.name for script in BENCH.glob("*.py") if f'"{script.name}"' not in text] == []
