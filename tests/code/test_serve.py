"""Request validation against the schema saved with the model (no server, no TensorFlow)."""

import numpy as np
import pytest

from pipeline.serving.app import RequestError, validate_request
from tests.specs import make_spec  # noqa: E402

TABLE_SPEC = make_spec(
    {
        "kind": "table",
        "task": "classification",
        "classes": ["Adelie", "Gentoo"],
        "features": [
            {"column": "bill_length_mm", "name": "bill_length_mm", "type": "numeric"},
            {"column": "island", "name": "island", "type": "categorical"},
            {"column": "sex", "name": "sex", "type": "categorical"},
        ],
        "schema": {
            "kind": "table",
            "columns": {
                "bill_length_mm": {"type": "numeric", "range": [29.3, 62.4], "max_null_fraction": 0.05},
                "island": {"type": "string", "categories": ["Biscoe", "Dream"], "max_null_fraction": 0.0},
                "sex": {"type": "string", "categories": ["female", "male"], "max_null_fraction": 0.08},
            },
        },
    }
)
IMAGE_SPEC = make_spec({"kind": "image", "image": {"height": 2, "width": 2, "channels": 1}})
GOOD_ROW = {"bill_length_mm": 39.1, "island": "Dream", "sex": "male"}


def test_rows_and_columns_give_the_same_model_inputs():
    rows = validate_request({"instances": [GOOD_ROW, {**GOOD_ROW, "sex": None}]}, TABLE_SPEC, 10)
    columns = validate_request(
        {"inputs": {"bill_length_mm": [39.1, 39.1], "island": ["Dream", "Dream"], "sex": ["male", None]}},
        TABLE_SPEC,
        10,
    )
    for name in rows:
        assert rows[name].shape == (2, 1)
        np.testing.assert_array_equal(rows[name], columns[name])
    assert rows["sex"][1, 0] == "" and rows["bill_length_mm"].dtype == np.float32


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"instances": [{**GOOD_ROW, "bill_length_mm": 500}]},
            "instances[0].bill_length_mm: 500 is outside the trained range [29.3, 62.4]",
        ),
        (
            {"instances": [{**GOOD_ROW, "island": "Atlantis"}]},
            "instances[0].island: 'Atlantis' is not a known category",
        ),
        ({"instances": [{**GOOD_ROW, "island": None}]}, "instances[0].island: expected a string, got null"),
        (
            {"instances": [{"bill_length_mm": 39.1, "sex": "male"}]},
            "instances[0].island: missing; this column is required",
        ),
        (
            {"instances": [{**GOOD_ROW, "bill_length_mm": "long"}]},
            'instances[0].bill_length_mm: expected a number, got "long"',
        ),
        ({"instances": [{**GOOD_ROW, "flipper": 3}]}, "instances[0]: unknown column 'flipper'"),
        ({"instances": [[1, 2, 3]]}, "instances[0]: expected an object of column values, got list"),
        ({"instances": []}, "the request holds no examples"),
        ({"examples": []}, 'expected a JSON object with either "instances"'),
        (
            {"inputs": {"island": ["Dream"], "sex": ["male", "female"]}},
            "every column must be a list, all of the same length",
        ),
    ],
)
def test_bad_table_requests_name_the_field(body, message):
    with pytest.raises(RequestError) as raised:
        validate_request(body, TABLE_SPEC, 10)
    assert message in str(raised.value) and raised.value.status == 400


def test_images_accept_height_width_without_the_channel_axis():
    inputs = validate_request({"instances": [[[0, 255], [10, 20]]]}, IMAGE_SPEC, 10)
    assert inputs["image"].shape == (1, 2, 2, 1)


@pytest.mark.parametrize(
    ("instance", "message"),
    [
        ([[0, 1, 2], [3, 4, 5]], "expected shape [2, 2, 1]"),
        ([[0, 1], [2, 300]], "raw values in [0, 255]"),
        ([[0, 1], [2, "x"]], "expected nested lists of numbers"),
        ({"pixels": [[0, 1], [2, 3]]}, 'expected {"image": pixels}'),
    ],
)
def test_bad_images_name_the_problem(instance, message):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{")):
        validate_request({"instances": [instance]}, IMAGE_SPEC, 10)


def test_an_oversized_batch_is_413():
    with pytest.raises(RequestError) as raised:
        validate_request({"instances": [[[0, 0], [0, 0]]] * 11}, IMAGE_SPEC, 10)
    assert raised.value.status == 413 and "exceeds the limit of 10" in str(raised.value)
