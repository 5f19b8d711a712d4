"""The HTTP API under generated requests: whatever the body, a 4xx with a message or a 200, never a 500.

The app is the real FastAPI application; the model behind it is a plain function of the checked inputs
(the model itself is exercised by tests/e2e/test_serve.py against a real export)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.serving.app import MAX_JSON_DEPTH, create_app
from pipeline.serving.loading import ServedModel
from tests.code.test_serve import GOOD_ROW, TABLE_SPEC
from tests.specs import make_spec  # noqa: E402

testclient = pytest.importorskip("fastapi.testclient")

IMAGE_SPEC = make_spec(
    {
        "kind": "image",
        "task": "classification",
        "classes": ["a", "b"],
        "image": {"height": 2, "width": 2, "channels": 1},
    }
)
URL = {"table": "/v1/models/penguins:predict", "image": "/v1/models/digits:predict"}


class Model:
    """Stands in for the SavedModel: one probability row per example; records the thread it ran on."""

    def __init__(self):
        self.threads = set()

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        (first,) = [len(value) for value in inputs.values()][:1]
        return np.full((first, 2), 0.5, dtype=np.float32)


def client(kind: str, model: Model | None = None):
    spec = TABLE_SPEC if kind == "table" else IMAGE_SPEC
    served = ServedModel(
        name="penguins" if kind == "table" else "digits",
        version=1,
        source="test",
        spec=spec,
        predict=model or Model(),
        input_specs={},
        output_specs={"output_0": ("float32", [None, 2])},
    )
    return testclient.TestClient(
        create_app(served, max_batch_size=8, max_body_bytes=2**20), raise_server_exceptions=False
    )


TABLE_CLIENT = client("table")
IMAGE_CLIENT = client("image")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
rows = st.dictionaries(
    st.sampled_from([*GOOD_ROW, "unknown", ""]),
    st.none()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.integers()
    | st.booleans()
    | st.lists(st.integers(), max_size=2),
    max_size=5,
)
images = st.lists(
    st.lists(st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=2), st.none()), max_size=3), max_size=3),
    max_size=3,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"instances": st.lists(rows, max_size=10)}),
    st.fixed_dictionaries({"instances": st.lists(images, max_size=10)}),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(st.sampled_from(list(GOOD_ROW)), st.lists(json_values, max_size=3), max_size=3)}
    ),
    st.fixed_dictionaries({"inputs": json_values}),
)


def assert_answered(response) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code == 200 or "error" in response.json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, kind=st.sampled_from(["table", "image"]))
def test_generated_json_bodies_never_get_a_500(body, kind):
    app = TABLE_CLIENT if kind == "table" else IMAGE_CLIENT
    assert_answered(app.post(URL[kind], content=json.dumps(body)))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_generated_raw_bytes_never_get_a_500(raw):
    assert_answered(TABLE_CLIENT.post(URL["table"], content=raw))


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 1_000, 5_000, 100_000])
@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deeply_nested_bodies_get_a_400_naming_the_limit(levels, opening):
    closing = "]" if opening == "[" else "}"
    body = '{"instances": ' + opening * levels + "1" + closing * levels + "}"
    response = TABLE_CLIENT.post(URL["table"], content=body)
    assert response.status_code == 400
    assert f"the limit is {MAX_JSON_DEPTH}" in response.json()["error"]


def test_brackets_inside_strings_do_not_count_as_nesting():
    body = {"instances": [{**GOOD_ROW, "island": "[" * 1000}]}
    response = TABLE_CLIENT.post(URL["table"], content=json.dumps(body))
    assert response.status_code == 400 and "island" in response.json()["error"]  # refused for its value, not depth


def test_a_valid_request_is_answered_and_the_model_runs_off_the_event_loop():
    model = Model()
    app = client("table", model)
    response = app.post(URL["table"], content=json.dumps({"instances": [GOOD_ROW, GOOD_ROW]}))
    assert response.status_code == 200 and len(response.json()["predictions"]) == 2
    assert model.threads and all(name != threading.main_thread().name for name in model.threads)
    assert not any("event" in name.lower() for name in model.threads)


def test_each_request_format_is_answered_in_tf_servings_key_for_it():
    """Row format -> `predictions`, columnar format -> `outputs` (TF Serving's REST API)."""
    app = client("table", Model())
    rows = app.post(URL["table"], content=json.dumps({"instances": [GOOD_ROW]})).json()
    columns = app.post(URL["table"], content=json.dumps({"inputs": {key: [value] for key, value in GOOD_ROW.items()}}))
    assert columns.status_code == 200 and columns.json() == {"outputs": rows["predictions"]}
