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
import json
import logging
import shutil
import sys
from pathlib import Path

from pipeline.core.config import Config, FinetuneConfig
from pipeline.core.metrics import higher_is_better
from pipeline.core.outputs import replace_directory, scratch_directory, write_json_atomic
from pipeline.core.runner import StageError, StageResult, format_metrics, run_stage
from pipeline.data.preparation import SPEC_FILE
from pipeline.ml.distribute import setup_tensorflow
from pipeline.ml.training import epoch_logging_callback, write_history

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
SKIPPED_FILE = "SKIPPED.txt"

# finetune.base -> (keras.applications class, the input scaling its weights expect; None = built in)
BACKBONES = {
    "mobilenet_v2": ("MobileNetV2", "tf"),
    "mobilenet_v3_small": ("MobileNetV3Small", None),
    "mobilenet_v3_large": ("MobileNetV3Large", None),
    "efficientnet_b0": ("EfficientNetB0", None),
    "resnet50": ("ResNet50", "caffe"),
}


def prepare_target(config: Config) -> StageResult:
    from pipeline.data import engine, ingestion, preparation, validation

    target = config.target_config()
    root = Path(config.paths.finetune_data)
    if not config.finetune_skip_reason:
        target = fitted_to_base(config, target)
    if config.finetune_skip_reason:
        for directory in (root, Path(target.paths.reports)):  # the stage's outputs, each saying why it is empty
            replace_directory_with_note(directory, f"Skipped: {config.finetune_skip_reason}.\n")
        return StageResult(summary=f"skipped: {config.finetune_skip_reason} -> {root}")
    for directory in (root, Path(target.paths.reports)):
        (directory / SKIPPED_FILE).unlink(missing_ok=True)
    ingestion.snapshot(target)
    validated = validation.validate_configured(target)
    description, data_path, schema = validation.validated_files(Path(target.paths.validated))
    prepared = Path(target.paths.prepared)
    with scratch_directory(prepared.parent, prepared.name) as scratch:
        staging = Path(scratch) / "out"
        staging.mkdir()
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
        replace_directory(staging, prepared)
    counts = {split: spec["splits"][split]["num_examples"] for split in preparation.SPLITS}
    return StageResult(
        summary=f"target {target.data.source}: {validated.summary.split(' -> ')[0]};"
        f" labelled train {counts['train']} / validation {counts['validation']} / test {counts['test']} -> {prepared}",
        metrics={f"target_{split}_examples": count for split, count in counts.items()},
    )


def fitted_to_base(config: Config, target: Config) -> Config:
    """finetune.base=trained reads the trained model's inputs: image targets are prepared at its image
    size and colour mode (resized, channels converted), so any image folder can be fine-tuned onto the
    default target. Explicit finetune.data.image_size wins; a mismatch is then caught by check_same_inputs."""
    spec_file = Path(config.paths.prepared) / SPEC_FILE
    if config.finetune.base != "trained" or target.data.kind != "image" or not spec_file.is_file():
        return target
    image = json.loads(spec_file.read_text()).get("image")
    if not image:
        return target
    size = target.data.image_size or [image["height"], image["width"]]
    mode = "rgb" if image["channels"] == 3 else "grayscale"
    if (size, mode) != (target.data.image_size, target.data.color_mode):
        log.info("the target is prepared at %dx%d %s, the trained base's input", size[0], size[1], mode)
    return dataclasses.replace(target, data=dataclasses.replace(target.data, image_size=size, color_mode=mode))


def replace_directory_with_note(directory: Path, note: str) -> None:
    """Replaces `directory` by one holding only a note saying why it is empty (a DVC output must exist)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with scratch_directory(directory.parent, directory.name) as scratch:
        staging = Path(scratch) / "out"
        staging.mkdir()
        (staging / SKIPPED_FILE).write_text(note)
        replace_directory(staging, directory)


def check_same_inputs(source_spec: dict, target_spec: dict, target_source: str) -> None:
    """finetune.base=trained reuses the trained model's inputs: the target must have the same ones."""

    def inputs(spec: dict) -> str:
        if spec["kind"] == "image":
            image = spec["image"]
            return f"{image['height']}x{image['width']}x{image['channels']} images"
        return "columns " + ", ".join(f"{feature['name']} ({feature['type']})" for feature in spec["features"])

    if inputs(source_spec) != inputs(target_spec):
        raise StageError(
            f"finetune.base=trained reuses the trained model, which reads {inputs(source_spec)}, but the target"
            f" ({target_source}) has {inputs(target_spec)}. Set finetune.data.image_size / color_mode to match,"
            " or use a keras.applications base (finetune.base)."
        )


def build_backbone(name: str, size: int, weights: str | None):
    """A `keras.applications` backbone without its classifier, global-average-pooled.

    `weights`: "imagenet" (downloads once into ~/.keras), a local weights file of the same
    architecture without top, or None (random initialisation).
    """
    import keras

    class_name, _ = BACKBONES[name]
    application = getattr(keras.applications, class_name)
    return application(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")


def backbone_inputs(inputs, spec: dict, size: int, base: str):
    """Raw pixels -> what the backbone expects: resized, three channels, scaled as its weights were trained."""
    import keras

    from pipeline.ml.models import ImagenetPreprocess

    features = keras.layers.Resizing(size, size, name="resize")(inputs)
    if spec["image"]["channels"] == 1:
        features = keras.layers.Concatenate(name="grey_to_rgb")([features, features, features])
    mode = BACKBONES[base][1]
    if mode is not None:
        features = ImagenetPreprocess(mode, name="backbone_preprocess")(features)
    return features


def build_transfer_model(settings: FinetuneConfig, target_spec: dict, source=None, weights: str | None = None):
    """(the model: base + new head for the target task, its base). `source`: the trained model
    (finetune.base=trained); otherwise the keras.applications backbone `settings.base`."""
    import keras

    from pipeline.ml.features import build_inputs
    from pipeline.ml.models import feature_extractor, output_layer

    inputs = build_inputs(target_spec)
    if settings.base == "trained":
        base = feature_extractor(source)
        features = base(inputs, training=False)
    else:
        size = settings.backbone_input_size
        base = build_backbone(settings.base, size, weights)
        features = base(backbone_inputs(inputs, target_spec, size, settings.base), training=False)
    if settings.head_dropout:
        features = keras.layers.Dropout(settings.head_dropout, name="head_dropout")(features)
    model = keras.Model(inputs, output_layer(features, target_spec), name=f"finetuned_{settings.base}")
    return model, base


def freeze(base) -> None:
    base.trainable = False


def unfreeze_top(base, count: int) -> list[str]:
    """Makes the top `count` layers of `base` that have weights trainable, every other layer frozen.

    BatchNormalization layers are never unfrozen: a frozen BatchNormalization layer runs in
    inference mode in Keras 3, so its moving statistics are kept. Returns the unfrozen layers' names.
    """
    import keras

    base.trainable = True
    for layer in base.layers:  # `base.trainable = True` alone does not undo an earlier per-layer choice
        layer.trainable = True
    candidates = [
        layer
        for layer in base.layers
        if layer.trainable_weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    chosen = candidates[max(0, len(candidates) - count) :] if count else []
    for layer in base.layers:
        layer.trainable = any(layer is picked for picked in chosen)
    return [layer.name for layer in chosen]


def _fit(model, train_dataset, validation_dataset, epochs: int, patience: int, callbacks: list) -> list[dict]:
    import keras

    if epochs == 0:
        return []
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    history = model.fit(
        train_dataset,
        validation_data=validation_dataset,
        epochs=epochs,
        callbacks=[stopping, *callbacks],
        shuffle=False,  # the dataset is shuffled already
        verbose=1 if sys.stdout.isatty() else 2,
    )
    names = list(history.history)
    return [{name: float(history.history[name][epoch]) for name in names} for epoch in range(len(history.epoch))]


def fine_tune(model, base, spec: dict, train_dataset, validation_dataset, settings: FinetuneConfig, log_epochs=None):
    """Both phases; returns (history rows with a `phase` column, the names of the unfrozen layers)."""
    import keras

    from pipeline.ml.models import compile_for_task

    log_epochs = log_epochs or (lambda first_step: [])
    freeze(base)
    # A new optimizer belongs to the strategy the model was built under (OneDeviceStrategy on one GPU).
    with model.distribute_strategy.scope():
        compile_for_task(model, spec, keras.optimizers.Adam(settings.head_learning_rate))
    log.info("phase 1: base frozen, training the new head (%d trainable weights)", len(model.trainable_weights))
    head = _fit(
        model,
        train_dataset,
        validation_dataset,
        settings.head_epochs,
        settings.early_stopping_patience,
        log_epochs(0),
    )
    unfrozen = unfreeze_top(base, settings.unfreeze_layers)
    rows = [{"phase": 1, **row} for row in head]
    if settings.unfreeze_layers and settings.fine_tune_epochs:
        with model.distribute_strategy.scope():
            compile_for_task(model, spec, keras.optimizers.Adam(settings.fine_tune_learning_rate))
        log.info("phase 2: fine-tuning the head and %s at learning rate %g", unfrozen, settings.fine_tune_learning_rate)
        tuned = _fit(
            model,
            train_dataset,
            validation_dataset,
            settings.fine_tune_epochs,
            settings.early_stopping_patience,
            log_epochs(len(rows)),
        )
        rows += [{"phase": 2, **row} for row in tuned]
    return [{"epoch": index, **row} for index, row in enumerate(rows)], unfrozen


def build_scratch_model(config: Config, target_spec: dict):
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
    from pipeline.ml.evaluation import evaluate_model, test_metrics
    from pipeline.ml.features import load_spec, make_dataset
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

    def datasets():
        train = make_dataset(prepared, spec, "train", batch_size, shuffle=True, seed=config.base.seed)
        return train, make_dataset(prepared, spec, "validation", batch_size)

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
    scratch_rows = _fit(
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
    metric = "accuracy" if spec["task"] == "classification" else "rmse"
    higher = higher_is_better(metric)
    gain = (results[metric] - baseline[metric]) * (1 if higher else -1)
    comparison = {
        "base": settings.base,
        "target": target.data.source,
        "labelled_train_examples": spec["splits"]["train"]["num_examples"],
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
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    with scratch_directory(target_dir.parent, target_dir.name) as scratch_dir:
        staging = Path(scratch_dir) / "out"
        staging.mkdir()
        model.save(staging / MODEL_FILE)
        replace_directory(staging, target_dir)
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


def main(params_file: str = "params.yaml") -> None:
    run_stage("finetune", params_file, run)


def prepare_target_main(params_file: str = "params.yaml") -> None:
    run_stage("prepare_target", params_file, prepare_target)
