"""The hyperparameters a search may vary (`tune.space`), and the values each may take.

The categorical choices are defined here once: the `model` and `train` sections' annotations and the search
space's checks both read them. No TensorFlow.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Literal

from pipeline.core.coercion import fail

Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid", "gelu"]
RnnCell = Literal["lstm", "gru"]
Optimizer = Literal["sgd", "adam", "rmsprop"]
AugmentFlip = Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]
Family = Literal["mlp", "cnn", "rnn", "transformer"]
TextWeighting = Literal["auto", "presence", "tf_idf", "log_tf_idf"]

TUNABLE = {
    "num_layers": "int",
    "units": "int",
    "filters": "int",
    "kernel_size": "int",
    "rnn_units": "int",
    "rnn_bidirectional": "bool",
    "activation": typing.get_args(Activation),
    "rnn_cell": typing.get_args(RnnCell),
    "optimizer": typing.get_args(Optimizer),
    "batch_norm": "bool",
    "dropout": "rate",
    "l1": "float",
    "l2": "float",
    "learning_rate": "float",
    "batch_size": "int",
    "augment_flip": typing.get_args(AugmentFlip),
    "augment_rotation": "rate",
    "augment_translation": "rate",
    "augment_zoom": "rate",
    "augment_contrast": "rate",
    "text_max_tokens": "int",
    "text_ngrams": "int",
    "text_weighting": typing.get_args(TextWeighting),
    "text_sequence_length": "int",
    "text_embedding_dim": "int",
    "series_lookback": "int",
    "family": typing.get_args(Family),  # the families that can read the data: checked with the kind (config)
}


def validate_entry(key: str, name: str, entry: Any, algorithm: str) -> None:
    """A search-space entry: `{choice: [...]}` or `{min: a, max: b, step: s, log: true|false}`."""
    if name not in TUNABLE:
        fail(key, entry, f"a hyperparameter to search; tunable names: {', '.join(TUNABLE)}")
    kind = TUNABLE[name]
    if not isinstance(entry, Mapping):
        fail(key, entry, "{choice: [values]} or {min: low, max: high, step: s, log: true|false}")
    if "choice" in entry:
        if set(entry) != {"choice"} or not isinstance(entry["choice"], list) or not entry["choice"]:
            fail(key, entry, "{choice: [one or more values]} and no other keys")
        for value in entry["choice"]:
            if isinstance(kind, tuple):
                ok = value in kind
            elif kind == "bool":
                ok = isinstance(value, bool)
            elif kind == "int":
                ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            elif kind == "rate":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            if not ok:
                allowed = (
                    ", ".join(kind)
                    if isinstance(kind, tuple)
                    else {
                        "bool": "true or false",
                        "int": "positive integers",
                        "rate": "rates in [0, 1)",
                        "float": "non-negative numbers",
                    }[kind]
                )
                fail(key, entry, f"choices among {allowed}")
        return
    if isinstance(kind, tuple) or kind == "bool":
        fail(key, entry, "{choice: [...]} for a categorical hyperparameter")
    unknown = set(entry) - {"min", "max", "step", "log"}
    if unknown or "min" not in entry or "max" not in entry:
        fail(key, entry, "{min: low, max: high} with optional step and log")
    low, high = entry["min"], entry["max"]
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (low, high))
    if not numbers or not low < high:
        fail(key, entry, "numbers with min < max")
    if kind == "int" and not all(isinstance(value, int) for value in (low, high)):
        fail(key, entry, "integer bounds (this hyperparameter counts something)")
    if kind == "rate" and not (0 <= low and high < 1):
        fail(key, entry, "bounds in [0, 1)")
    if entry.get("log") and low <= 0:
        fail(key, entry, "a positive min when log: true (log-scale sampling)")
    if "step" in entry and not (isinstance(entry["step"], (int, float)) and entry["step"] > 0):
        fail(key, entry, "a positive step")
    if algorithm == "grid" and kind != "int" and "step" not in entry:
        fail(key, entry, "a step or a choice list: tune.algorithm=grid needs a finite set of values")
