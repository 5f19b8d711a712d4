"""The model side of each kind of data: one module per kind, found by the spec's kind.

`model_modality(kind)` returns the kind's `ModelModality`: how its TFRecords are parsed, its raw inputs and
preprocessing layers, how an MLP reads its features, how a request body becomes a batch (and a batch a
request), its MLflow schema, whether it converts to TFLite, its drift tests and the report's plots. Every
model takes named inputs (`{input name: array}`), so requests, predict and the export checks have one shape.

Modules are imported when first asked for (`importlib`), as `pipeline.data.modalities` does. Keras and
TensorFlow are imported inside the methods that build graphs, so that the serving API's request checks and
the monitor's statistics stay light.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

import numpy as np

from pipeline.core.kinds import kind as kind_facts


class RequestError(ValueError):
    """A request the model cannot answer; `status` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ModelModality:
    """What every kind of data provides on the model side (each module defines `MODALITY`, a subclass)."""

    kind: str = ""

    def record_features(self, spec) -> dict:
        """{input name: tf.io.FixedLenFeature} of the TFRecords' examples (the label apart)."""
        raise NotImplementedError

    def decode(self, parsed: dict, spec) -> dict:
        """The parsed batch as the model's named inputs."""
        return parsed

    def inputs(self, spec) -> dict:
        """{input name: keras.Input} of the raw inputs."""
        raise NotImplementedError

    def preprocess(self, spec, inputs: dict, hyperparameters) -> Any:
        """Raw inputs -> model-ready features (training-only augmentation included)."""
        raise NotImplementedError

    def mlp_features(self, features) -> Any:
        """What a dense network reads from the preprocessed features."""
        return features

    def grid(self, features) -> Any:
        """What a CNN convolves: (batch, height, width, channels) or a sequence (batch, steps, width)."""
        return features

    def sequence(self, features) -> Any:
        """What the RNN and Transformer families read: (batch, steps, width)."""
        return features

    def encode(self, family: str, body, features, hyperparameters) -> Any:
        """The preprocessed features through `family`'s `body` (`pipeline.ml.models.BODIES[family]`, which takes
        the features, the hyperparameters and this modality): what the dense layers and the head read."""
        return body(features, hyperparameters, self)

    def describe_inputs(self, spec) -> str:
        """The model's inputs in words (finetune checks that the target has the same)."""
        raise NotImplementedError

    def request_batch(self, instances: list, spec) -> dict[str, np.ndarray]:
        """TF Serving's `instances` as model inputs; raises RequestError naming the field."""
        raise NotImplementedError

    def columnar_instances(self, inputs: Any, spec) -> list:
        """TF Serving's columnar `inputs` as a list of instances; raises RequestError."""
        raise NotImplementedError

    def request_instances(self, batch: dict[str, np.ndarray], spec) -> list:
        """A batch of model inputs as TF Serving `instances` in raw form (what a client sends)."""
        raise NotImplementedError

    def mlflow_schema(self, spec):
        """The model's inputs as an MLflow schema (the datasets' schema)."""
        raise NotImplementedError

    def mlflow_example(self, inputs: dict[str, np.ndarray], spec) -> Any:
        """A few examples (`inputs`, as the model takes them) in the form an MLflow client passes to the
        registered model's `predict`: the MLflow signature and input example are inferred from it."""
        return inputs

    def tflite_support(self, spec) -> tuple[bool, str]:
        """(whether the model converts to TFLite builtin ops, why not)."""
        return True, ""

    def edge_model(self, model, spec) -> tuple[Any, dict]:
        """(the Keras model to convert to TFLite, what an app computes before it: `{input name: description}`,
        written beside the TFLite files), or (None, {}) when the exported SavedModel converts as it is."""
        return None, {}

    def fixed_outputs(self, model, spec) -> dict | None:
        """{input name: the tensor of `model` after the layers that learn nothing and draw nothing at random}:
        what those layers compute is the same every epoch, so the train stage computes it once, in `tf.data`
        (`pipeline.ml.training.fixed_layers_outside`). None: the whole model trains on its raw inputs."""
        return None

    def edge_inputs(self, batch: dict, spec, outside: dict) -> dict:
        """A batch of the model's raw inputs as the `edge_model` takes them (`outside`: its descriptions)."""
        return batch

    def reference_values(self, batches: list[dict], spec) -> dict[str, np.ndarray]:
        """Parsed TFRecord batches concatenated in `DataModality.read_examples`' form."""
        raise NotImplementedError

    def model_batch(self, features: dict[str, np.ndarray], start: int, end: int) -> dict[str, np.ndarray]:
        """Examples start to end - 1 of `read_examples`-form features, as the model takes them."""
        raise NotImplementedError

    def linear_inputs(self, features: dict[str, np.ndarray], spec) -> Any:
        """`read_examples`-form features as the input of `linear_encoder` (an array or a DataFrame)."""
        raise NotImplementedError

    def linear_encoder(self, spec):
        """An unfitted scikit-learn transformer from `linear_inputs` to the numbers of the evaluate stage's linear
        baseline (`pipeline.ml.baselines`)."""
        raise NotImplementedError

    def perturbations(self, features: dict[str, np.ndarray], spec, generator) -> list[tuple[str, dict, float]]:
        """(what changed, the changed `read_examples`-form features, how much the output should move: 0 for
        none) for each change that should not change the model's prediction (`pipeline.ml.behaviour`)."""
        return []

    uses_embeddings: bool = False
    """Whether the monitor also tests the penultimate layer's embeddings."""
    outputs_comparable: bool = True
    """Whether the model's outputs on new data are comparable with those on held-out data (not a forecast that
    follows its series' level)."""
    ordered_steps: bool = False
    """Whether a sequence's steps keep their place in a short window of fixed length (a series' window: a CNN
    flattens its maps rather than pool them; an RNN is unrolled, which TFLite's builtin ops can run)."""

    def outputs(self, predictions, inputs: dict, spec) -> Any:
        """The model's output from the head's `predictions` (a forecast adds the window's last value)."""
        return predictions

    def drift_families(
        self, reference: dict, current: dict, spec, settings, embeddings: tuple, held_out: Optional[dict] = None
    ) -> dict:
        """{family: {"tests": ..., "drifted": [...]}} of the kind's input drift tests. `held_out` (the validation
        split, in `reference`'s form) is the reference of tests of what was learnt from the training split."""
        raise NotImplementedError

    def report_plots(self, samples: dict, spec) -> list[str]:
        """HTML parts of the drift report for the inputs (plots inlined)."""
        return []


def model_modality(kind: str) -> ModelModality:
    """The model side of the kind of data named `kind` (an unknown name is a ConfigError)."""
    kind_facts(kind)
    return importlib.import_module(f"{__name__}.{kind}").MODALITY
