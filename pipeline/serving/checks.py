"""What the export stage checks and adds before an export is published.

- TFLite for edge and mobile: float and dynamic-range quantised, each scored on the test split;
- TF Serving warm-up records (`assets.extra/tf_serving_warmup_requests`) built from test examples;
- infra validation, as TFX's InfraValidator does: the real HTTP API is started on the staged
  SavedModel, answers warm-up requests, and must agree with the in-process predictions.
"""

import contextlib
import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pipeline.core.errors import StageError
from pipeline.core.metrics import predicted_classes
from pipeline.core.processes import free_port, started_process, wait_until_healthy
from pipeline.ml.modalities import model_modality

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def tflite_supported(spec) -> tuple[bool, str]:
    """Whether the model converts to TFLite builtin ops, and why not (`ModelModality.tflite_support`)."""
    return model_modality(spec.kind).tflite_support(spec)


def convert_tflite(saved_model_dir: Path, quantize: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range: int8 weights, float activations
    return converter.convert()


def tflite_predict(model_bytes: bytes, batches: list) -> np.ndarray:
    """Runs a TFLite model's `serving_default` signature over input batches (dicts of arrays), each input in the
    dtype the model declares (numbers, or strings as bytes)."""
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_content=model_bytes).get_signature_runner("serving_default")
    dtypes = {name: details["dtype"] for name, details in runner.get_input_details().items()}
    outputs = []
    for batch in batches:
        (result,) = runner(**{name: as_tflite_input(values, dtypes[name]) for name, values in batch.items()}).values()
        outputs.append(result)
    return np.concatenate(outputs)


def as_tflite_input(values, dtype) -> np.ndarray:
    """`values` in a TFLite input's dtype; strings as UTF-8 bytes (numpy would encode them as ASCII)."""
    values = np.asarray(values)
    if np.issubdtype(dtype, np.bytes_) and (values.dtype == object or np.issubdtype(values.dtype, np.str_)):
        encode = np.vectorize(lambda value: value.encode("utf-8") if isinstance(value, str) else value, otypes=[object])
        values = encode(values)
    return values.astype(dtype)


def accuracy(outputs: np.ndarray, labels: np.ndarray, spec) -> float | None:
    if not spec.task_type.has_classes:
        return None
    labels = labels.reshape(-1).astype(int)
    predicted = predicted_classes(outputs)
    return float((predicted == labels).mean())


OUTSIDE_FILE = "text_vectorization.json"
"""Beside the TFLite files of a text model: how an app computes the inputs (`ModelModality.edge_model`)."""


def export_tflite(
    saved_model_dir: Path, output_dir: Path, spec, batches: list, labels: np.ndarray, reference: np.ndarray, model
) -> dict:
    """Writes `model.tflite` and `model_quantized.tflite` from the SavedModel, or from the modality's edge model
    (`model` from what an app computes outside it, described in `OUTSIDE_FILE`); returns sizes, accuracies and
    differences from `reference` on the same raw `batches`."""
    import tempfile

    supported, reason = tflite_supported(spec)
    if not supported:
        log.info("TFLite export skipped: %s", reason)
        return {"skipped": reason}
    output_dir.mkdir(parents=True, exist_ok=True)
    modality = model_modality(spec.kind)
    report = {"keras_accuracy": accuracy(reference, labels, spec)}
    with tempfile.TemporaryDirectory() as scratch:
        edge, outside = modality.edge_model(model, spec)
        if edge is not None:
            saved_model_dir = Path(scratch) / "edge"
            edge.export(str(saved_model_dir), verbose=False)
            (output_dir / OUTSIDE_FILE).write_text(json.dumps(outside, ensure_ascii=False))
            report["computed_outside"] = {"file": OUTSIDE_FILE, "inputs": sorted(outside)}
            batches = [modality.edge_inputs(batch, spec, outside) for batch in batches]
        for variant, quantize in (("float", False), ("dynamic_range_quantized", True)):
            model_bytes = convert_tflite(saved_model_dir, quantize)
            name = "model.tflite" if not quantize else "model_quantized.tflite"
            (output_dir / name).write_bytes(model_bytes)
            predictions = tflite_predict(model_bytes, batches)
            report[variant] = {
                "file": name,
                "size_bytes": len(model_bytes),
                "accuracy": accuracy(predictions, labels, spec),
                "max_abs_difference": float(np.max(np.abs(predictions - reference))),
            }
    return report


# ---- TF Serving warm-up records ----------------------------------------------------------------
# PredictionLog { predict_log = 6 { request = 1 { model_spec = 1 { name = 1, signature_name = 3 },
# inputs = 2 (map<string, TensorProto>) } } }, written by hand in protobuf's wire format so that
# the tensorflow-serving-api package (which pins its own TensorFlow) is not needed.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(model_name: str, inputs: dict[str, np.ndarray]) -> bytes:
    import tensorflow as tf

    model_spec = _field(1, model_name.encode()) + _field(3, b"serving_default")
    request = _field(1, model_spec)
    for name, values in inputs.items():
        tensor = tf.make_tensor_proto(values).SerializeToString()
        request += _field(2, _field(1, name.encode()) + _field(2, tensor))
    return _field(6, _field(1, request))


def write_warmup_requests(version_dir: Path, model_name: str, batches: list) -> Path:
    import tensorflow as tf

    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches:
            writer.write(prediction_log(model_name, batch))
    return path


# ---- infra validation --------------------------------------------------------------------------


def request_body(batch: dict, spec) -> bytes:
    """A TF Serving `instances` request for one input batch, in raw (column or pixel) form."""
    return json.dumps({"instances": model_modality(spec.kind).request_instances(batch, spec)}).encode()


class InfraValidation:
    """`pipeline serve --model -`, started before the model is written (`infra_validation_server`), and the
    check of its answers once it is (`validate`)."""

    def __init__(self, process: subprocess.Popen, base: str, timeout: float):
        self.process, self.base, self.timeout = process, base, timeout

    def validate(
        self,
        version_dir: Path,
        model_name: str,
        spec,
        batches: list,
        expected: np.ndarray,
        tolerance: float,
        meanwhile: Callable[[], object] | None = None,
    ) -> dict:
        """Names the staged SavedModel to the server and checks its answers to real test examples; `meanwhile()`
        runs while the server loads the model (`seconds_to_ready` then counts it too).

        Raises:
            StageError: if the server does not come up, refuses a request, or disagrees with the model.
        """
        sent = time.monotonic()
        with contextlib.suppress(OSError):  # it exited: `wait_until_healthy` says why
            self.process.stdin.write(f"{Path(version_dir).resolve()}\n")
            self.process.stdin.close()
        if meanwhile is not None:
            meanwhile()  # its own errors are not infra validation's: they pass through unchanged
        try:
            wait_until_healthy(self.process, self.base, self.timeout)
        except StageError as error:
            raise StageError(f"infra validation: {error}") from None
        ready_seconds = time.monotonic() - sent
        served = np.concatenate([self._answer(batch, model_name, spec) for batch in batches])
        difference = float(np.max(np.abs(served - expected)))
        if not difference <= tolerance:
            raise StageError(
                f"infra validation: the served answers differ from the model's by {difference:.3g} (> {tolerance:g});"
                " the export was not published."
            )
        return {
            "servable": True,
            "requests": len(batches),
            "examples": int(len(served)),
            "max_abs_difference": difference,
            "seconds_to_ready": round(ready_seconds, 1),
        }

    def _answer(self, batch: dict, model_name: str, spec) -> np.ndarray:
        request = urllib.request.Request(
            f"{self.base}/v1/models/{model_name}:predict",
            data=request_body(batch, spec),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return np.asarray(json.loads(response.read())["predictions"], dtype=np.float64)
        except urllib.error.HTTPError as error:
            raise StageError(f"infra validation: the server refused a test example: {error.read()[:500]!r}") from None


@contextlib.contextmanager
def infra_validation_server(timeout: float = 180.0) -> Iterator[InfraValidation]:
    """Starts the real HTTP API, `pipeline serve --model -`, before the model exists: it imports TensorFlow
    (seconds) while the stage exports the model, then waits on its standard input for the SavedModel to
    serve. Yields what names that model and checks the answers (`InfraValidation.validate`), as TFX's
    InfraValidator does; the server is stopped on leaving the block."""
    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--model", "-", "--port", str(port)]
    with started_process(command, stdin=subprocess.PIPE) as process:
        yield InfraValidation(process, f"http://127.0.0.1:{port}", timeout)
