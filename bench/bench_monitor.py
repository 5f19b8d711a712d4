"""Monitor benchmark: false-alarm rate on fresh samples of the training distribution, and detection
rate on shifted samples, with the trained digits model of the current project (run `make repro`).

- fresh: random samples of the held-out images (validation + test splits, never trained on);
- shifted: random samples of the same held-out images with scanner noise (sigma 20 and 60 grey
  levels, as `digits_noisy`), and the same images 20 % brighter;
each judged by the monitor's tests (image statistics, embeddings, predictions) at the default
thresholds. Then the same for a table (synthetic: two numeric and two categorical features,
2,000 reference rows): fresh samples, and a numeric feature shifted by a quarter of its standard
deviation. Then real tables that ship with installed packages (penguins, and scikit-learn's iris, wine,
breast cancer and diabetes): each split as the pipeline splits it, a scikit-learn model trained on the
training split standing in for the pipeline's, and fresh samples of its held-out rows (validation + test,
the size of its test split, at least monitor.min_examples) judged against the training split.
Usage: python bench/bench_monitor.py [--repeats N] [--size N] [--tables-only]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.core.spec import DataSpec, FeatureSpec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a tiny run: checks the benchmark still works")
    parser.add_argument("--tables-only", action="store_true", help="only the real tables (no project needed)")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.size = 3, 60
    if args.tables_only:
        from pipeline.core.config import MonitorConfig

        real_tables(args.repeats, MonitorConfig())
        return

    from pipeline.core.config import load_config
    from pipeline.core.spec import load as load_spec
    from pipeline.ml.models import feature_extractor, load_trained_model
    from pipeline.ops import monitoring

    config = load_config("params.yaml")
    spec = load_spec(config.paths.prepared)
    model = load_trained_model(config.paths.model)
    extractor = feature_extractor(model)
    input_name = spec.image.name
    reference = monitoring.read_reference(config.paths.prepared, spec)[0][input_name]
    held_out = np.concatenate(
        [
            monitoring.read_reference(config.paths.prepared, spec, split)[0][input_name]
            for split in ("validation", "test")
        ]
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
                {input_name: reference},
                {input_name: current},
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
    real_tables(args.repeats, config.monitor)


def table(repeats: int, size: int, settings) -> None:
    from pipeline.ops import monitoring

    spec = DataSpec(
        kind="table",
        task="classification",
        label="label",
        classes=["a", "b", "c"],
        fingerprint="bench",
        schema=None,
        features=[
            FeatureSpec(column=name, name=name, type=kind)
            for name, kind in (("x1", "numeric"), ("x2", "numeric"), ("c1", "categorical"), ("c2", "categorical"))
        ],
    )
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


def real_tables(repeats: int, settings) -> None:
    """False alarms on fresh samples of real held-out rows, per family of checks (the target: at most 2 %)."""
    import pandas as pd
    from sklearn import datasets

    from pipeline.data import sources

    def sklearn_table(name: str) -> tuple[pd.DataFrame, str, str]:
        loaded = getattr(datasets, f"load_{name}")(as_frame=True)
        table = loaded.frame.rename(columns={"target": "outcome"})
        if name == "diabetes":
            return table, "outcome", "regression"
        table["outcome"] = [str(loaded.target_names[value]) for value in loaded.target]
        return table, "outcome", "classification"

    def penguins() -> tuple[pd.DataFrame, str, str]:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as scratch:
            path = sources.write_penguins_csv(Path(scratch) / "penguins.csv")
            return sources.load_table(path, "csv"), "species", "classification"

    loaders = {"penguins": penguins, **{name: lambda name=name: sklearn_table(name) for name in
               ("iris", "wine", "breast_cancer", "diabetes")}}  # fmt: skip
    generator = np.random.default_rng(2)
    print(f"real tables, {repeats} fresh samples of held-out rows each (retrain = any family fired):")
    print("| table | training rows | sample of held-out rows | retrain (false alarms) | by family | detected |")
    for name, load in loaders.items():
        print(f"| {name} | " + false_alarms(*load(), repeats, settings, generator) + " |")


def false_alarms(table, label: str, task: str, repeats: int, settings, generator) -> str:
    """Splits `table` as the pipeline does and judges fresh samples of its held-out rows; returns a table row."""
    from pipeline.core.tasks import task as task_named
    from pipeline.data.modalities.table import clean_table
    from pipeline.data.preparation import split_indices
    from pipeline.ops import monitoring

    the_task = task_named(task)
    classes = sorted(str(value) for value in table[label].dropna().unique()) if the_task.has_classes else None
    features, labels, specs = clean_table(table, label, the_task, classes, "impute")
    indices = split_indices(labels, the_task, 0.15, 0.15, seed=42)
    held_out = np.concatenate([indices["validation"], indices["test"]])
    size = min(len(held_out), max(settings.min_examples, len(indices["test"])))
    spec = DataSpec(
        kind="table", task=task, label=label, classes=classes, fingerprint="bench", schema=None, features=specs
    )
    model = stand_in_model(features.iloc[indices["train"]], labels[indices["train"]], specs, task)

    def columns(rows: np.ndarray) -> dict:
        return {feature.name: features[feature.name].to_numpy()[rows] for feature in specs}

    def outputs(rows: np.ndarray) -> np.ndarray:
        chosen = features.iloc[rows]
        return model.predict_proba(chosen) if the_task.has_classes else model.predict(chosen)

    reference, reference_outputs = columns(indices["train"]), outputs(indices["train"])
    shifted = next(feature.name for feature in specs if feature.column_type.numbers)
    step = float(np.nanstd(reference[shifted]))
    alarms, detected, by_family = 0, 0, {}
    for _ in range(repeats):
        rows = generator.choice(held_out, size=size, replace=False)
        report = monitoring.compare(reference, columns(rows), spec, settings, reference_outputs, outputs(rows))
        alarms += monitoring.decide(report)["retrain"]
        for family, result in report["families"].items():
            by_family[family] = by_family.get(family, 0) + bool(result["drifted"])
        moved = columns(rows)  # the control: the same sample with its first numeric feature one sd higher
        moved[shifted] = moved[shifted] + step
        control = monitoring.compare(reference, moved, spec, settings, reference_outputs, outputs(rows))
        detected += monitoring.decide(control)["retrain"]
    families = ", ".join(f"{family} {count / repeats:.1%}" for family, count in by_family.items())
    return (
        f"{len(indices['train'])} | {size} of {len(held_out)} | {alarms / repeats:.1%} | {families}"
        f" | {shifted} +1 sd: {detected / repeats:.0%}"
    )


def stand_in_model(features, labels: np.ndarray, specs: list, task: str):
    """A scikit-learn model on the training split (imputed, scaled, one-hot): its predictions stand in for
    the pipeline's model, whose outputs the prediction check compares."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [spec.name for spec in specs if spec.column_type.numbers]
    categorical = [spec.name for spec in specs if not spec.column_type.numbers]
    prepare = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    from pipeline.core.tasks import task as task_named

    estimator = LogisticRegression(max_iter=1000) if task_named(task).has_classes else Ridge()
    return make_pipeline(prepare, estimator).fit(features, labels)


if __name__ == "__main__":
    main()
