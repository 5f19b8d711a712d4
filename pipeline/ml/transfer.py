"""Transfer learning: a base (the pipeline's trained model without its output layer, or a `keras.applications`
backbone) under a new head for the target task, and the two-phase Keras recipe that fine-tunes it:
1. the base is frozen and the new head trained;
2. the top layers with weights are unfrozen (BatchNormalization layers stay frozen, hence in inference mode)
   and the model is recompiled with a low learning rate and fine-tuned.
The `finetune` stage (`pipeline.stages.finetune`) prepares the data, runs this and measures the gain.
"""

from __future__ import annotations

import logging
import sys

from pipeline.core.config import FinetuneConfig

log = logging.getLogger(__name__)

# finetune.base -> (keras.applications class, the input scaling its weights expect; None = built in)
BACKBONES = {
    "mobilenet_v2": ("MobileNetV2", "tf"),
    "mobilenet_v3_small": ("MobileNetV3Small", None),
    "mobilenet_v3_large": ("MobileNetV3Large", None),
    "efficientnet_b0": ("EfficientNetB0", None),
    "resnet50": ("ResNet50", "caffe"),
}


def build_backbone(name: str, size: int, weights: str | None):
    """A `keras.applications` backbone without its classifier, global-average-pooled.

    `weights`: "imagenet" (downloads once into ~/.keras), a local weights file of the same
    architecture without top, or None (random initialisation).
    """
    import keras

    class_name, _ = BACKBONES[name]
    application = getattr(keras.applications, class_name)
    return application(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")


def backbone_inputs(inputs, spec, size: int, base: str):
    """Raw pixels -> what the backbone expects: resized, three channels, scaled as its weights were trained."""
    import keras

    from pipeline.ml.models import ImagenetPreprocess

    features = keras.layers.Resizing(size, size, name="resize")(inputs[spec.image.name])
    if spec.image.channels == 1:
        features = keras.layers.Concatenate(name="grey_to_rgb")([features, features, features])
    mode = BACKBONES[base][1]
    if mode is not None:
        features = ImagenetPreprocess(mode, name="backbone_preprocess")(features)
    return features


def build_transfer_model(settings: FinetuneConfig, target_spec, source=None, weights: str | None = None):
    """(the model: base + new head for the target task, its base). `source`: the trained model
    (finetune.base=trained); otherwise the keras.applications backbone `settings.base`."""
    import keras

    from pipeline.ml.features import Dropout, build_inputs
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
        features = Dropout(settings.head_dropout, name="head_dropout")(features)  # a linear text base: sparse
    from pipeline.ml.modalities import model_modality

    outputs = model_modality(target_spec.kind).outputs(output_layer(features, target_spec), inputs, target_spec)
    model = keras.Model(inputs, outputs, name=f"finetuned_{settings.base}")
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


def fit_with_early_stopping(
    model, train_dataset, validation_dataset, epochs: int, patience: int, callbacks: list
) -> list[dict]:
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


def fine_tune(model, base, spec, train_dataset, validation_dataset, settings: FinetuneConfig, log_epochs=None):
    """Both phases; returns (history rows with a `phase` column, the names of the unfrozen layers)."""
    import keras

    from pipeline.ml.models import compile_for_task

    log_epochs = log_epochs or (lambda first_step: [])
    freeze(base)
    # A new optimizer belongs to the strategy the model was built under (OneDeviceStrategy on one GPU).
    with model.distribute_strategy.scope():
        compile_for_task(model, spec, keras.optimizers.Adam(settings.head_learning_rate))
    log.info("phase 1: base frozen, training the new head (%d trainable weights)", len(model.trainable_weights))
    head = fit_with_early_stopping(
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
        tuned = fit_with_early_stopping(
            model,
            train_dataset,
            validation_dataset,
            settings.fine_tune_epochs,
            settings.early_stopping_patience,
            log_epochs(len(rows)),
        )
        rows += [{"phase": 2, **row} for row in tuned]
    return [{"epoch": index, **row} for index, row in enumerate(rows)], unfrozen
