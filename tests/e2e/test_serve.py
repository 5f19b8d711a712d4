"""The real HTTP server on a free localhost port, over a model exported by the real pipeline."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from pipeline.core.processes import free_port
from tests.conftest import ROOT, serving, stage, write_params

pytestmark = pytest.mark.e2e


def call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def declared_oversize_status(base: str) -> int:
    """Sends only the headers of a 20 MB request: the server must refuse it without reading the body."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n"
        )
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tiny digits model exported by the pipeline's stages, served by `pipeline serve`."""
    directory = tmp_path_factory.mktemp("serve")
    import shutil

    shutil.copytree(ROOT / "expectations", directory / "expectations")
    (directory / "data" / "user").mkdir(parents=True)
    write_params(directory)
    for name in ("ingest", "validate", "preprocess", "tune", "train", "export"):
        stage(name, directory)
    with serving("models/serving", directory) as base:
        yield base, directory


def test_test_examples_get_the_models_own_predictions(server):
    base, directory = server
    import tensorflow as tf

    from pipeline.core.spec import load as load_spec
    from pipeline.ml.features import make_dataset

    spec = load_spec(directory / "data/prepared")
    inputs, _ = next(iter(make_dataset(directory / "data/prepared", spec, "test", 32)))
    images = inputs["image"]
    (version_dir,) = (directory / "models/serving/digits").iterdir()
    expected = tf.saved_model.load(str(version_dir)).signatures["serving_default"](image=images)["output_0"].numpy()
    status, answer = call(
        f"{base}/v1/models/digits:predict", json.dumps({"instances": images.numpy().tolist()}).encode()
    )
    assert status == 200
    np.testing.assert_allclose(np.asarray(answer["predictions"]), expected, atol=1e-6)
    status, columnar = call(
        f"{base}/v1/models/digits:predict", json.dumps({"inputs": images.numpy().tolist()}).encode()
    )
    assert status == 200 and columnar["outputs"] == answer["predictions"]  # TF Serving's key for the columnar form


def test_status_and_metadata_answer_like_tf_serving(server):
    base, _ = server
    status, answer = call(f"{base}/v1/models/digits")
    assert status == 200 and answer["model_version_status"][0]["state"] == "AVAILABLE"
    status, answer = call(f"{base}/v1/models/digits/metadata")
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image"]["dtype"] == "DT_FLOAT"
    assert [dim["size"] for dim in signature["inputs"]["image"]["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert answer["metadata"]["pipeline_spec"]["schema"]["channels"] == [1]


def test_bad_requests_get_a_4xx_with_a_reason_and_the_server_keeps_serving(server):
    base, _ = server
    good = json.dumps({"instances": [np.full((8, 8, 1), 128.0).tolist()]}).encode()
    nan = json.dumps({"instances": [np.full((8, 8, 1), np.nan).tolist()]}).encode()  # json.dumps writes NaN
    cases = {
        "malformed JSON": (b'{"instances": [', 400, "malformed JSON"),
        "wrong shape": (json.dumps({"instances": [[[1, 2], [3, 4]]]}).encode(), 400, "expected shape [8, 8, 1]"),
        "wrong type": (json.dumps({"instances": [[["a"] * 8] * 8]}).encode(), 400, "expected nested lists of numbers"),
        "NaN": (nan, 400, "finite numbers"),
        "oversized batch": (json.dumps({"instances": [np.zeros((8, 8)).tolist()] * 257}).encode(), 413, "exceeds"),
        "no examples": (json.dumps({"instances": []}).encode(), 400, "no examples"),
        "not an object": (b"[1, 2]", 400, '"instances"'),
    }
    for name, (body, expected_status, reason) in cases.items():
        status, answer = call(f"{base}/v1/models/digits:predict", body)
        assert (status, reason in answer.get("error", "")) == (expected_status, True), (name, answer)
    status, answer = call(f"{base}/v1/models/cats:predict", good)
    assert status == 404 and "unknown model 'cats'" in answer["error"]
    status, answer = call(f"{base}/v1/models/digits:classify", good)
    assert status == 404 and ":predict" in answer["error"]
    assert declared_oversize_status(base) == 413
    status, answer = call(f"{base}/v1/models/digits:predict", good)
    assert status == 200 and len(answer["predictions"][0]) == 10


def test_a_deeply_nested_body_gets_a_400_not_a_500(server):
    base, _ = server
    status, answer = call(f"{base}/v1/models/digits:predict", b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert status == 400 and "nests 5001 levels deep" in answer["error"]


def test_concurrent_mixed_traffic_gets_no_5xx_no_dropped_connection_and_the_same_answers(server):
    """A bounded load: several clients at once, valid and invalid requests interleaved."""
    from concurrent.futures import ThreadPoolExecutor

    base, _ = server
    url = f"{base}/v1/models/digits:predict"
    generator = np.random.default_rng(0)
    valid = json.dumps({"instances": generator.integers(0, 256, (16, 8, 8, 1)).tolist()}).encode()
    invalid = [
        b'{"instances": [',
        b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        json.dumps({"instances": [[[1, 2], [3, 4]]]}).encode(),
        json.dumps({"instances": [np.zeros((8, 8)).tolist()] * 300}).encode(),
        b"\xff\xfe not json",
    ]
    status, expected = call(url, valid)
    assert status == 200
    requests = [valid if index % 2 else invalid[index // 2 % len(invalid)] for index in range(240)]
    with ThreadPoolExecutor(max_workers=8) as clients:
        answers = list(clients.map(lambda body: (body is valid, *call(url, body)), requests))
    assert len(answers) == len(requests)  # call() raises on a refused or dropped connection
    assert all(status < 500 for _, status, _ in answers)
    assert all(answer == expected for is_valid, _, answer in answers if is_valid)
    assert all(400 <= status < 500 for is_valid, status, _ in answers if not is_valid)
    assert call(url, valid) == (200, expected)


def read_fields(data: bytes) -> list[tuple[int, bytes]]:
    """A generic protobuf wire-format reader (length-delimited and varint fields only)."""
    fields, position = [], 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, position = _varint(data, position)
            fields.append((number, data[position : position + length]))
            position += length
        else:
            value, position = _varint(data, position)
            fields.append((number, value))
    return fields


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position, shift = position + 1, shift + 7
        if not byte & 0x80:
            return value, position


def test_the_export_was_infra_validated_and_carries_warmup_requests_and_tflite(server):
    _, directory = server
    import tensorflow as tf

    report = json.loads((directory / "reports/export/export.json").read_text())
    assert report["infra_validation"]["servable"] is True and report["infra_validation"]["examples"] == 32
    assert report["tflite"]["float"]["max_abs_difference"] < 1e-5
    assert report["tflite"]["float"]["accuracy"] == report["tflite"]["keras_accuracy"]
    quantized = report["tflite"]["dynamic_range_quantized"]
    assert quantized["size_bytes"] < report["tflite"]["float"]["size_bytes"]
    assert abs(quantized["accuracy"] - report["tflite"]["keras_accuracy"]) < 0.05
    assert (directory / "models/edge/model_quantized.tflite").stat().st_size == quantized["size_bytes"]

    records = list(tf.data.TFRecordDataset(str(directory / report["warmup_requests"])).as_numpy_iterator())
    assert len(records) == 2
    ((log_field, predict_log),) = read_fields(records[0])
    ((request_field, request),) = read_fields(predict_log)
    assert (log_field, request_field) == (6, 1)  # PredictionLog.predict_log, PredictLog.request
    parts = dict(read_fields(request))
    assert dict(read_fields(parts[1])) == {1: b"digits", 3: b"serving_default"}  # ModelSpec
    entry = dict(read_fields(parts[2]))  # map<string, TensorProto> entry
    assert entry[1] == b"image"
    tensor = tf.make_ndarray(tf.make_tensor_proto(0).FromString(entry[2]))
    assert tensor.shape == (16, 8, 8, 1) and tensor.max() <= 255


def test_infra_validation_names_answers_that_disagree_and_a_folder_that_is_no_model(server, tmp_path):
    """The export's infra validation starts `pipeline serve --model -` before the model exists, then names it:
    wrong answers and a server that cannot load what it was given stop the export, and the server is stopped
    on leaving the block, whether it was named a model or not."""
    _, directory = server
    from pipeline.core.errors import StageError
    from pipeline.core.spec import load as load_spec
    from pipeline.ml.features import make_dataset
    from pipeline.serving.checks import infra_validation_server

    spec = load_spec(directory / "data/prepared")
    batches = [next(iter(make_dataset(directory / "data/prepared", spec, "test", 4)))[0]]
    (version_dir,) = (directory / "models/serving/digits").iterdir()
    with infra_validation_server() as infra:
        with pytest.raises(StageError, match="infra validation: the served answers differ from the model's by"):
            infra.validate(version_dir, "digits", spec, batches, np.zeros((4, 10)), 1e-6)
    with infra_validation_server() as not_a_model:
        with pytest.raises(StageError, match="infra validation: the server exited while starting"):
            not_a_model.validate(tmp_path, "digits", spec, batches, np.zeros((4, 10)), 1e-6)
    with infra_validation_server() as never_named:  # the stage failed before its model was written
        pass
    assert infra.process.returncode is not None and never_named.process.returncode is not None  # stopped
    assert not_a_model.process.returncode == 2  # `pipeline serve` on bad input


def serve_with_nothing_on_standard_input(port: int) -> subprocess.CompletedProcess:
    """`pipeline serve --model -` whose standard input closes before it names a model."""
    command = [sys.executable, "-m", "pipeline", "serve", "--model", "-", "--port", str(port)]
    return subprocess.run(command, input="", capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_serve_told_to_read_its_model_from_standard_input_names_an_empty_one():
    completed = serve_with_nothing_on_standard_input(free_port())
    assert completed.returncode == 2, completed.stderr
    assert "pipeline serve: error: --model -: standard input closed before it named a model folder" in completed.stderr


def test_serve_on_a_port_in_use_says_so_before_its_slow_start():
    """The port is taken first, so a port in use is named at once, and no other process can take it while the
    server imports TensorFlow and loads its model."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        completed = serve_with_nothing_on_standard_input(port)
    assert completed.returncode == 2, completed.stderr
    assert f"pipeline serve: error: cannot listen on 127.0.0.1:{port}: Address already in use" in completed.stderr
