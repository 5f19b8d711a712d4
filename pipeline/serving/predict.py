"""`pipeline predict`: predictions of an exported model for a CSV file or a folder of images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import StageError
from pipeline.core.metrics import class_probabilities, predicted_classes
from pipeline.data.sources import IMAGE_EXTENSIONS, DataError, load_table
from pipeline.serving.loading import load_served_model, resolve_model_dir


def read_inputs(input_path: Path, spec: dict) -> tuple[list[str], object]:
    """(example ids, model inputs) from a CSV (tables) or an image folder / single image (images)."""
    input_path = Path(input_path)
    if spec["kind"] == "image":
        from pipeline.data.preparation import load_images

        image = spec["image"]
        if input_path.is_dir():
            files = sorted(str(file) for file in input_path.rglob("*") if file.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(f"{input_path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder.")
        else:
            files = [str(input_path)]
        color = "grayscale" if image["channels"] == 1 else "rgb"
        pixels = load_images(files, [image["height"], image["width"]], color).astype(np.float32)
        return files, pixels
    table = load_table(input_path, "parquet" if input_path.suffix == ".parquet" else "csv")
    inputs = {}
    for feature in spec["features"]:
        if feature["column"] not in table.columns:
            raise DataError(f"{input_path}: missing column {feature['column']!r}, which the model needs.")
        values = table[feature["column"]]
        if feature["type"] == "numeric":
            inputs[feature["name"]] = (
                values.astype("float64").to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
            )
        else:
            inputs[feature["name"]] = np.array(
                [[("" if pd.isna(value) else str(value))] for value in values], dtype=object
            )
    return [str(index) for index in range(len(table))], inputs


def predict(model_path: Path, input_path: Path, prepared_dir: Path = Path("data/prepared")) -> pd.DataFrame:
    """One row per example: the prediction (class name and probability, or the value)."""
    model_dir = resolve_model_dir(model_path)
    if model_dir.suffix == ".keras":
        from pipeline.ml.features import load_spec
        from pipeline.ml.models import load_trained_model

        spec = load_spec(prepared_dir)
        keras_model = load_trained_model(model_dir)

        def run(inputs):
            return np.asarray(keras_model(inputs, training=False))
    else:
        served = load_served_model(model_dir)
        spec = served.spec

        def run(inputs):
            return served.predict(inputs if isinstance(inputs, dict) else {"image": inputs})

    ids, inputs = read_inputs(input_path, spec)
    outputs = run(inputs)
    if spec["task"] == "regression":
        return pd.DataFrame({"example": ids, "prediction": outputs.reshape(-1)})
    classes, probabilities = spec["classes"], class_probabilities(outputs)
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
