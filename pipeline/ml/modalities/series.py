"""Time series on the model side: one named (window,) input per value column, the raw values of the window's steps
(oldest first). Inside the model each column is normalised with the training block's mean and variance and the
columns are stacked into a sequence (batch, window, columns), which the RNN, CNN and Transformer families read
step by step and the MLP flattened. The head forecasts, for each of the `horizon` next steps, the correction to a
naive forecast of the window (the last value or the seasonal naive, whichever erred less on the training block;
scaled by the training block's corrections), and the model adds that forecast back: its output is the forecast in
the target's own units, so the SavedModel takes the raw last window and returns the next values, and a network
that learns nothing stays at a naive baseline.

Requests: `{"instances": [{"<column>": [window values]}]}`, or for a single column a plain list of values per
instance; a window of the wrong length, a NaN or a value that is not a number is a 400 naming it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from pipeline.core import drift
from pipeline.core.forecasts import AUTOREGRESSION, base_positions, relative_windows
from pipeline.ml.modalities import ModelModality, RequestError
from pipeline.ml.modalities.table import columns_as_rows


def change_statistics(windows: np.ndarray, relative: bool) -> tuple[float, float]:
    """(mean, standard deviation) of the step-to-step changes inside (N, window) windows; `relative`: of the
    changes as fractions of the value before them (growth rates)."""
    windows = np.asarray(windows, dtype=np.float64)
    changes = np.diff(windows, axis=1)
    if relative:
        changes = changes / windows[:, :-1]
    changes = changes.reshape(-1)
    changes = changes[np.isfinite(changes)]
    if len(changes) == 0:
        return 0.0, 0.0
    return float(changes.mean()), float(changes.std())


class SeriesModel(ModelModality):
    kind = "series"
    outputs_comparable = False
    ordered_steps = True

    def record_features(self, spec) -> dict:
        import tensorflow as tf

        return {feature.name: tf.io.FixedLenFeature([spec.series.window], tf.float32) for feature in spec.features}

    def inputs(self, spec) -> dict:
        import keras

        return {
            feature.name: keras.Input(shape=(spec.series.window,), name=feature.name, dtype="float32")
            for feature in spec.features
        }

    def preprocess(self, spec, inputs, hyperparameters):
        """Each column's window relative to its last value, in the training block's standard deviations: a
        series that has moved past the training block's levels (a trend) still gives the network the inputs it
        learnt from. `model.series_lookback` steps of it (the last ones; auto: all) are what the network reads;
        the naive forecast it corrects reads the whole window."""
        import keras

        window, steps = spec.series.window, []
        for feature in spec.features:
            values = keras.layers.Reshape((window, 1), name=f"window_steps_{feature.name}")(inputs[feature.name])
            last = keras.layers.Cropping1D((window - 1, 0), name=f"window_last_{feature.name}")(values)
            relative = keras.layers.Subtract(name=f"window_relative_{feature.name}")([values, last])
            steps.append(
                keras.layers.Rescaling(1.0 / max(feature.variance, 1e-12) ** 0.5, name=f"window_scaled_{feature.name}")(
                    relative
                )
            )
        sequence = keras.layers.Concatenate(name="window")(steps) if len(steps) > 1 else steps[0]
        lookback = hyperparameters.get("series_lookback", "auto")
        if lookback != "auto" and int(lookback) < window:  # the network reads the last steps only (searchable)
            sequence = keras.layers.Cropping1D((window - int(lookback), 0), name="lookback")(sequence)
        return sequence

    def mlp_features(self, features):
        import keras

        return keras.layers.Flatten(name="flatten")(features)

    def outputs(self, predictions, inputs, spec):
        """The forecast: the base forecast of the window (`spec.series.base`: the last value, each step the value
        one season before it, or the linear autoregression fitted on the training block) plus the learnt
        correction."""
        import keras

        series = spec.series
        if series.base == AUTOREGRESSION:
            base = self.autoregression(inputs, spec)
        else:
            target = keras.layers.Reshape((series.window, 1), name="target_steps")(inputs[spec.features[0].name])
            steps = []
            for position in base_positions(series.window, series.horizon, series.seasonal_period, series.base):
                cropped = keras.layers.Cropping1D(
                    (position, series.window - 1 - position), name=f"step_{len(steps) + 1}_base"
                )
                steps.append(keras.layers.Flatten(name=f"step_{len(steps) + 1}_base_value")(cropped(target)))
            base = keras.layers.Concatenate(name="naive_forecast")(steps) if len(steps) > 1 else steps[0]
        return keras.layers.Add(name="forecast", dtype="float32")([predictions, base])

    @staticmethod
    def autoregression(inputs, spec):
        """The target's last value plus the fitted linear function of every column's window relative to its last
        value (`pipeline.core.forecasts.autoregression_forecasts`, as frozen Keras layers)."""
        import keras

        window, fitted = spec.series.window, spec.series.autoregression
        relative = []
        for feature in spec.features:
            values = keras.layers.Reshape((window, 1), name=f"autoregression_steps_{feature.name}")(
                inputs[feature.name]
            )
            last = keras.layers.Cropping1D((window - 1, 0), name=f"autoregression_last_{feature.name}")(values)
            relative.append(keras.layers.Subtract(name=f"autoregression_relative_{feature.name}")([values, last]))
        # window-major (each step's columns side by side), as relative_windows flattens (N, window, columns)
        stacked = keras.layers.Concatenate(name="base_window")(relative) if len(relative) > 1 else relative[0]
        flat = keras.layers.Flatten(name="base_changes")(stacked)
        layer = keras.layers.Dense(spec.series.horizon, trainable=False, dtype="float32", name="autoregression")
        changes = layer(flat)
        layer.set_weights(
            [np.asarray(fitted["coefficients"], dtype=np.float32), np.asarray(fitted["intercept"], dtype=np.float32)]
        )
        # not autoregression_last_<x>: a column named `value`, the commonest name of a series, has that above
        target_last = keras.layers.Flatten(name="target_last_value")(
            keras.layers.Cropping1D((window - 1, 0), name="base_target_last")(
                keras.layers.Reshape((window, 1), name="base_target_steps")(inputs[spec.features[0].name])
            )
        )
        return keras.layers.Add(name="autoregression_forecast")([changes, target_last])

    def describe_inputs(self, spec) -> str:
        columns = ", ".join(feature.column for feature in spec.features)
        return f"windows of {spec.series.window} steps of {columns}"

    def request_batch(self, instances, spec) -> dict[str, np.ndarray]:
        window, features = spec.series.window, spec.features
        known = {feature.column for feature in features}
        columns = {feature.name: np.empty((len(instances), window), dtype=np.float32) for feature in features}
        for index, instance in enumerate(instances):
            field = f"instances[{index}]"
            if isinstance(instance, list) and len(features) == 1:
                instance = {features[0].column: instance}
            if not isinstance(instance, dict):
                raise RequestError(
                    f"{field}: expected an object of columns, each a list of the last {window} values"
                    f" ({sorted(known)}), got {type(instance).__name__}"
                )
            unknown = sorted(set(instance) - known - set(spec.dropped_columns or []) - {spec.series.time_column})
            if unknown:
                raise RequestError(f"{field}: unknown column {unknown[0]!r}; the model reads {sorted(known)}")
            for feature in features:
                where = f"{field}.{feature.column}"
                if feature.column not in instance:
                    raise RequestError(f"{where}: missing; the model reads the last {window} values of each column")
                values = instance[feature.column]
                if not isinstance(values, list) or len(values) != window:
                    got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
                    raise RequestError(f"{where}: expected a list of the last {window} values, oldest first; got {got}")
                if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
                    position = next(
                        position
                        for position, value in enumerate(values)
                        if not isinstance(value, (int, float)) or isinstance(value, bool)
                    )
                    raise RequestError(f"{where}[{position}]: {values[position]!r} is not a number")
                array = np.asarray(values, dtype=np.float64)
                if not np.isfinite(array).all():
                    position = int(np.flatnonzero(~np.isfinite(array))[0])
                    raise RequestError(
                        f"{where}[{position}]: {values[position]!r}; every value of the window must be a finite number"
                        " (fill a missing step before asking)"
                    )
                columns[feature.name][index] = array
        return columns

    def columnar_instances(self, inputs, spec) -> list:
        if isinstance(inputs, list) and len(spec.features) == 1:
            inputs = {spec.features[0].column: inputs}
        return columns_as_rows(inputs, "windows")

    def request_instances(self, batch, spec) -> list:
        size = len(next(iter(batch.values())))
        return [
            {  # each float32 as its shortest decimal (154.6, not 154.60000610351562): it reads back the same
                feature.column: [float(str(value)) for value in np.asarray(batch[feature.name], np.float32)[index]]
                for feature in spec.features
            }
            for index in range(size)
        ]

    def mlflow_schema(self, spec):
        from mlflow.types import Schema, TensorSpec

        window = spec.series.window
        return Schema([TensorSpec(np.dtype("float32"), (-1, window), name=feature.name) for feature in spec.features])

    def reference_values(self, batches, spec) -> dict[str, np.ndarray]:
        return {
            feature.name: np.concatenate([np.asarray(batch[feature.name]) for batch in batches])
            for feature in spec.features
        }

    def linear_inputs(self, features, spec):
        """Each column's window relative to its last value (a linear autoregression on the changes), flattened as
        the autoregressive base's own fit flattens them."""
        return relative_windows(np.stack([features[feature.name] for feature in spec.features], axis=2))

    def linear_encoder(self, spec):
        from sklearn.preprocessing import StandardScaler

        return StandardScaler()

    def perturbations(self, features, spec, generator):
        """The whole window of the forecast column moved up by its spread on the training block: the forecast
        should move up by as much (a level does not change the shape of what follows)."""
        target = spec.features[0]
        spread = max(target.variance, 0.0) ** 0.5
        moved = {**features, target.name: np.asarray(features[target.name], dtype=np.float64) + spread}
        return [(f"the {target.column} window moved up by its spread ({spread:.4g})", moved, spread)]

    def model_batch(self, features, start, end) -> dict[str, np.ndarray]:
        return {name: np.asarray(values[start:end], dtype=np.float32) for name, values in features.items()}

    def drift_families(self, reference, current, spec, settings, embeddings, held_out: Optional[dict] = None) -> dict:
        """Per value column, the step-to-step changes of the new windows against the training block's (as growth
        rates for a column whose training values are all positive, whose changes grow with its level): their
        mean moved by more than `monitor.series_change_shift` training standard deviations, or their spread by
        more than a factor `monitor.series_spread_ratio`. The level itself is reported, not judged: a trend moves
        it, and the model forecasts from the window's own last values."""
        tests, drifted = {}, []
        for feature in spec.features:
            # a series that is always positive is judged on its growth rates: its changes grow with its level
            relative = bool(np.nanmin(reference[feature.name]) > 0)
            ref_mean, ref_spread = change_statistics(reference[feature.name], relative)
            new_mean, new_spread = change_statistics(current[feature.name], relative)
            scale = max(ref_spread, 1e-12)
            shift = abs(new_mean - ref_mean) / scale
            ratio = max(new_spread, 1e-12) / scale
            tests[f"{feature.name} (change mean)"] = {
                "test": "shift in training sd",
                "statistic": shift,
                "bound": settings.series_change_shift,
            }
            tests[f"{feature.name} (change spread)"] = {
                "test": "ratio of sd",
                "statistic": ratio,
                "bound": settings.series_spread_ratio,
            }
            level = (np.nanmean(current[feature.name]) - feature.mean) / max(feature.variance, 1e-24) ** 0.5
            tests[f"{feature.name} (level)"] = {"test": "shift in training sd, reported", "statistic": float(level)}
            if shift > settings.series_change_shift:
                drifted.append(f"{feature.name} (change mean)")
            if not 1 / settings.series_spread_ratio <= ratio <= settings.series_spread_ratio:
                drifted.append(f"{feature.name} (change spread)")
        return {"series": {"tests": tests, "drifted": drifted}}

    def report_plots(self, samples, spec) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        features = spec.features
        figure, axes = plt.subplots(1, len(features), figsize=(4 * len(features), 3), squeeze=False)
        for axis, feature in zip(axes[0], features, strict=True):
            reference = np.diff(samples["reference"][feature.name], axis=1).reshape(-1)
            current = np.diff(samples["current"][feature.name], axis=1).reshape(-1)
            drift.histograms(axis, reference, current, f"{feature.column}: change per step")
        return ["<h2>Changes per step</h2>" + drift.figure_html(figure)]


MODALITY = SeriesModel()
