"""The SavedModel contract: TF Serving's layout, the `serving_default` signature, the spec asset that
clients read, and the parity check of a reloaded SavedModel against the Keras model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core import spec as data_spec
from pipeline.core.errors import StageError
from pipeline.core.spec import DataSpec

SPEC_ASSET = Path("assets.extra") / data_spec.SERVING_SPEC_FILE


SIGNATURE = "serving_default"


def serving_spec(spec: DataSpec) -> DataSpec:
    """What a client needs to build requests and read answers (no file lists)."""
    return spec.for_serving()


def export_saved_model(model, spec: DataSpec, version_dir: Path) -> Path:
    """Writes `model` as a TF Serving SavedModel into `version_dir` (which must not exist)."""
    model.export(str(version_dir), format="tf_saved_model", verbose=False)
    data_spec.write(serving_spec(spec), version_dir / SPEC_ASSET)
    return version_dir


def saved_model_predictions(version_dir: Path, batches: list) -> np.ndarray:
    """Predictions of the reloaded SavedModel's `serving_default` signature for input batches."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]
    outputs = []
    for inputs in batches:
        (result,) = signature(**inputs).values()
        outputs.append(result.numpy())
    return np.concatenate(outputs)


def check_parity(model, version_dir: Path, dataset, tolerance: float) -> float:
    """Max |SavedModel - Keras| over `dataset` ((inputs, labels) batches); raises StageError beyond `tolerance`."""
    batches = [inputs for inputs, _ in dataset]
    expected = np.concatenate([np.asarray(model(inputs, training=False)) for inputs in batches])
    actual = saved_model_predictions(version_dir, batches)
    difference = float(np.max(np.abs(expected - actual))) if expected.size else 0.0
    if not difference <= tolerance:
        raise StageError(
            f"the exported SavedModel disagrees with the Keras model by {difference:.3g} (> export.tolerance"
            f" {tolerance:g}) on the test split; the export was not published."
        )
    return difference


def signature_description(version_dir: Path) -> dict:
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]
    _, inputs = signature.structured_input_signature
    return {
        "inputs": {name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()} for name, spec in inputs.items()},
        "outputs": {
            name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
            for name, spec in signature.structured_outputs.items()
        },
    }


# The disagreement to expect between two runs of the same model in a compute dtype (a few units in the
# last place of its mantissa, on probabilities in [0, 1]): float16 keeps 11 bits, bfloat16 8.
PARITY_TOLERANCE_BY_DTYPE = {"float16": 1e-2, "bfloat16": 5e-2}


def compute_dtype(model) -> str:
    """The lowest precision any layer of `model` computes in (float32 unless trained with mixed precision)."""
    dtypes = {getattr(layer.dtype_policy, "compute_dtype", "float32") for layer in model.layers}
    for dtype in ("bfloat16", "float16"):
        if dtype in dtypes:
            return dtype
    return "float32"


def parity_tolerance(model, configured: float) -> float:
    """`export.tolerance`, widened to what the model's compute dtype can promise (mixed precision)."""
    return max(configured, PARITY_TOLERANCE_BY_DTYPE.get(compute_dtype(model), 0.0))
