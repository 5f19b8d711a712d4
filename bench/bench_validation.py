"""Validation benchmark: time and peak memory of the validate stage's work on large inputs.

- a 1,000,000-row, 20-column table (CSV, numbers and categories, a profiled suite);
- 50,000 PNG images (the digits, re-encoded copies) in class folders.

Each measurement runs in a fresh process so peak RSS is its own.
Usage: python bench/bench_validation.py [--rows N] [--images N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def make_table(path: Path, rows: int) -> None:
    generator = np.random.default_rng(0)
    columns = {f"number_{index}": generator.normal(index, 1.0, rows).round(4) for index in range(15)}
    columns.update({f"category_{index}": generator.choice(["a", "b", "c", "d"], rows) for index in range(4)})
    columns["label"] = generator.choice(["yes", "no"], rows)
    pd.DataFrame(columns).to_csv(path, index=False)


def make_images(root: Path, count: int) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for index in range(count):
        source = index % len(pixels)
        folder = root / str(digits.target[source])
        folder.mkdir(parents=True, exist_ok=True)
        image = pixels[source].copy()
        image[index % 8, (index // 8) % 8] ^= 1  # distinct content, so no duplicates
        Image.fromarray(image, mode="L").save(folder / f"{index:06d}.png")


WORKER = """
import resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from pipeline.data import expectations
from pipeline.data.validation import run_suite, validate_in_chunks, validation_frame
kind, path, extra = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
started = time.perf_counter()
if kind == "profile":  # derive the suite from the whole table (not measured)
    frame = validation_frame({{"kind": "table", "format": "csv", "label": "label", "task": "classification"}}, path)
    expectations.save_suite(expectations.profile_table(frame, "label", "classification"), extra, "bench")
    sys.exit(0)
if kind == "table":  # what the validate stage does for a table longer than validate.chunk_rows
    description = {{"kind": "table", "format": "csv", "label": "label", "task": "classification"}}
    suite = expectations.load_suite(extra)
    summary, _ = validate_in_chunks(path, description, suite, "error", 5, 250_000, None, extra.with_suffix(".parquet"))
    read = 0.0
else:
    frame = validation_frame({{"kind": "image"}}, extra)
    suite = expectations.profile_images(frame)
    read = time.perf_counter() - started
    started = time.perf_counter()
    summary = run_suite(frame, suite, "error", 5)
validate = time.perf_counter() - started
assert summary["success"], summary["failures"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{{read:.1f}} {{validate:.1f}} {{peak:.0f}} {{summary['expectations']}}")
"""


def measure(kind: str, path: Path, extra: Path) -> list[str]:
    script = WORKER.format(root=str(ROOT))
    output = subprocess.run(
        [sys.executable, "-c", script, kind, str(path), str(extra)], capture_output=True, text=True, check=True
    )
    return output.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the benchmark still works")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.images = 3_000, 100
    sys.path.insert(0, str(ROOT))
    from pipeline.data.sources import scan_image_dir

    with tempfile.TemporaryDirectory(prefix="bench-validation-") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        make_table(scratch / "table.csv", args.rows)
        make_images(scratch / "images", args.images)
        listing, _ = scan_image_dir(scratch / "images")
        listing.to_parquet(scratch / "manifest.parquet", index=False)
        print(f"inputs made in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        size = (scratch / "table.csv").stat().st_size / 2**20
        measure("profile", scratch / "table.csv", scratch / "suite.yaml")
        table = measure("table", scratch / "table.csv", scratch / "suite.yaml")
        images = measure("image", scratch / "images", scratch / "manifest.parquet")
    print("| input | decode (s) | validation (s) | peak RSS (MiB) | expectations |\n|---|---|---|---|---|")
    rows = f"{args.rows:,} rows x 20 columns CSV ({size:.0f} MiB), chunks of 250,000 rows"
    print(f"| {rows} | - | {' | '.join(table[1:])} |")
    print(f"| {args.images:,} PNG images (8x8), file by file | {' | '.join(images)} |")


if __name__ == "__main__":
    main()
