"""`pipeline predict`: predictions of an exported model for a CSV file or a folder of images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import StageError
from pipeline.core.metrics import class_probabilities, predicted_classes
from pipeline.data.sources import DataError
from pipeline.serving.loading import load_served_model, resolve_model_dir


def read_inputs(input_path: Path, spec) -> tuple[list[str], dict[str, np.ndarray]]:
    """(example ids, model inputs) from new data in the training data's form (`DataModality.read_examples`):
    a CSV or Parquet file, an image folder or a single image."""
    from pipeline.data.modalities import data_modality
    from pipeline.ml.modalities import model_modality

    ids, features = data_modality(spec.kind).read_requests(Path(input_path), spec)
    return ids, model_modality(spec.kind).model_batch(features, 0, len(ids))


def predict(model_path: Path, input_path: Path, prepared_dir: Path = Path("data/prepared")) -> pd.DataFrame:
    """One row per example: the prediction (class name and probability, or the value)."""
    model_dir = resolve_model_dir(model_path)
    if model_dir.suffix == ".keras":
        from pipeline.core.spec import load as load_spec
        from pipeline.ml.models import load_trained_model

        spec = load_spec(prepared_dir)
        keras_model = load_trained_model(model_dir)

        def run(inputs):
            return np.asarray(keras_model(inputs, training=False))
    else:
        served = load_served_model(model_dir)
        spec = served.spec

        def run(inputs):
            return served.predict(inputs)

    ids, inputs = read_inputs(input_path, spec)
    outputs = run(inputs)
    if not spec.task_type.has_classes:
        values = np.asarray(outputs).reshape(len(ids), -1)
        if values.shape[1] == 1:
            return pd.DataFrame({"example": ids, "prediction": values[:, 0]})
        steps = {f"prediction_{step + 1}": values[:, step] for step in range(values.shape[1])}  # a forecast's steps
        return pd.DataFrame({"example": ids, **steps})
    classes, probabilities = spec.classes, class_probabilities(outputs)
    return pd.DataFrame(
        {
            "example": ids,
            "prediction": [classes[index] for index in predicted_classes(outputs)],
            "probability": probabilities.max(axis=1).round(6),
        }
    )


def main(model: str, input_path: str, output: str | None = None) -> int:
    try:
        predictions = predict(Path(model), Path(input_path))
    except (DataError, StageError) as error:
        print(f"pipeline predict: error: {error}", file=sys.stderr)
        return 2
    if output:
        predictions.to_csv(output, index=False)
        print(f"wrote {len(predictions)} predictions to {output}")
    else:
        predictions.to_csv(sys.stdout, index=False)
    return 0
