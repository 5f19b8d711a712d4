"""Scaling benchmark: the digits enlarged 1x, 10x and 100x (augmented copies: random one-pixel
shifts and noise, so no two files are equal), through ingest, validate, preprocess, (tune, disabled) train and
evaluate. Reports each stage's wall time and peak RSS, and training throughput.

Usage: python bench/bench_scale.py [--factors 1 10 100] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import ROOT, sh, stage_peak_memory  # noqa: E402

STAGES = ("ingest", "validate", "preprocess", "tune", "train", "evaluate")  # tune: disabled, writes the defaults


def write_enlarged_digits(root: Path, factor: int) -> int:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.images * (255.0 / 16.0)
    generator = np.random.default_rng(factor)
    count = 0
    for copy in range(factor):
        images = pixels
        if copy:
            shifts = generator.integers(-1, 2, size=2)
            images = np.roll(pixels, tuple(shifts), axis=(1, 2)) + generator.normal(0, 8, pixels.shape)
        images = np.rint(np.clip(images, 0, 255)).astype(np.uint8)
        for index, (image, target) in enumerate(zip(images, digits.target, strict=True)):
            folder = root / str(target)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{copy:03d}_{index:04d}.png")
            count += 1
    return count


def make_project(parent: Path, factor: int, epochs: int) -> Path:
    project = parent / f"x{factor}"
    project.mkdir()
    shutil.copytree(ROOT / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "feedback", project / "data" / "feedback")
    (project / "expectations").mkdir()
    suite = yaml.safe_load((ROOT / "expectations" / "digits.yaml").read_text())
    for item in suite["expectations"]:
        if item["expectation"] == "expect_table_row_count_to_be_between":
            item["max_value"] = 1797 * max(factor, 1) * 2
    (project / "expectations" / "digits.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    images = project / "data" / "user" / "digits"
    write_enlarged_digits(images, factor)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source="image_dir", path=str(images))
    params["tune"]["enabled"] = False
    params["finetune"]["enabled"] = False
    params["train"].update(epochs=epochs, early_stopping_patience=epochs)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the benchmark still works")
    args = parser.parse_args()
    if args.smoke:
        args.factors, args.epochs = [1], 1
    with tempfile.TemporaryDirectory() as scratch:
        for factor in args.factors:
            project = make_project(Path(scratch), factor, args.epochs)
            sh(["git", "init", "-q"], project)  # the stages' MLflow tags read the git commit
            rows = []
            for stage in STAGES:
                seconds, peak = stage_peak_memory(project, stage)
                rows.append(f"{stage} {seconds:.1f} s / {peak:.0f} MiB")
            train = json.loads((project / "reports/train/summary.json").read_text())
            accuracy = json.loads((project / "reports/evaluate/metrics.json").read_text())["accuracy"]
            print(
                f"x{factor} ({1797 * factor} images): "
                + "; ".join(rows)
                + f"; training {train['train_examples_per_second']:.0f} examples/s; test accuracy {accuracy:.4f}",
                flush=True,
            )
            shutil.rmtree(project)


if __name__ == "__main__":
    main()
