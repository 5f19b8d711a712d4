"""Stage runner behaviour: clear errors, non-zero exits and no half-written outputs."""

import json

import pandas as pd

from tests.conftest import stage, write_params


def test_bad_user_data_stops_at_validate_and_keeps_the_last_good_output(workdir):
    write_params(workdir, {"data": {"source": "penguins"}})
    stage("ingest", workdir)
    stage("validate", workdir)
    validated = (workdir / "data/validated/table.parquet").read_bytes()

    table = pd.read_csv(workdir / "data/ingested/source.csv")
    table.loc[3, "island"] = "Atlantis"
    table.to_csv(workdir / "data/user/penguins.csv", index=False)
    write_params(
        workdir,
        {
            "data": {"source": "csv", "path": "data/user/penguins.csv", "label": "species"},
            "validate": {"suite": "expectations/penguins.yaml"},
        },
    )
    stage("ingest", workdir)
    failed = stage("validate", workdir, check=False)
    assert failed.returncode == 2
    assert "data validation failed: 1 error(s)" in failed.stderr
    assert "[ERROR] expect_column_values_to_be_in_set island: 1 unexpected" in failed.stderr
    assert "'Atlantis' at line 5" in failed.stderr
    assert "Full report: reports/validate/summary.json and reports/validate/data_docs/index.html" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (workdir / "data/validated/table.parquet").read_bytes() == validated
    summary = json.loads((workdir / "reports/validate/summary.json").read_text())
    assert summary["success"] is False and summary["errors"] == 1
    assert [path.name for path in (workdir / "data").iterdir() if path.name.startswith(".")] == []


def test_user_data_without_a_suite_asks_for_a_profile(workdir):
    pd.DataFrame({"x": range(20), "y": [0, 1] * 10}).to_csv(workdir / "data/user/mine.csv", index=False)
    write_params(workdir, {"data": {"source": "csv", "path": "data/user/mine.csv", "label": "y"}})
    stage("ingest", workdir)
    failed = stage("validate", workdir, check=False)
    assert failed.returncode == 2
    assert "expectations/mine.yaml: no expectation suite" in failed.stderr
    assert "pipeline validate --profile" in failed.stderr


def test_profile_writes_a_suite_that_the_same_data_passes(workdir):
    pd.DataFrame({"x": range(20), "colour": ["red", "blue"] * 10, "y": [0, 1] * 10}).to_csv(
        workdir / "data/user/mine.csv", index=False
    )
    write_params(workdir, {"data": {"source": "csv", "path": "data/user/mine.csv", "label": "y"}})
    import sys

    from tests.conftest import run

    written = run([sys.executable, "-m", "pipeline", "validate", "--profile"], workdir)
    assert "wrote expectations/mine.yaml" in written.stdout
    again = run([sys.executable, "-m", "pipeline", "validate", "--profile"], workdir, check=False)
    assert again.returncode == 2 and "pass --force" in again.stderr
    stage("ingest", workdir)
    passed = stage("validate", workdir)
    assert "expectations passed on 20 rows" in passed.stdout
    schema = json.loads((workdir / "data/validated/schema.json").read_text())
    assert schema["columns"]["colour"]["categories"] == ["blue", "red"]
    assert schema["columns"]["x"]["type"] == "numeric"
