"""Columns a user's table holds beyond its features: identifiers, dates and free text pointed out by the
profile and dropped with `data.drop_columns` everywhere (validation, training, requests); column names
that are not text (a Parquet file written from a frame with integer column names)."""

from __future__ import annotations

import json
import string
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import ConfigError, load_config
from pipeline.core.errors import DataError
from pipeline.core.spec import load as load_spec
from pipeline.data import expectations
from pipeline.data.columns import suspicious_columns
from pipeline.data.sources import load_table
from tests.conftest import run, stage, write_params

COMMENTS = ["".join(letters) for letters in np.random.default_rng(4).choice(list(string.ascii_lowercase), (200, 8))]


def orders(count: int = 120) -> pd.DataFrame:
    generator = np.random.default_rng(3)
    colour = generator.choice(["red", "green", "blue"], count)
    weight = generator.normal(10, 2, count).round(2)
    return pd.DataFrame(
        {
            "order_id": np.arange(1000, 1000 + count),
            "placed": pd.date_range("2026-03-01", periods=count, freq="37min").strftime("%Y-%m-%d %H:%M"),
            "comment": generator.choice(COMMENTS, count),  # many repeat, most differ
            "colour": colour,
            "weight": weight,
            "grams": (weight * 1000).astype(int) * 7 + 5,  # whole numbers, all different: a measurement
            "heavy": np.where((weight > 10) | (colour == "red"), "yes", "no"),
        }
    )


def test_identifiers_dates_and_free_text_are_pointed_out_and_features_are_not():
    found = suspicious_columns(orders(), label="heavy")
    assert set(found) == {"order_id", "placed", "comment"}, found
    assert "identifier" in found["order_id"] and "dates" in found["placed"] and "distinct" in found["comment"]
    assert suspicious_columns(orders(10), label="heavy") == {}  # too few values to judge


def test_a_suite_forgets_the_dropped_columns_and_keeps_the_rest():
    table = orders()
    suite = expectations.profile_table(table, "heavy", "classification")
    trimmed = expectations.without_columns(suite, ["order_id", "placed"])
    assert not [item for item in trimmed.expectations if item.get("column") in ("order_id", "placed")]
    (columns,) = trimmed.find("expect_table_columns_to_match_set")
    assert columns["column_set"] == ["comment", "colour", "weight", "grams", "heavy"]
    assert len(suite.find("expect_table_columns_to_match_set")[0]["column_set"]) == 7  # the original is unchanged


@pytest.fixture
def orders_project(workdir):
    orders().to_csv(workdir / "data/user/orders.csv", index=False)
    data = {"source": "csv", "path": "data/user/orders.csv", "label": "heavy"}
    write_params(workdir, {"data": data})
    return workdir, data


def test_the_profile_names_the_columns_to_drop_and_dropping_them_needs_no_new_suite(orders_project):
    workdir, data = orders_project
    profiled = run([sys.executable, "-m", "pipeline", "validate", "--profile"], workdir)
    for column in ("order_id", "placed", "comment"):
        assert f"note: Column {column!r}" in profiled.stdout and "data.drop_columns" in profiled.stdout
    assert "order_id" in (workdir / "expectations/orders.yaml").read_text().split("kind:")[0]  # in the header
    write_params(workdir, {"data": {**data, "drop_columns": ["order_id", "placed", "comment"]}})
    for name in ("ingest", "validate", "preprocess"):
        stage(name, workdir)  # the suite profiled with every column still judges the rest
    validated = pd.read_parquet(workdir / "data/validated/table.parquet")
    assert list(validated.columns) == ["colour", "weight", "grams", "heavy"]
    assert orders().columns.size == pd.read_csv(workdir / "data/ingested/source.csv").columns.size  # snapshot intact
    spec = load_spec(workdir / "data/prepared")
    assert [feature.column for feature in spec.features] == ["colour", "weight", "grams"]
    assert spec.dropped_columns == ["order_id", "placed", "comment"]

    from pipeline.ml.modalities import RequestError, model_modality

    _table_batch = model_modality("table").request_batch

    row = orders().iloc[0].to_dict()  # a row of the training file, dropped columns and label included
    row.pop("heavy")
    batch = _table_batch([json.loads(json.dumps(row, default=str))], spec)
    assert sorted(batch) == sorted(feature.name for feature in spec.features)
    with pytest.raises(RequestError, match="unknown column 'bogus'"):
        _table_batch([{**row, "bogus": 1}], spec)


def test_a_misspelt_column_to_drop_stops_validate_naming_the_columns(orders_project):
    workdir, data = orders_project
    run([sys.executable, "-m", "pipeline", "validate", "--profile"], workdir)
    write_params(workdir, {"data": {**data, "drop_columns": ["orderid"]}})
    stage("ingest", workdir)
    failed = stage("validate", workdir, check=False)
    assert failed.returncode == 2
    assert "data.drop_columns names 'orderid', which is not a column" in failed.stderr and "order_id" in failed.stderr


def test_the_label_and_image_data_cannot_be_dropped(workdir):
    write_params(workdir, {"data": {"source": "penguins", "drop_columns": ["species"]}})
    with pytest.raises(ConfigError, match="data.drop_columns"):
        load_config("params.yaml")
    write_params(workdir, {"data": {"source": "digits", "drop_columns": ["x"]}})
    with pytest.raises(ConfigError, match="image data"):
        load_config("params.yaml")


def test_a_parquet_file_with_integer_column_names_reads_with_text_names(tmp_path):
    path = tmp_path / "numbers.parquet"
    pd.DataFrame(np.arange(12.0).reshape(4, 3)).to_parquet(path)  # columns 0, 1, 2 come back as integers
    assert list(pd.read_parquet(path).columns) == [0, 1, 2]
    assert list(load_table(path, "parquet").columns) == ["0", "1", "2"]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("a,b\n1,2\n")
    assert list(load_table(mixed, "csv").columns) == ["a", "b"]


def test_a_parquet_table_with_integer_column_names_runs_with_a_text_label(workdir):
    generator = np.random.default_rng(0)
    features = generator.normal(size=(90, 3))
    table = pd.DataFrame({0: features[:, 0], 1: features[:, 1], 2: (features[:, 0] > 0).astype(int)})
    table.to_parquet(workdir / "data/user/numbers.parquet")
    write_params(workdir, {"data": {"source": "parquet", "path": "data/user/numbers.parquet", "label": "2"}})
    run([sys.executable, "-m", "pipeline", "validate", "--profile"], workdir)
    for name in ("ingest", "validate", "preprocess"):
        stage(name, workdir)
    spec = load_spec(workdir / "data/prepared")
    assert spec.label == "2" and [feature.column for feature in spec.features] == ["0", "1"]
    assert spec.classes == ["0", "1"]


def test_drop_columns_rejects_nothing_else(tmp_path):
    with pytest.raises(DataError, match="two columns are both named '1'"):
        from pipeline.data.sources import with_text_column_names

        with_text_column_names(pd.DataFrame([[1, 2]], columns=[1, "1"]), tmp_path / "t.csv")
