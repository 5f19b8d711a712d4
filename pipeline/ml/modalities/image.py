"""Images on the model side: raw 0-255 pixels in (one named input), normalised inside the model with the
training split's per-channel statistics; random augmentation in training only."""

from __future__ import annotations

import numpy as np

from pipeline.core import drift
from pipeline.ml.modalities import ModelModality, RequestError

SHIFTED_WIDTH = 24
"""The narrowest image the behavioural check shifts by a pixel."""
LINEAR_PIXELS = 256
"""Values per image the linear baseline reads at most (larger images are averaged over square blocks)."""


def pooled_pixels(images: np.ndarray, limit: int = LINEAR_PIXELS) -> np.ndarray:
    """(N, values) of (N, height, width, channels) images, averaged over k x k blocks with the smallest k that
    keeps at most `limit` values (edges that do not fill a block are dropped)."""
    images = np.asarray(images, dtype=np.float32)
    count, height, width, channels = images.shape
    block = 1
    while (height // block) * (width // block) * channels > limit and block < min(height, width):
        block += 1
    rows, columns = height // block, width // block
    images = images[:, : rows * block, : columns * block]
    pooled = images.reshape(count, rows, block, columns, block, channels).mean(axis=(2, 4))
    return pooled.reshape(count, -1)


class ImageModel(ModelModality):
    kind = "image"
    uses_embeddings = True

    def record_features(self, spec) -> dict:
        import tensorflow as tf

        return {spec.image.name: tf.io.FixedLenFeature([], tf.string)}

    def decode(self, parsed, spec) -> dict:
        import tensorflow as tf

        image = spec.image
        pixels = tf.io.decode_raw(parsed[image.name], tf.uint8)
        return {image.name: tf.cast(tf.reshape(pixels, [-1, *image.shape]), tf.float32)}

    def inputs(self, spec) -> dict:
        import keras

        return {spec.image.name: keras.Input(shape=spec.image.shape, name=spec.image.name)}

    def preprocess(self, spec, inputs, hyperparameters):
        import keras

        from pipeline.ml.models import augment

        image = spec.image
        pixels = augment(inputs[image.name], hyperparameters)
        return keras.layers.Normalization(
            axis=-1, mean=image.mean, variance=[max(value, 1e-6) for value in image.variance], name="normalize"
        )(pixels)

    def mlp_features(self, features):
        import keras

        return keras.layers.Flatten(name="flatten")(features)

    def sequence(self, features):
        """(batch, height, width, channels) -> (batch, height, width * channels): one step per image row."""
        import keras

        _, height, width, channels = features.shape
        return keras.layers.Reshape((height, width * channels), name="rows_as_sequence")(features)

    def describe_inputs(self, spec) -> str:
        return f"{spec.image.height}x{spec.image.width}x{spec.image.channels} images"

    def request_batch(self, instances, spec) -> dict[str, np.ndarray]:
        image = spec.image
        shape = image.shape
        batch = np.empty((len(instances), *shape), dtype=np.float32)
        for index, instance in enumerate(instances):
            field = f"instances[{index}]"
            if isinstance(instance, dict):
                if set(instance) != {image.name}:
                    raise RequestError(f'{field}: expected {{"{image.name}": pixels}}, got keys {sorted(instance)}')
                instance, field = instance[image.name], f"{field}.{image.name}"
            try:
                pixels = np.asarray(instance, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise RequestError(f"{field}: expected nested lists of numbers ({error})") from None
            if pixels.shape == shape[:2] and shape[2] == 1:
                pixels = pixels[..., None]
            if pixels.shape != shape:
                raise RequestError(
                    f"{field}: expected shape {list(shape)} (height, width, channels), got {list(pixels.shape)}"
                )
            if not np.isfinite(pixels).all():
                raise RequestError(f"{field}: pixels must be finite numbers (found NaN or infinity)")
            if pixels.min() < 0 or pixels.max() > 255:
                raise RequestError(
                    f"{field}: pixels must be raw values in [0, 255], got [{pixels.min():g}, {pixels.max():g}]"
                )
            batch[index] = pixels
        return {image.name: batch}

    def columnar_instances(self, inputs, spec) -> list:
        if isinstance(inputs, dict):
            inputs = inputs.get(spec.image.name)
        if not isinstance(inputs, list):
            raise RequestError(f'"inputs" must be a list of images (or {{"{spec.image.name}": [...]}})')
        return inputs

    def request_instances(self, batch, spec) -> list:
        return np.asarray(batch[spec.image.name]).tolist()

    def mlflow_schema(self, spec):
        from mlflow.types import Schema, TensorSpec

        return Schema([TensorSpec(np.dtype("float32"), (-1, *spec.image.shape), name=spec.image.name)])

    def reference_values(self, batches, spec) -> dict[str, np.ndarray]:
        name = spec.image.name
        return {name: np.concatenate([np.asarray(batch[name]) for batch in batches])}

    def linear_inputs(self, features, spec):
        return pooled_pixels(features[spec.image.name])

    def linear_encoder(self, spec):
        from sklearn.preprocessing import StandardScaler

        return StandardScaler()

    def perturbations(self, features, spec, generator):
        """Pixels 5 % darker; and, for images at least `SHIFTED_WIDTH` pixels wide (where one pixel is a small
        part of the picture, not an eighth of an 8x8 digit), shifted one pixel to the right."""
        name = spec.image.name
        images = np.asarray(features[name], dtype=np.float32)
        changes = [("pixels 5 % darker", {name: images * 0.95}, 0.0)]
        if images.shape[2] >= SHIFTED_WIDTH:
            shifted = np.concatenate([images[:, :, :1], images[:, :, :-1]], axis=2)  # the left edge column repeated
            changes.append(("shifted one pixel to the right", {name: shifted}, 0.0))
        return changes

    def model_batch(self, features, start, end) -> dict[str, np.ndarray]:
        return {name: values[start:end] for name, values in features.items()}

    def drift_families(self, reference, current, spec, settings, embeddings, held_out=None) -> dict:
        name = spec.image.name
        ref_stats, new_stats = drift.image_statistics(reference[name]), drift.image_statistics(current[name])
        tests = {
            statistic: drift.ks_test(ref_stats[statistic], new_stats[statistic]) for statistic in drift.IMAGE_STATISTICS
        }
        families = {"image_statistics": {"tests": tests, "drifted": drift.flag(tests, settings.p_value)}}
        reference_embeddings, current_embeddings = embeddings
        if reference_embeddings is not None:
            ref_pc, new_pc = drift.principal_components(
                reference_embeddings, current_embeddings, settings.embedding_components
            )
            tests = {
                f"pc{index + 1}": drift.ks_test(ref_pc[:, index], new_pc[:, index]) for index in range(ref_pc.shape[1])
            }
            families["embeddings"] = {"tests": tests, "drifted": drift.flag(tests, settings.p_value)}
        return families

    def report_plots(self, samples, spec) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        name = spec.image.name
        parts = []
        reference, current = samples["reference"][name], samples["current"][name]
        ref_stats, new_stats = drift.image_statistics(reference), drift.image_statistics(current)
        figure, axes = plt.subplots(1, len(drift.IMAGE_STATISTICS), figsize=(4 * len(drift.IMAGE_STATISTICS), 3))
        for axis, statistic in zip(axes, drift.IMAGE_STATISTICS, strict=True):
            drift.histograms(axis, ref_stats[statistic], new_stats[statistic], statistic)
        parts.append("<h2>Image statistics</h2>" + drift.figure_html(figure))
        reference_embeddings, current_embeddings = samples["embeddings"]
        if reference_embeddings is not None:
            ref_pc, new_pc = drift.principal_components(reference_embeddings, current_embeddings, 2)
            figure, axis = plt.subplots(figsize=(5, 5))
            axis.scatter(ref_pc[:, 0], ref_pc[:, 1], s=4, alpha=0.4, label="training")
            axis.scatter(new_pc[:, 0], new_pc[:, 1], s=4, alpha=0.4, label="new data")
            axis.set_xlabel("PC1")
            axis.set_ylabel("PC2")
            axis.legend()
            axis.set_title("Penultimate-layer embeddings")
            parts.append("<h2>Embeddings</h2>" + drift.figure_html(figure))
        new_images = current[:16]
        figure, axes = plt.subplots(1, len(new_images), figsize=(len(new_images), 1.3))
        for axis, picture in zip(np.atleast_1d(axes), new_images, strict=True):
            axis.imshow(picture.squeeze(), cmap="gray" if picture.shape[-1] == 1 else None, vmin=0, vmax=255)
            axis.axis("off")
        parts.append("<h2>Examples of the new data</h2>" + drift.figure_html(figure))
        return parts


MODALITY = ImageModel()
