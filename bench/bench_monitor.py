"""Monitor benchmark: false-alarm rate on fresh samples of the training distribution, and detection
rate on shifted samples, with the trained digits model of the current project (run `make repro`).

- fresh: random samples of the held-out images (validation + test splits, never trained on);
- shifted: random samples of the same held-out images with scanner noise (sigma 20 and 60 grey
  levels, as `digits_noisy`), and the same images 20 % brighter;
each judged by the monitor's tests (image statistics, embeddings, predictions) at the default
thresholds. Then the same for a table (synthetic: two numeric and two categorical features,
2,000 reference rows): fresh samples, and a numeric feature shifted by a quarter of its standard
deviation. Usage: python bench/bench_monitor.py [--repeats N] [--size N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the benchmark still works")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.size = 3, 60

    from pipeline.core.config import load_config
    from pipeline.ml.features import load_spec
    from pipeline.ml.models import feature_extractor, load_trained_model
    from pipeline.ops import monitoring

    config = load_config("params.yaml")
    spec = load_spec(config.paths.prepared)
    model = load_trained_model(config.paths.model)
    extractor = feature_extractor(model)
    reference, _ = monitoring.read_reference(config.paths.prepared, spec)
    held_out = np.concatenate(
        [monitoring.read_reference(config.paths.prepared, spec, split)[0] for split in ("validation", "test")]
    )
    reference_outputs = np.asarray(model(reference, training=False))
    reference_embeddings = np.asarray(extractor(reference, training=False))
    generator = np.random.default_rng(0)
    shifts = {
        "fresh sample (no shift)": lambda images: images,
        "noise sigma 20": lambda images: np.clip(images + generator.normal(0, 20, images.shape), 0, 255),
        "noise sigma 60 (digits_noisy)": lambda images: np.clip(images + generator.normal(0, 60, images.shape), 0, 255),
        "20 % brighter": lambda images: np.clip(images * 1.2, 0, 255),
    }
    print(f"{args.repeats} samples of {args.size} held-out images each; reference: {len(reference)} training images")
    for name, shift in shifts.items():
        started, alarms, by_family = time.perf_counter(), 0, {}
        for _ in range(args.repeats):
            chosen = generator.choice(len(held_out), size=args.size, replace=False)
            current = shift(held_out[chosen]).astype(np.float32)
            report = monitoring.compare(
                reference,
                current,
                spec,
                config.monitor,
                reference_outputs,
                np.asarray(model(current, training=False)),
                reference_embeddings,
                np.asarray(extractor(current, training=False)),
            )
            report.update(monitoring.decide(report))
            alarms += report["retrain"]
            for family, result in report["families"].items():
                by_family[family] = by_family.get(family, 0) + bool(result["drifted"])
        seconds = (time.perf_counter() - started) / args.repeats
        families = ", ".join(f"{family} {count / args.repeats:.2f}" for family, count in by_family.items())
        print(f"{name}: retrain in {alarms / args.repeats:.2%} of samples ({families}); {seconds * 1000:.0f} ms each")
    table(args.repeats, args.size, config.monitor)


def table(repeats: int, size: int, settings) -> None:
    from pipeline.ops import monitoring

    spec = {
        "kind": "table",
        "task": "classification",
        "classes": ["a", "b", "c"],
        "features": [
            {"column": name, "name": name, "type": kind}
            for name, kind in (("x1", "numeric"), ("x2", "numeric"), ("c1", "categorical"), ("c2", "categorical"))
        ],
    }
    generator = np.random.default_rng(1)

    def sample(count: int, shift: float = 0.0) -> dict:
        return {
            "x1": generator.normal(shift, 1.0, count),
            "x2": generator.exponential(1.0, count),
            "c1": generator.choice(["a", "b", "c"], count, p=[0.5, 0.3, 0.2]),
            "c2": generator.choice(["u", "v"], count, p=[0.7, 0.3]),
        }

    def outputs(count: int):
        return np.eye(3)[generator.choice(3, count, p=[0.4, 0.35, 0.25])]

    reference, reference_outputs = sample(2000), outputs(2000)
    for name, shift in (("table, fresh sample (no shift)", 0.0), ("table, x1 shifted by 0.25 sd", 0.25)):
        alarms = 0
        for _ in range(repeats):
            report = monitoring.compare(
                reference, sample(size, shift), spec, settings, reference_outputs, outputs(size)
            )
            alarms += monitoring.decide(report)["retrain"]
        print(f"{name}: retrain in {alarms / repeats:.2%} of samples")


if __name__ == "__main__":
    main()
