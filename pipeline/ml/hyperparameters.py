"""Hyperparameters as a plain mapping: the defaults from params.yaml, or a search's choices.

`build_model` and `train` read this mapping; the tune stage writes the best one to
`paths.hyperparameters`. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, ModelConfig
from pipeline.core.runner import StageError

# Every setting of the `model` section but its registry name.
MODEL_KEYS = tuple(field.name for field in dataclasses.fields(ModelConfig) if field.name != "name")
TRAIN_KEYS = ("optimizer", "learning_rate", "momentum", "batch_size")
# Search-space names that only some families read: the rest are left out of their searches.
SEQUENCE_FAMILIES = ("cnn", "rnn", "transformer")
FAMILY_ONLY = {
    "filters": ("cnn",),
    "kernel_size": ("cnn",),
    "rnn_units": ("rnn",),
    "rnn_cell": ("rnn",),
    "rnn_bidirectional": ("rnn",),
    "text_ngrams": ("mlp",),  # the bag of n-grams; sequence models read the words in order
    "text_weighting": ("mlp",),
    "text_sequence_length": SEQUENCE_FAMILIES,
    "text_embedding_dim": SEQUENCE_FAMILIES,
}


def defaults_from_config(config: Config) -> dict[str, Any]:
    """The `model` section plus the optimizer and batch settings of `train`."""
    values = {key: getattr(config.model, key) for key in MODEL_KEYS}
    values["family"] = config.model_family
    values.update({key: getattr(config.train, key) for key in TRAIN_KEYS})
    values["hidden_units"], values["learning_rate"] = config.hidden_units, config.learning_rate  # auto's values
    return values


def searched_names(space: dict, family: str) -> list[str]:
    """The search-space entries that matter for `family`, or for any family the search chooses from when the
    family itself is searched (`family: {choice: [...]}`; a trial of another family ignores the rest)."""
    families = set(space.get("family", {}).get("choice", [])) or {family}
    return [name for name in space if families & set(FAMILY_ONLY.get(name, families))]


def apply_search_values(defaults: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters with a search's values in place of the defaults.

    `num_layers` and `units` make `hidden_units` (that many layers of that width); `filters`
    sets the first convolution block, doubling per block for as many blocks as the defaults have.
    """
    result = dict(defaults)
    layers = values.get("num_layers", len(defaults["hidden_units"]))
    width = values.get("units", defaults["hidden_units"][0] if defaults["hidden_units"] else 64)
    result["hidden_units"] = [int(width)] * int(layers)
    if "filters" in values:
        result["filters"] = [int(values["filters"]) * 2**block for block in range(len(defaults["filters"]) or 1)]
    for name, value in values.items():
        if name in result and name not in ("filters", "hidden_units"):
            result[name] = value
    return result


def save(path: Path, hyperparameters: dict[str, Any], source: str) -> Path:
    from pipeline.core.outputs import write_json_atomic

    return write_json_atomic(path, {"source": source, "hyperparameters": hyperparameters})


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise StageError(
            f"{path}: missing; run the tune stage first (dvc repro tune; with tune.enabled false it"
            " just writes the defaults from params.yaml)."
        )
    return json.loads(path.read_text())["hyperparameters"]
