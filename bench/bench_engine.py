"""Data engine benchmark: the validate and preprocess stages with `data.engine: local` and `beam` (Apache Beam's
FnApiRunner, `--workers` processes on this machine) on the digits images enlarged x1, x10 and x100 (every file
decoded and hashed, then decoded and serialised into TFRecord shards) and on the penguins table enlarged x1, x100
and x1000 (Parquet, validated in chunks of `--chunk-rows`).

Reports each stage's wall time and the peak RSS of its largest process (a Beam worker's, or the stage's own),
and checks that both engines wrote the same validation summary and the same prepared files, byte for byte.

Usage: python bench/bench_engine.py [--image-factors 1 10 100] [--table-factors 1 100 1000] [--workers 2]
       [--chunk-rows 20000] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import ROOT, sh, stage_peak_memory  # noqa: E402
from bench_scale import write_enlarged_digits  # noqa: E402


def write_enlarged_penguins(path: Path, factor: int) -> int:
    """The penguins table `factor` times: copies with the measurements jittered by 0.1 %, so rows differ."""
    import palmerpenguins
    import pandas as pd

    table = palmerpenguins.load_penguins()
    generator = np.random.default_rng(factor)
    copies = [table]
    for _ in range(1, factor):
        copy = table.copy()
        for column in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
            copy[column] = (copy[column] * generator.normal(1, 0.001, len(copy))).round(3)
        copies.append(copy)
    enlarged = pd.concat(copies, ignore_index=True)
    enlarged.to_parquet(path, index=False, row_group_size=10_000)
    return len(enlarged)


def write_data(parent: Path, kind: str, factor: int) -> Path:
    """The enlarged data, written once for both engines."""
    if kind == "images":
        write_enlarged_digits(parent / f"digits-x{factor}", factor)
        return parent / f"digits-x{factor}"
    write_enlarged_penguins(parent / f"penguins-x{factor}.parquet", factor)
    return parent / f"penguins-x{factor}.parquet"


def make_project(parent: Path, kind: str, factor: int, engine: str, workers: int, chunk_rows: int, data: Path) -> Path:
    project = parent / f"{kind}-x{factor}-{engine}"
    project.mkdir()
    shutil.copytree(ROOT / "data" / "feedback", project / "data" / "feedback")
    (project / "expectations").mkdir()
    name = "digits" if kind == "images" else "penguins"
    suite = yaml.safe_load((ROOT / "expectations" / f"{name}.yaml").read_text())
    for item in suite["expectations"]:
        if item["expectation"] == "expect_table_row_count_to_be_between":
            item["max_value"] = item["max_value"] * factor * 2
        if item["expectation"] == "expect_compound_columns_to_be_unique":
            item["severity"] = "warning"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (project / "expectations" / f"{data.stem}.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    if kind == "images":
        params["data"].update(source="image_dir", path=str(data))
    else:
        params["data"].update(source="parquet", path=str(data), label="species")
    params["data"].update(engine=engine, engine_workers=workers)
    params["validate"]["chunk_rows"] = chunk_rows
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], project)  # the stages' MLflow tags read the git commit
    return project


def prepared_digest(project: Path) -> str:
    """One hash of every file preprocess wrote (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted((project / "data" / "prepared").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-factors", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--table-factors", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--workers", type=int, default=2, help="Beam FnApiRunner worker processes")
    parser.add_argument("--chunk-rows", type=int, default=20_000, help="validate.chunk_rows for the tables")
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the benchmark still works")
    args = parser.parse_args()
    if args.smoke:
        args.image_factors, args.table_factors, args.chunk_rows = [1], [1], 100
    print(
        "| data | size | engine | validate wall (s) | peak RSS (MiB) | preprocess wall (s) | peak RSS (MiB)"
        " | same summary | same prepared files |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as scratch:
        for kind, factors in (("table", args.table_factors), ("images", args.image_factors)):
            for factor in factors:
                summaries, digests, data = {}, {}, write_data(Path(scratch), kind, factor)
                for engine in ("local", "beam"):
                    project = make_project(Path(scratch), kind, factor, engine, args.workers, args.chunk_rows, data)
                    sh([sys.executable, "-m", "pipeline", "run", "ingest"], project)
                    seconds, peak = stage_peak_memory(project, "validate")
                    summary = json.loads((project / "reports" / "validate" / "summary.json").read_text())
                    volatile = ("suite", "seconds")
                    summaries[engine] = {key: value for key, value in summary.items() if key not in volatile}
                    prepare_seconds, prepare_peak = stage_peak_memory(project, "preprocess")
                    digests[engine] = prepared_digest(project)
                    same = "| |" if engine == "local" else f"| {summaries['local'] == summaries['beam']}"
                    same += "" if engine == "local" else f" | {digests['local'] == digests['beam']}"
                    size = f"{summary['rows']:,} {'images' if kind == 'images' else 'rows'}"
                    print(
                        f"| {kind} | {size} | {engine} | {seconds:.1f} | {peak:.0f} | {prepare_seconds:.1f}"
                        f" | {prepare_peak:.0f} {same} |",
                        flush=True,
                    )
                    shutil.rmtree(project)
                shutil.rmtree(data) if data.is_dir() else data.unlink()


if __name__ == "__main__":
    main()
