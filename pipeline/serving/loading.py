"""Loading a model to serve: an exported SavedModel folder, or a version from the MLflow registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import spec as data_spec
from pipeline.core.errors import StageError
from pipeline.core.spec import DataSpec
from pipeline.serving.saved_model import SIGNATURE, SPEC_ASSET


def resolve_model_dir(path: Path) -> Path:
    """A SavedModel version folder from a version folder, a model folder or the serving root (latest version)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file() or path.suffix == ".keras":
        return path
    versions = sorted(
        (candidate for candidate in path.rglob("saved_model.pb")),
        key=lambda file: int(file.parent.name) if file.parent.name.isdigit() else -1,
    )
    if not versions:
        raise StageError(f"{path}: no SavedModel (saved_model.pb) or .keras model here; run `dvc repro` first.")
    return versions[-1].parent


@dataclass
class ServedModel:
    """A loaded model and what the API needs to know about it."""

    name: str
    version: int
    source: str
    spec: DataSpec
    predict: Callable[[dict[str, np.ndarray]], np.ndarray]
    input_specs: dict[str, tuple[str, list]]
    output_specs: dict[str, tuple[str, list]]


def load_served_model(model: str | Path) -> ServedModel:
    """Loads a SavedModel (a version folder, a model folder or a serving root: the highest version)
    or a registered model (`models:/NAME@ALIAS` or `models:/NAME/VERSION`) from MLflow."""
    if str(model).startswith("models:/"):
        return _load_registered(str(model))
    import tensorflow as tf

    version_dir = resolve_model_dir(Path(model))
    if version_dir.suffix == ".keras":
        raise StageError(f"{version_dir}: pass the exported SavedModel (models/serving/...), not the .keras file.")
    spec = data_spec.read(version_dir / SPEC_ASSET)
    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]
    _, inputs = signature.structured_input_signature

    def predict(arrays: dict[str, np.ndarray]) -> np.ndarray:
        (outputs,) = signature(**{name: tf.constant(value) for name, value in arrays.items()}).values()
        return outputs.numpy()

    return ServedModel(
        name=version_dir.parent.name,
        version=int(version_dir.name) if version_dir.name.isdigit() else 1,
        source=str(version_dir),
        spec=spec,
        predict=predict,
        input_specs={name: (tensor.dtype.name, tensor.shape.as_list()) for name, tensor in inputs.items()},
        output_specs={
            name: (tensor.dtype.name, tensor.shape.as_list()) for name, tensor in signature.structured_outputs.items()
        },
    )


def load_registered_keras(uri: str, info=None):
    """The Keras model of a registered version: the `.keras` artifact beside the pyfunc over the SavedModel
    (`pipeline.serving.mlflow_model`), or, for a version logged as a Keras model by an earlier release, that.
    `info`: the version's `mlflow.models.ModelInfo`, if the caller has it already."""
    import mlflow

    from pipeline.ml.models import load_trained_model

    if "keras" in (info or mlflow.models.get_model_info(uri)).flavors:
        return mlflow.keras.load_model(uri)
    local = Path(mlflow.artifacts.download_artifacts(uri))
    files = sorted((local / "artifacts").rglob("*.keras"))
    if not files:
        raise StageError(f"{uri}: the registered model holds no .keras file; export it again (dvc repro export).")
    return load_trained_model(files[0])


def _load_registered(uri: str) -> ServedModel:
    """A Keras model from the MLflow model registry, with the serving spec logged in its metadata."""
    import mlflow

    name, _, reference = uri.removeprefix("models:/").partition("@")
    client = mlflow.tracking.MlflowClient()
    try:
        if reference:
            version = client.get_model_version_by_alias(name, reference)
        else:
            name, _, number = name.partition("/")
            version = client.get_model_version(name, number)
        info = mlflow.models.get_model_info(uri)
        keras_model = load_registered_keras(uri, info)
    except mlflow.exceptions.MlflowException as error:
        raise StageError(f"{uri}: not found in the MLflow registry at {mlflow.get_tracking_uri()} ({error})") from None
    raw_spec = (info.metadata or {}).get("pipeline_spec")
    if raw_spec is None:
        raise StageError(f"{uri}: this model has no pipeline_spec metadata; export it with `pipeline run export`.")
    spec = DataSpec.from_dict(raw_spec, f"{uri} (its pipeline_spec metadata)")
    inputs = keras_model.inputs if isinstance(keras_model.inputs, list) else [keras_model.inputs]

    def predict(arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(keras_model(arrays, training=False))

    return ServedModel(
        name=name,
        version=int(version.version),
        source=uri,
        spec=spec,
        predict=predict,
        input_specs={tensor.name: (str(tensor.dtype), list(tensor.shape)) for tensor in inputs},
        output_specs={"output_0": (str(keras_model.outputs[0].dtype), list(keras_model.outputs[0].shape))},
    )
