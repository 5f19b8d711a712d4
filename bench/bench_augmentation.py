"""Augmentation benchmark: test accuracy on a small image folder with and without the training-only
augmentation layers (`model.augment_*`), over several seeds (results in docs/benchmarks.md).

The folder is tests/e2e/test_zoo.py's shapes (bright circles, squares and triangles of random colours,
sizes and places on dark backgrounds; JPEG/PNG/BMP/GIF, every mode and size), at 24x24 RGB.

Usage: python bench/bench_augmentation.py [--per-class N ...] [--seeds S ...] [--epochs N] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUGMENTED = {"augment_flip": "horizontal", "augment_rotation": 0.1, "augment_translation": 0.1, "augment_zoom": 0.1}


def accuracy(directory: Path, per_class: int, seed: int, epochs: int, augmented: bool) -> float:
    from tests.e2e.test_zoo import run_stages, write_shapes

    (directory / "data" / "user").mkdir(parents=True)
    shutil.copytree(ROOT / "expectations", directory / "expectations")
    os.chdir(directory)
    write_shapes(directory / "data" / "user" / "shapes", per_class)
    model = {
        "family": "cnn",
        "filters": [16, 32],
        "hidden_units": [32],
        "dropout": 0.0,
        **(AUGMENTED if augmented else {}),
    }
    settings = {
        "base": {"seed": seed},
        "data": {"source": "image_dir", "path": "data/user/shapes", "image_size": [24, 24], "color_mode": "rgb"},
        "model": model,
        "train": {"epochs": epochs, "early_stopping_patience": epochs, "learning_rate": 0.003, "batch_size": 16},
        "tune": {"enabled": False},
        "finetune": {"enabled": False},
    }
    run_stages(directory, settings, ("ingest", "validate", "preprocess", "tune", "train", "evaluate"))
    return json.loads((directory / "reports/evaluate/metrics.json").read_text())["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, nargs="+", default=[20, 60])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="one tiny run each way: checks the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.per_class, args.seeds, args.epochs = [8], [1], 2
    sys.path.insert(0, str(ROOT))
    print("| images per class | augmentation | test accuracy (mean of seeds) | per seed |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-augmentation-") as scratch:
        for per_class in args.per_class:
            for augmented in (False, True):
                # a folder per run: MLflow keeps the SQLite store of a URI open for the whole process
                folder = f"{per_class}-{'on' if augmented else 'off'}"
                scores = [
                    accuracy(Path(scratch) / f"{folder}-{seed}", per_class, seed, args.epochs, augmented)
                    for seed in args.seeds
                ]
                label = "flip, rotation, translation, zoom" if augmented else "none"
                listed = ", ".join(f"{score:.3f}" for score in scores)
                print(f"| {per_class} | {label} | {statistics.mean(scores):.3f} | {listed} |", flush=True)
        os.chdir(ROOT)


if __name__ == "__main__":
    main()
