"""The data gate: every bad input in the catalogue gives a specific, clear error.

Real Great Expectations validation with the shipped, reviewed suites, on real data (the
penguins CSV and the digits PNGs) with one thing broken at a time.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.config import ConfigError, config_from_dict
from pipeline.data import sources
from pipeline.data.expectations import load_suite
from pipeline.data.validation import failure_message, run_suite, table_rows, validate_in_chunks, validation_frame
from tests.conftest import ROOT, default_params, merged

PENGUINS_SUITE = load_suite(ROOT / "expectations" / "penguins.yaml")
DIGITS_SUITE = load_suite(ROOT / "expectations" / "digits.yaml")


def table_description() -> dict:
    return {"kind": "table", "format": "csv", "label": "species", "task": "classification"}


def validate_csv(path: Path, extra_columns: str = "error") -> dict:
    frame = validation_frame(table_description(), path)
    return run_suite(frame, PENGUINS_SUITE, extra_columns, max_examples=3)


def message(summary: dict) -> str:
    return failure_message(summary, Path("reports/validate/summary.json"), Path("reports/validate/data_docs"))


@pytest.fixture(scope="module")
def penguins_table(tmp_path_factory) -> pd.DataFrame:
    path = sources.write_penguins_csv(tmp_path_factory.mktemp("penguins") / "penguins.csv")
    return pd.read_csv(path)


@pytest.fixture
def write_csv(tmp_path):
    def write(table: pd.DataFrame) -> Path:
        path = tmp_path / "data.csv"
        table.to_csv(path, index=False)
        return path

    return write


def failed(summary: dict, expectation: str, column=None) -> dict:
    matches = [
        check
        for check in summary["failures"]
        if check["expectation"] == expectation and (column is None or check["column"] == column)
    ]
    assert matches, f"expected {expectation} on {column} to fail; failures: {message(summary)}"
    return matches[0]


def test_the_built_in_penguins_pass(penguins_table, write_csv):
    summary = validate_csv(write_csv(penguins_table))
    assert summary["success"] and summary["errors"] == 0, message(summary)
    assert summary["rows"] == 344 and summary["expectations"] == len(PENGUINS_SUITE.expectations)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        (b"species,island,bill_length_mm\n", "no data rows (only a header?)"),
        (b"species,island,bill_length_mm\nAdelie,Dream,39.1\nAdelie,Dre", "line 3 has 2 of the header's 3 fields"),
        (b"species,island\nAdelie,Dr\xe9am\n", "not UTF-8 text"),
    ],
    ids=["empty file", "header only", "truncated", "not utf-8"],
)
def test_unreadable_files_are_named_with_the_fix(tmp_path, content, expected):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(sources.DataError) as raised:
        validation_frame(table_description(), path)
    assert expected in str(raised.value) and str(path) in str(raised.value)


def test_truncated_file_is_called_truncated(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b,c\n1,2,3\n4,5")
    with pytest.raises(sources.DataError, match="looks truncated"):
        validation_frame(table_description(), path)


def test_missing_required_column(penguins_table, write_csv):
    summary = validate_csv(write_csv(penguins_table.drop(columns=["bill_depth_mm"])))
    assert not summary["success"]
    failed(summary, "expect_column_to_exist", "bill_depth_mm")
    assert failed(summary, "expect_table_columns_to_match_set")["mismatched"] == {"missing": ["bill_depth_mm"]}


@pytest.mark.parametrize(
    ("policy", "success", "failures"), [("error", False, 1), ("warning", True, 1), ("ignore", True, 0)]
)
def test_extra_column_follows_the_configured_policy(penguins_table, write_csv, policy, success, failures):
    summary = validate_csv(write_csv(penguins_table.assign(tag_id=range(344))), extra_columns=policy)
    assert summary["success"] is success
    assert len(summary["failures"]) == failures
    if failures:
        check = failed(summary, "expect_table_columns_to_match_set")
        assert check["severity"] == policy and check["mismatched"] == {"unexpected": ["tag_id"]}


def test_numeric_column_holding_strings_shows_the_offending_values(penguins_table, write_csv):
    table = penguins_table.copy()
    table["body_mass_g"] = table["body_mass_g"].astype(object)
    table.loc[4, "body_mass_g"] = "heavy"
    summary = validate_csv(write_csv(table))
    check = failed(summary, "expect_column_values_to_be_in_type_list", "body_mass_g")
    assert check["examples"] == ["'heavy' at line 6"]
    assert "[ERROR] expect_column_values_to_be_in_type_list body_mass_g" in message(summary)


def test_values_out_of_range_name_the_rows(penguins_table, write_csv):
    table = penguins_table.copy()
    table.loc[[10, 20], "flipper_length_mm"] = [1500.0, -3.0]
    summary = validate_csv(write_csv(table))
    check = failed(summary, "expect_column_values_to_be_between", "flipper_length_mm")
    assert check["unexpected_count"] == 2
    assert check["examples"] == ["1500.0 at line 12", "-3.0 at line 22"]


def test_nan_and_inf_above_the_allowed_fraction(penguins_table, write_csv):
    table = penguins_table.copy()
    table.loc[:49, "bill_length_mm"] = np.nan
    table.loc[100, "bill_depth_mm"] = np.inf
    summary = validate_csv(write_csv(table))
    nulls = failed(summary, "expect_column_values_to_not_be_null", "bill_length_mm")
    assert nulls["unexpected_count"] == 51  # 50 set here + 1 missing in the real data
    assert failed(summary, "expect_column_values_to_be_between", "bill_depth_mm")["examples"] == ["inf at line 102"]


def test_unknown_label(penguins_table, write_csv):
    table = penguins_table.copy()
    table.loc[0, "species"] = "Emperor"
    summary = validate_csv(write_csv(table))
    assert failed(summary, "expect_column_values_to_be_in_set", "species")["examples"] == ["'Emperor' at line 2"]


def test_class_with_no_examples(penguins_table, write_csv):
    summary = validate_csv(write_csv(penguins_table[penguins_table["species"] != "Chinstrap"]))
    check = failed(summary, "expect_column_distinct_values_to_contain_set", "species")
    assert "every class has examples" in message(summary) and check["severity"] == "error"


def test_duplicate_rows_are_a_warning(penguins_table, write_csv):
    summary = validate_csv(write_csv(pd.concat([penguins_table, penguins_table.iloc[[5]]])))
    assert summary["success"] and summary["warnings"] == 1
    assert failed(summary, "expect_compound_columns_to_be_unique")["unexpected_count"] == 2


def test_a_dataset_path_that_does_not_exist():
    with pytest.raises(ConfigError, match="data.path = 'no/such/folder' is not valid; expected an existing folder"):
        config_from_dict(merged(default_params(), {"data": {"source": "image_dir", "path": "no/such/folder"}}))


# ---- images -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    return sources.write_digits_images(tmp_path_factory.mktemp("digits") / "images")


@pytest.fixture
def image_folder(digits_folder, tmp_path) -> Path:
    return Path(shutil.copytree(digits_folder, tmp_path / "images"))


def validate_images(root: Path) -> dict:
    listing, _ = sources.scan_image_dir(root)
    frame = validation_frame({"kind": "image"}, _write_manifest(listing, root.parent))
    return run_suite(frame, DIGITS_SUITE, "error", max_examples=3)


def _write_manifest(listing: pd.DataFrame, folder: Path) -> Path:
    path = folder / "manifest.parquet"
    listing.to_parquet(path, index=False)
    return path


def test_the_built_in_digits_pass(image_folder):
    summary = validate_images(image_folder)
    assert summary["success"] and summary["warnings"] == 0, message(summary)


def test_zero_byte_image(image_folder):
    (image_folder / "3" / "empty.png").write_bytes(b"")
    summary = validate_images(image_folder)
    assert failed(summary, "expect_column_values_to_be_between", "file_size")["examples"] == [
        f"0 at file {image_folder / '3' / 'empty.png'}"
    ]
    assert "zero-byte files" in message(summary)


def test_corrupt_png(image_folder):
    original = image_folder / "4" / "0004.png"
    original.write_bytes(original.read_bytes()[:40])
    summary = validate_images(image_folder)
    check = failed(summary, "expect_column_values_to_be_in_set", "decodable")
    assert check["unexpected_count"] == 1 and str(original) in check["examples"][0]


@pytest.mark.parametrize(("size", "mode", "column"), [((16, 16), "L", "width"), ((8, 8), "RGB", "channels")])
def test_image_of_the_wrong_size_or_channel_count(image_folder, size, mode, column):
    Image.new(mode, size).save(image_folder / "7" / "odd.png")
    summary = validate_images(image_folder)
    assert (
        str(image_folder / "7" / "odd.png")
        in failed(summary, "expect_column_values_to_be_" + ("between" if column == "width" else "in_set"), column)[
            "examples"
        ][0]
    )


def test_non_image_file_in_an_image_folder(image_folder):
    (image_folder / "1" / "notes.txt").write_text("not an image")
    summary = validate_images(image_folder)
    assert failed(summary, "expect_column_values_to_be_in_set", "extension")["examples"][0].startswith("'.txt' at file")
    failed(summary, "expect_column_values_to_be_in_set", "decodable")


def test_duplicate_files_are_reported(image_folder):
    shutil.copy(image_folder / "2" / "0002.png", image_folder / "2" / "copy.png")
    summary = validate_images(image_folder)
    assert summary["success"]
    assert failed(summary, "expect_column_values_to_be_unique", "content_hash")["severity"] == "warning"


def test_empty_and_unknown_classes(image_folder):
    shutil.rmtree(image_folder / "9")
    (image_folder / "9").mkdir()
    shutil.copytree(image_folder / "8", image_folder / "eight")
    summary = validate_images(image_folder)
    assert failed(summary, "expect_column_distinct_values_to_contain_set", "label")
    assert "'eight' at file" in failed(summary, "expect_column_values_to_be_in_set", "label")["examples"][0]


# ---- large tables: validated chunk by chunk -------------------------------------------------------


def validate_csv_in_chunks(path: Path, chunk_rows: int = 50, validated: Path | None = None) -> dict:
    description = {**table_description(), "format": "csv"}
    summary, _ = validate_in_chunks(path, description, PENGUINS_SUITE, "error", 3, chunk_rows, None, validated)
    return summary


def test_chunked_validation_passes_good_data_and_writes_it(penguins_table, write_csv, tmp_path):
    validated = tmp_path / "table.parquet"
    summary = validate_csv_in_chunks(write_csv(penguins_table), validated=validated)
    assert summary["success"] and summary["chunks"] == 7 and summary["rows"] == 344, message(summary)
    assert summary["expectations"] == len(PENGUINS_SUITE.expectations)
    pd.testing.assert_frame_equal(pd.read_parquet(validated), penguins_table, check_dtype=False)


def test_chunked_validation_finds_what_whole_validation_finds(penguins_table, write_csv):
    table = penguins_table.copy()
    table.loc[[10, 320], "flipper_length_mm"] = [1500.0, -3.0]
    table.loc[200, "island"] = "Atlantis"
    table = pd.concat([table, table.iloc[[5]]])  # a duplicate row in another chunk than its original
    path = write_csv(table)
    whole, chunked = validate_csv(path), validate_csv_in_chunks(path)
    summarise = lambda summary: sorted(  # noqa: E731
        (check["expectation"], str(check["column"]), check.get("unexpected_count")) for check in summary["failures"]
    )
    assert summarise(chunked) == summarise(whole)
    check = failed(chunked, "expect_column_values_to_be_between", "flipper_length_mm")
    assert check["examples"] == ["1500.0 at line 12", "-3.0 at line 322"]
    assert failed(chunked, "expect_compound_columns_to_be_unique")["severity"] == "warning"


def test_chunked_validation_sees_a_duplicate_value_and_a_distribution_across_chunks(penguins_table, write_csv):
    """A user's suite with a unique column and a distribution check on a feature: each chunk alone saw
    no duplicate (rows 3 and 300 are 6 chunks apart), and the feature was missing from the narrow frame."""
    table = penguins_table.copy()
    table["bill_length_mm"] = 40 + np.arange(len(table)) * 0.01
    table.loc[300, "bill_length_mm"] = table.loc[3, "bill_length_mm"]
    kl = {"expectation": "expect_column_kl_divergence_to_be_less_than", "column": "island", "severity": "error"}
    kl.update({key: value for key, value in PENGUINS_SUITE.find(kl["expectation"])[0].items() if key not in kl})
    kl["partition_object"] = {"values": ["Biscoe", "Dream", "Torgersen"], "weights": [0.49, 0.36, 0.15]}
    suite = dataclasses.replace(
        PENGUINS_SUITE,
        expectations=[
            *PENGUINS_SUITE.expectations,
            {"expectation": "expect_column_values_to_be_unique", "column": "bill_length_mm", "severity": "error"},
            kl,
        ],
    )
    path = write_csv(table)
    whole = run_suite(validation_frame(table_description(), path), suite, "error", max_examples=3)
    chunked, _ = validate_in_chunks(path, table_description(), suite, "error", 3, 50, None)
    summarise = lambda summary: sorted(  # noqa: E731
        (check["expectation"], str(check["column"]), check.get("unexpected_count")) for check in summary["failures"]
    )
    assert summarise(chunked) == summarise(whole) == [("expect_column_values_to_be_unique", "bill_length_mm", 2)]
    assert chunked["expectations"] == whole["expectations"] == len(suite.expectations)


def test_chunked_null_fractions_are_judged_on_the_whole_table(penguins_table, write_csv):
    table = penguins_table.copy()
    table.loc[0:9, "bill_length_mm"] = np.nan  # 10 of the first 50 rows: 20 % of one chunk, 3.5 % overall
    summary = validate_csv_in_chunks(write_csv(table))
    assert summary["success"], message(summary)
    table.loc[0:29, "bill_length_mm"] = np.nan  # 30 + 2 of 344 rows: above the 5.6 % allowed
    summary = validate_csv_in_chunks(write_csv(table))
    assert failed(summary, "expect_column_values_to_not_be_null", "bill_length_mm")["unexpected_count"] == 31


def test_the_stage_switches_to_chunks_for_tables_longer_than_chunk_rows(penguins_table, tmp_path):
    path = tmp_path / "data.csv"
    penguins_table.to_csv(path, index=False)
    assert table_rows(path, "csv") == 344
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert table_rows(path, "csv") == 344
