"""A data zoo: tables and image folders the pipeline was not built around, each through validation
(a suite profiled from the data, as the README's own-data path says), preprocessing, training,
evaluation, export and monitoring, and each must beat a simple baseline measured here.

The stages run in this process (as `dvc repro` runs them, minus DVC) to keep the zoo affordable; the
hostile table is also served (the export's infra validation) and predicted by its original names."""

from __future__ import annotations

import json
import string

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run, write_params

pytestmark = pytest.mark.e2e

STAGES = ("ingest", "validate", "preprocess", "tune", "train", "evaluate", "export", "monitor")
FAST = {
    "model": {"hidden_units": [32], "dropout": 0.0},
    "train": {"epochs": 40, "early_stopping_patience": 8, "learning_rate": 0.01},
    "export": {"version": 1, "infra_validation": False, "tflite": False},
}


def sklearn_table(name: str) -> tuple[pd.DataFrame, str]:
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{name}")(as_frame=True)
    table = loaded.frame.rename(columns={"target": "outcome"})
    if name != "diabetes":
        table["outcome"] = [str(loaded.target_names[value]) for value in loaded.target]
    return table, "outcome"


def hostile_table() -> tuple[pd.DataFrame, str]:
    """The wine table (178 rows, 27 in the test split) under column names real CSVs have."""
    table, label = sklearn_table("wine")
    names = ["class", "Alcohol (%)", "malic.acid", "ash/ash", "alcalinity-of-ash", "magnesium[mg]", "2nd phenols",
             "flavanoïds", "λ", "proanthocyanins ", "if", "hue", "OD280/OD315"]  # fmt: skip
    table = table.rename(columns=dict(zip(table.columns[:13], names, strict=True)))
    table["class"] = np.where(table["class"] > table["class"].median(), "strong", "light")  # a categorical `class`
    return table, label


def messy_table() -> tuple[pd.DataFrame, str]:
    """All-categorical signal, missing values in every column, a constant, an ID, high-cardinality
    strings and a datetime column."""
    generator = np.random.default_rng(0)
    count = 400
    colour = generator.choice(["red", "green", "blue"], count)
    size = generator.choice(["S", "M", "L", "XL"], count)
    label = np.where((colour == "red") | (size == "XL"), "yes", "no")
    table = pd.DataFrame(
        {
            "id": np.arange(count),
            "colour": colour,
            "size": size,
            "constant": "same",
            "code": ["".join(generator.choice(list(string.ascii_lowercase), 6)) for _ in range(count)],
            "when": pd.date_range("2026-01-01", periods=count, freq="h").astype(str),
            "label": label,
        }
    )
    for column in ("colour", "size", "constant", "code", "when"):
        table.loc[generator.random(count) < 0.05, column] = None
    return table, "label"


def run_stages(directory, overrides: dict, stages=STAGES, profile: bool = True) -> None:
    write_params(directory, overrides)
    from pipeline.core.config import load_config
    from pipeline.data import validation

    if profile:
        validation.profile(load_config("params.yaml"), force=True)
    from pipeline.cli import main

    for name in stages:
        assert main(["run", name]) == 0


def holdout(directory) -> tuple[dict, pd.DataFrame]:
    metrics = json.loads((directory / "reports/evaluate/metrics.json").read_text())
    return metrics, pd.read_csv(directory / "reports/evaluate/predictions.csv")


ZOO = {
    "iris": lambda: sklearn_table("iris"),
    "wine-hostile-names": hostile_table,
    "breast_cancer": lambda: sklearn_table("breast_cancer"),
    "diabetes-regression": lambda: sklearn_table("diabetes"),
    "messy": messy_table,
}


@pytest.mark.parametrize("name", list(ZOO))
def test_a_table_from_the_zoo_finishes_and_beats_its_baseline(workdir, name):
    table, label = ZOO[name]()
    table.to_csv(workdir / "data/user/table.csv", index=False)
    task = "regression" if "regression" in name else "classification"
    data = {"source": "csv", "path": "data/user/table.csv", "label": label, "task": task}
    run_stages(workdir, {**FAST, "data": data})
    metrics, predictions = holdout(workdir)
    drift = json.loads((workdir / "reports/monitor/drift.json").read_text())
    assert drift["retrain"] is False, drift["reasons"]  # our own holdout is no drift, small or not
    if task == "regression":
        assert metrics["r2"] > 0.2, metrics  # the mean predictor scores 0
        print(f"zoo {name}: r2 {metrics['r2']:.3f} vs 0 (the mean)")
        return
    majority = predictions["actual"].value_counts(normalize=True).max()
    assert metrics["accuracy"] > majority + 0.05, (metrics, majority)
    print(f"zoo {name}: accuracy {metrics['accuracy']:.3f} vs {majority:.3f} (majority class)")


def test_the_hostile_table_is_served_and_predicted_by_its_own_column_names(workdir):
    """The export's infra validation starts the real HTTP API on the SavedModel and sends it test rows
    keyed by the original column names; `pipeline predict` reads a CSV with those names."""
    table, label = hostile_table()
    table.to_csv(workdir / "data/user/wine.csv", index=False)
    data = {"source": "csv", "path": "data/user/wine.csv", "label": label}
    run_stages(workdir, {**FAST, "export": {"version": 1, "infra_validation": True}, "data": data})
    export = json.loads((workdir / "reports/export/export.json").read_text())
    assert "class_" in export["signature"]["inputs"] and export["infra_validation"]["servable"]
    table.drop(columns=[label]).head(5).to_csv(workdir / "new.csv", index=False)
    predicted = run(["pipeline", "predict", "--model", "models/serving", "--input", "new.csv"], workdir)
    assert len(predicted.stdout.strip().splitlines()) >= 5


def test_the_built_in_penguins_holdout_raises_no_false_alarm(workdir):
    """It did: `retrain: true; features drifted: sex` (an empty category in the training split only)."""
    run_stages(workdir, {**FAST, "data": {"source": "penguins"}}, profile=False)
    drift = json.loads((workdir / "reports/monitor/drift.json").read_text())
    assert drift["retrain"] is False and drift["families"]["features"]["drifted"] == [], drift["reasons"]


def write_shapes(root, per_class: int = 60) -> None:
    """Three classes of bright shapes of random colours, sizes and places on dark backgrounds, stored as
    users' photos come: JPEG, PNG, BMP and
    GIF mixed, upper-case extensions, RGB, RGBA, palette and greyscale, every image its own size."""
    from PIL import Image, ImageDraw

    generator = np.random.default_rng(1)
    formats = [("JPG", "RGB"), ("png", "RGBA"), ("bmp", "RGB"), ("GIF", "P"), ("jpeg", "L"), ("PNG", "RGB")]
    for shape in ("circle", "square", "triangle"):
        (root / shape).mkdir(parents=True)
        for index in range(per_class):
            side = int(generator.integers(24, 64))
            background = tuple(int(value) for value in generator.integers(0, 70, 3))
            colour = tuple(int(value) for value in generator.integers(150, 256, 3))
            image = Image.new("RGB", (side, side + int(generator.integers(0, 9))), background)
            draw = ImageDraw.Draw(image)
            size = int(side * generator.uniform(0.4, 0.7))
            x, y = (int(value) for value in generator.integers(0, side - size, 2))
            if shape == "circle":
                draw.ellipse((x, y, x + size, y + size), fill=colour)
            elif shape == "square":
                draw.rectangle((x, y, x + size, y + size), fill=colour)
            else:
                draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
            extension, mode = formats[index % len(formats)]
            image.convert(mode).save(root / shape / f"{index:03d}.{extension}")


def test_an_image_folder_of_every_format_and_mode_trains_fine_tunes_and_beats_chance(workdir):
    write_shapes(workdir / "data/user/shapes")
    settings = {
        **FAST,
        "data": {"source": "image_dir", "path": "data/user/shapes", "image_size": [24, 24], "color_mode": "rgb"},
        "model": {"family": "cnn", "filters": [16, 32], "hidden_units": [32], "dropout": 0.0},
        "train": {"epochs": 40, "early_stopping_patience": 20, "learning_rate": 0.003, "batch_size": 16},
        "finetune": {"enabled": "auto", "head_epochs": 2, "fine_tune_epochs": 2},
        "export": {"version": 1, "infra_validation": False, "tflite": True},  # TFLite without the random layers
    }
    settings["model"].update(augment_rotation=0.05, augment_zoom=0.1)  # training only
    stages = ("ingest", "validate", "preprocess", "tune", "train", "evaluate", "prepare_target", "finetune", "export")
    run_stages(workdir, settings, stages)
    metrics, predictions = holdout(workdir)
    majority = predictions["actual"].value_counts(normalize=True).max()
    assert metrics["accuracy"] > majority + 0.1, (metrics, majority)
    print(f"zoo shapes folder: accuracy {metrics['accuracy']:.3f} vs {majority:.3f} (majority class)")
    transfer = json.loads((workdir / "reports/finetune/transfer.json").read_text())
    assert "skipped" not in transfer, transfer  # the 8x8 grey target was prepared at the base's 24x24 RGB
    from pipeline.core.spec import load as load_spec

    target = load_spec(workdir / "data/finetune/prepared").image
    assert (target.height, target.width, target.channels) == (24, 24, 3)
    export = json.loads((workdir / "reports/export/export.json").read_text())
    assert export["signature"]["inputs"]["image"]["shape"] == [None, 24, 24, 3]
