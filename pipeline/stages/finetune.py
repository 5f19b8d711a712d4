"""Stages `prepare_target` and `finetune`: transfer learning onto a second, small dataset.

`prepare_target` runs the same ingest, validation gate and preprocessing as the main data on
`finetune.data` (the target task) into `paths.finetune_data`, keeping only
`finetune.labelled_per_class` labelled training examples per class.

`finetune` is the two-phase Keras recipe:
1. the base (the pipeline's trained model without its output layer, or a `keras.applications`
   backbone) is frozen and a new head for the target task is trained;
2. the top `finetune.unfreeze_layers` layers with weights are unfrozen (BatchNormalization layers
   stay frozen, hence in inference mode), and the model is recompiled with a low learning rate
   and fine-tuned.
The same architecture is also trained from scratch on the same target data for the same number
of epochs, and both are scored on the target's test split, so the transfer gain is measured.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from pathlib import Path

from pipeline.core import spec as data_spec
from pipeline.core.config import Config
from pipeline.core.errors import MissingSuiteError
from pipeline.core.metrics import higher_is_better
from pipeline.core.outputs import staged_directory, write_json_atomic
from pipeline.core.runner import StageError, StageResult, format_metrics, run_stage
from pipeline.core.spec import SPLITS
from pipeline.ml.distribute import setup_tensorflow
from pipeline.ml.training import epoch_logging_callback, write_history
from pipeline.ml.transfer import build_transfer_model, fine_tune, fit_with_early_stopping

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
SKIPPED_FILE = "SKIPPED.txt"


def prepare_target(config: Config) -> StageResult:
    target = config.target_config()
    root = Path(config.paths.finetune_data)
    if config.finetune_skip_reason:
        for directory in (root, Path(target.paths.reports)):  # the stage's outputs, each saying why it is empty
            replace_directory_with_note(directory, f"Skipped: {config.finetune_skip_reason}.\n")
        return StageResult(summary=f"skipped: {config.finetune_skip_reason} -> {root}")
    from pipeline.data import engine, ingestion, preparation, validation

    target = fitted_to_base(config, target)
    for directory in (root, Path(target.paths.reports)):
        (directory / SKIPPED_FILE).unlink(missing_ok=True)
    ingestion.snapshot(target)
    try:
        validated = validation.validate_configured(target)
    except MissingSuiteError as error:
        hint = "For the fine-tuning target: `pipeline validate --profile --target`."
        raise MissingSuiteError(f"{error} {hint}") from error
    description, data_path, schema = validation.validated_files(Path(target.paths.validated))
    prepared = Path(target.paths.prepared)
    with staged_directory(prepared) as staging:
        spec = preparation.preprocess(
            description,
            data_path,
            target.data,
            target.preprocess,
            target.base.seed,
            staging,
            schema,
            train_per_class=config.finetune.labelled_per_class,
            runner=engine.from_config(target),
        )
    counts = {split: spec.split(split).num_examples for split in SPLITS}
    return StageResult(
        summary=f"target {target.data.source}: {validated.summary.split(' -> ')[0]};"
        f" labelled train {counts['train']} / validation {counts['validation']} / test {counts['test']} -> {prepared}",
        metrics={f"target_{split}_examples": count for split, count in counts.items()},
    )


def fitted_to_base(config: Config, target: Config) -> Config:
    """finetune.base=trained reads the trained model's inputs: image targets are prepared at its image
    size and colour mode (resized, channels converted), so any image folder can be fine-tuned onto the
    default target. Explicit finetune.data.image_size wins; a mismatch is then caught by check_same_inputs."""
    spec_file = Path(config.paths.prepared) / data_spec.SPEC_FILE
    if config.finetune.base != "trained" or not target.data.kind_facts.images or not spec_file.is_file():
        return target
    image = data_spec.load(config.paths.prepared).image
    if image is None:
        return target
    size = target.data.image_size or [image.height, image.width]
    mode = image.color_mode
    if (size, mode) != (target.data.image_size, target.data.color_mode):
        log.info("the target is prepared at %dx%d %s, the trained base's input", size[0], size[1], mode)
    return dataclasses.replace(target, data=dataclasses.replace(target.data, image_size=size, color_mode=mode))


def replace_directory_with_note(directory: Path, note: str) -> None:
    """Replaces `directory` by one holding only a note saying why it is empty (a DVC output must exist)."""
    with staged_directory(directory) as staging:
        (staging / SKIPPED_FILE).write_text(note)


def check_same_inputs(source_spec, target_spec, target_source: str) -> None:
    """finetune.base=trained reuses the trained model's inputs: the target must have the same ones."""
    from pipeline.ml.modalities import model_modality

    def inputs(spec) -> str:
        return model_modality(spec.kind).describe_inputs(spec)

    if inputs(source_spec) != inputs(target_spec):
        raise StageError(
            f"finetune.base=trained reuses the trained model, which reads {inputs(source_spec)}, but the target"
            f" ({target_source}) has {inputs(target_spec)}. Set finetune.data.image_size / color_mode to match,"
            " or use a keras.applications base (finetune.base)."
        )


def build_scratch_model(config: Config, target_spec):
    """The fine-tuned model's architecture with fresh weights, to measure what transfer adds."""
    import keras

    from pipeline.ml import hyperparameters as hyperparameter_file
    from pipeline.ml.models import build_model, compile_for_task

    settings = config.finetune
    if settings.base == "trained":
        hyperparameters = dict(hyperparameter_file.load(config.paths.hyperparameters))
        hyperparameters.update(optimizer="adam", learning_rate=settings.head_learning_rate)
        return build_model(hyperparameters, target_spec)
    model, _ = build_transfer_model(settings, target_spec, weights=None)
    return compile_for_task(model, target_spec, keras.optimizers.Adam(settings.head_learning_rate))


def plot_transfer(finetuned: list[dict], scratch: list[dict], path: Path, metric: str) -> Path:
    """Validation curves of the fine-tuned and the from-scratch model, and where phase 2 began."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    name = f"val_{metric}"
    axis.plot([row["epoch"] + 1 for row in finetuned], [row[name] for row in finetuned], label="fine-tuned")
    axis.plot([row["epoch"] + 1 for row in scratch], [row[name] for row in scratch], label="from scratch")
    second = [row["epoch"] + 1 for row in finetuned if row["phase"] == 2]
    if second:
        axis.axvline(second[0] - 0.5, color="grey", linestyle="--", linewidth=1)
        axis.annotate("phase 2: unfrozen", (second[0], axis.get_ylim()[0]), fontsize="small", color="grey")
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"validation {metric}")
    axis.set_title("Target task: transfer vs from scratch")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _skip(config: Config, reason: str) -> StageResult:
    """Writes the stage's declared outputs, each saying why there is nothing in it."""
    reports = Path(config.paths.reports) / "finetune"
    replace_directory_with_note(Path(config.paths.finetuned), f"Skipped: {reason}.\n")
    for name in ("figures", "transfer.json", "metrics.json", "holdout.json", "per_class.json"):
        shutil.rmtree(reports / name, ignore_errors=True)
    (reports / "figures").mkdir(parents=True)
    for name in ("transfer.json", "holdout.json", "per_class.json"):
        write_json_atomic(reports / name, {"skipped": reason})
    write_json_atomic(reports / "metrics.json", {"skipped": True})  # a DVC metric: the reason is in transfer.json
    for name in ("history.csv", "scratch_history.csv", "predictions.csv", "roc.csv"):
        write_history(reports / name, [{"skipped": reason}])
    return StageResult(summary=f"skipped: {reason}")


def run(config: Config) -> StageResult:
    if config.finetune_skip_reason:
        return _skip(config, config.finetune_skip_reason)
    # a keras.applications backbone is big enough for mixed precision to pay on a GPU
    strategy = setup_tensorflow(config, large_model=config.finetune.base != "trained")
    from pipeline.core.spec import load as load_spec
    from pipeline.ml.evaluation import evaluate_model, test_metrics
    from pipeline.ml.features import make_dataset
    from pipeline.ml.models import load_trained_model

    settings, target = config.finetune, config.target_config()
    spec = load_spec(target.paths.prepared)
    prepared = target.paths.prepared
    source = None
    if settings.base == "trained":
        check_same_inputs(load_spec(config.paths.prepared), spec, target.data.source)
        with strategy.scope():  # its weights become the new model's: they must live under the same strategy
            source = load_trained_model(config.paths.model)
    batch_size = settings.batch_size * strategy.num_replicas_in_sync

    # A few labelled examples make one or two batches: an epoch of one step barely moves the new head.
    steps = math.ceil(spec.split("train").num_examples / batch_size)
    repeats = math.ceil(settings.min_steps_per_epoch / max(steps, 1))

    def datasets():
        train = make_dataset(prepared, spec, "train", batch_size, shuffle=True, seed=config.base.seed)
        return train.repeat(repeats), make_dataset(prepared, spec, "validation", batch_size)

    with strategy.scope():
        model, base = build_transfer_model(settings, spec, source=source, weights=settings.weights)
    rows, unfrozen = fine_tune(
        model,
        base,
        spec,
        *datasets(),
        settings,
        log_epochs=lambda first: [epoch_logging_callback("finetune_", first)],
    )
    with strategy.scope():
        scratch = build_scratch_model(config, spec)
    scratch_rows = fit_with_early_stopping(
        scratch,
        *datasets(),
        settings.head_epochs + settings.fine_tune_epochs,
        settings.early_stopping_patience,
        [epoch_logging_callback("scratch_")],
    )
    scratch_rows = [{"epoch": index, **row} for index, row in enumerate(scratch_rows)]

    reports = Path(config.paths.reports) / "finetune"
    reports.mkdir(parents=True, exist_ok=True)
    results, key = evaluate_model(
        model, prepared, spec, reports, config.evaluate.roc_curve_points, metrics_file="holdout.json"
    )
    baseline = test_metrics(scratch, prepared, spec)
    metric = spec.task_type.headline_metric
    higher = higher_is_better(metric)
    gain = (results[metric] - baseline[metric]) * (1 if higher else -1)
    comparison = {
        "base": settings.base,
        "target": target.data.source,
        "labelled_train_examples": spec.split("train").num_examples,
        "test_examples": results["num_examples"],
        "unfrozen_layers": unfrozen,
        "epochs": {"finetuned": len(rows), "from_scratch": len(scratch_rows)},
        "finetuned": {name: results[name] for name in key if name in results},
        "from_scratch": {name: baseline[name] for name in key if name in baseline},
        f"transfer_gain_{metric}": gain,
        "transfer_wins": bool(gain > 0),
    }
    write_json_atomic(reports / "transfer.json", comparison)
    write_json_atomic(  # the DVC metrics: what people compare across experiments
        reports / "metrics.json",
        {f"finetuned_{metric}": results[metric], f"from_scratch_{metric}": baseline[metric], f"gain_{metric}": gain},
    )
    write_history(reports / "history.csv", rows)
    write_history(reports / "scratch_history.csv", scratch_rows)
    figure = plot_transfer(rows, scratch_rows, reports / "figures" / "transfer.png", "accuracy" if higher else "loss")

    target_dir = Path(config.paths.finetuned)
    with staged_directory(target_dir) as staging:
        model.save(staging / MODEL_FILE)
    if not gain > 0:
        log.warning(
            "transfer did not help: fine-tuned %s %.4f vs from scratch %.4f", metric, results[metric], baseline[metric]
        )
    return StageResult(
        summary=f"{settings.base} -> {target.data.source} ({comparison['labelled_train_examples']} labelled):"
        f" fine-tuned {format_metrics(results, [metric])} vs from scratch {format_metrics(baseline, [metric])}"
        f" (gain {gain:+.4f}) -> {target_dir / MODEL_FILE}",
        metrics={
            **{f"finetune_test_{name}": value for name, value in results.items()},
            **{f"scratch_test_{name}": value for name, value in baseline.items()},
            f"finetune_transfer_gain_{metric}": gain,
        },
        artifacts=[reports / "transfer.json", reports / "holdout.json", reports / "per_class.json", figure.parent],
    )


def fine_tunes(config: Config) -> bool:
    """Whether the stages of transfer learning run (and so open the pipeline's MLflow run), or skip."""
    return not config.finetune_skip_reason


def main(params_file: str = "params.yaml") -> None:
    run_stage("finetune", params_file, run, track=fine_tunes)


def prepare_target_main(params_file: str = "params.yaml") -> None:
    run_stage("prepare_target", params_file, prepare_target, track=fine_tunes)
