"""The registered model's Python side: an MLflow pyfunc over the exported SavedModel.

A Keras model saved by the pipeline holds its own layers (augmentation, imputation, position embeddings), which
Keras can rebuild only in a process that imported `pipeline.ml.models`: logged as a Keras model, a registered
champion failed `mlflow.pyfunc.load_model` in any other interpreter. The registry's model is therefore this class
over the SavedModel (whose graph needs no Python class) with the `.keras` file beside it as an artifact for the
pipeline's own stages. This module imports only numpy, pandas, TensorFlow and MLflow, never `pipeline`: the export
stage pickles it by value into the logged model, so it loads wherever those packages are installed.
"""

from __future__ import annotations

import mlflow.pyfunc

SAVED_MODEL = "saved_model"
"""The artifact holding the SavedModel (TF Serving's layout: one version folder)."""
KERAS_MODEL = "keras_model"
"""The artifact holding the `.keras` file (the gate and `pipeline serve` load it with the pipeline imported)."""


class SavedModelPredictor(mlflow.pyfunc.PythonModel):
    """`predict` takes what MLflow's clients send: a DataFrame of a table's columns, a dict of named arrays, or
    one array for a model with one input; it returns the `serving_default` signature's output as an array."""

    def __init__(self, input_names: dict[str, str]):
        self.input_names = dict(input_names)
        """A table's column names -> the model's input names (they differ where a name is not a valid key)."""

    def load_context(self, context) -> None:
        import tensorflow as tf

        self.signature = tf.saved_model.load(context.artifacts[SAVED_MODEL]).signatures["serving_default"]
        _, self.inputs = self.signature.structured_input_signature

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd
        import tensorflow as tf

        if isinstance(model_input, pd.DataFrame):
            arrays = {
                self.input_names.get(str(column), str(column)): model_input[column].to_numpy().reshape(-1, 1)
                for column in model_input.columns
            }
        elif isinstance(model_input, dict):
            arrays = dict(model_input)
        else:
            if len(self.inputs) != 1:
                raise ValueError(f"this model takes named inputs {sorted(self.inputs)}: pass a dict or a DataFrame")
            arrays = {next(iter(self.inputs)): model_input}
        unknown = sorted(set(arrays) - set(self.inputs))
        if unknown:
            raise ValueError(f"unknown inputs {unknown}; this model takes {sorted(self.inputs)}")
        tensors = {}
        for name, spec in self.inputs.items():
            if name not in arrays:
                raise ValueError(f"missing input {name!r}; this model takes {sorted(self.inputs)}")
            values = np.asarray(arrays[name])
            if spec.dtype == tf.string:  # missing texts are empty strings, as in training
                values = np.array(
                    [
                        "" if value is None or (isinstance(value, float) and value != value) else str(value)
                        for value in values.reshape(-1)
                    ],
                    dtype=object,
                ).reshape(values.shape)
            tensors[name] = tf.constant(values, dtype=spec.dtype)
        (outputs,) = self.signature(**tensors).values()
        return outputs.numpy()
