"""Stage runner behaviour: clear errors, non-zero exits and no half-written outputs."""

import json

import pandas as pd

from tests.conftest import stage, write_params


def test_ingest_of_bad_user_data_fails_clearly_and_keeps_the_last_good_output(workdir):
    stage("ingest", workdir)
    before = (workdir / "data/ingested/dataset.json").read_text()

    pd.DataFrame({"x": [1, 2, 3]}).to_csv(workdir / "data/user/table.csv", index=False)
    write_params(workdir, {"data": {"source": "csv", "path": "data/user/table.csv", "label": "target"}})
    failed = stage("ingest", workdir, check=False)
    assert failed.returncode == 2
    assert "no label column 'target'" in failed.stderr and "set data.label" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (workdir / "data/ingested/dataset.json").read_text() == before
    assert [path.name for path in (workdir / "data").iterdir() if path.name.startswith(".")] == []


def test_ingest_of_penguins_reads_the_written_csv_back(workdir):
    write_params(workdir, {"data": {"source": "penguins"}})
    completed = stage("ingest", workdir)
    assert "read penguins (344 rows, 3 classes)" in completed.stdout
    description = json.loads((workdir / "data/ingested/dataset.json").read_text())
    assert description["label"] == "species" and description["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert (workdir / "data/ingested/source.csv").is_file()
