"""Tables on the model side: one named (1,) input per column, each preprocessed inside the model by its
column type's layers (`pipeline.ml.features.PREPROCESSING`) and concatenated."""

from __future__ import annotations

import numpy as np

from pipeline.core import drift
from pipeline.core.column_types import InvalidValueError
from pipeline.ml.modalities import ModelModality, RequestError


def columns_as_rows(inputs, items: str) -> list[dict]:
    """TF Serving's columnar `inputs` (`{column: [one item per example]}`) as row instances; raises RequestError."""
    if not isinstance(inputs, dict) or not inputs:
        raise RequestError(f'"inputs" must be an object of columns, each a list of {items}')
    lengths = {len(values) if isinstance(values, list) else -1 for values in inputs.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise RequestError('"inputs": every column must be a list, all of the same length')
    (count,) = lengths
    return [{column: values[row] for column, values in inputs.items()} for row in range(count)]


UNSEEN_WORD = "zqxjvw"
"""A word no vocabulary holds: the behavioural check that adds it expects no change of prediction."""


class TableModel(ModelModality):
    kind = "table"

    def record_features(self, spec) -> dict:
        import tensorflow as tf

        return {
            feature.name: tf.io.FixedLenFeature([1], tf.dtypes.as_dtype(feature.column_type.input_dtype))
            for feature in spec.features
        }

    def inputs(self, spec) -> dict:
        import keras

        return {
            feature.name: keras.Input(shape=(1,), name=feature.name, dtype=feature.column_type.input_dtype)
            for feature in spec.features
        }

    def preprocess(self, spec, inputs, hyperparameters):
        import keras

        from pipeline.ml.features import PREPROCESSING

        encoded = [
            PREPROCESSING[feature.type](feature, inputs[feature.name], hyperparameters) for feature in spec.features
        ]
        return keras.layers.Concatenate(name="features")(encoded) if len(encoded) > 1 else encoded[0]

    def describe_inputs(self, spec) -> str:
        return "columns " + ", ".join(f"{feature.name} ({feature.type})" for feature in spec.features)

    def request_batch(self, instances, spec) -> dict[str, np.ndarray]:
        schema_columns = (spec.schema or {}).get("columns", {})
        features = spec.features
        known = {feature.column for feature in features}
        ignored = set(spec.dropped_columns or [])  # data.drop_columns: rows of the training file still hold them
        columns: dict[str, list] = {feature.name: [] for feature in features}
        for index, instance in enumerate(instances):
            field = f"instances[{index}]"
            if not isinstance(instance, dict):
                raise RequestError(f"{field}: expected an object of column values, got {type(instance).__name__}")
            unknown = sorted(set(instance) - known - ignored)
            if unknown:
                raise RequestError(f"{field}: unknown column {unknown[0]!r}; the model reads {sorted(known)}")
            for feature in features:
                column, rules = feature.column, schema_columns.get(feature.column, {})
                allow_missing = rules.get("max_null_fraction", 1.0) > 0
                if column not in instance and not allow_missing:
                    raise RequestError(f"{field}.{column}: missing; this column is required")
                try:
                    value = feature.column_type.request_value(
                        instance.get(column), f"{field}.{column}", rules, allow_missing
                    )
                except InvalidValueError as problem:
                    raise RequestError(str(problem)) from None
                columns[feature.name].append([value])
        return {
            feature.name: np.asarray(
                columns[feature.name], dtype=np.float32 if feature.column_type.numbers else object
            ).reshape(-1, 1)
            for feature in features
        }

    def columnar_instances(self, inputs, spec) -> list:
        return columns_as_rows(inputs, "values")

    def request_instances(self, batch, spec) -> list:
        size = len(next(iter(batch.values())))
        return [
            {
                feature.column: feature.column_type.to_request(np.asarray(batch[feature.name])[index, 0])
                for feature in spec.features
            }
            for index in range(size)
        ]

    def mlflow_schema(self, spec):
        from mlflow.types import ColSpec, Schema

        return Schema([ColSpec(feature.column_type.mlflow_type, feature.column) for feature in spec.features])

    def mlflow_example(self, inputs, spec):
        """A DataFrame of the table's own columns (missing values as None)."""
        import pandas as pd

        return pd.DataFrame(self.request_instances(inputs, spec), columns=[feature.column for feature in spec.features])

    def tflite_support(self, spec) -> tuple[bool, str]:
        unsupported = [feature.column_type for feature in spec.features if not feature.column_type.tflite_supported]
        if unsupported:
            return False, f"{unsupported[0].name} inputs need TF ops that the TFLite interpreter cannot run"
        return True, ""

    def reference_values(self, batches, spec) -> dict[str, np.ndarray]:
        return {
            feature.name: feature.column_type.from_records(
                np.concatenate([np.asarray(batch[feature.name]).reshape(-1) for batch in batches])
            )
            for feature in spec.features
        }

    def linear_inputs(self, features, spec):
        import pandas as pd

        return pd.DataFrame({feature.name: np.asarray(features[feature.name]).reshape(-1) for feature in spec.features})

    def linear_encoder(self, spec):
        from sklearn.compose import ColumnTransformer

        return ColumnTransformer(
            [(feature.name, feature.column_type.linear_encoder(), [feature.name]) for feature in spec.features]
        )

    def perturbations(self, features, spec, generator):
        """Numbers nudged by 1 % of their spread on the test split; a word the model never saw added to each text."""
        numbers = [feature for feature in spec.features if feature.column_type.numbers]
        texts = [feature for feature in spec.features if feature.column_type.free_text]
        changes = []
        if numbers:
            nudged = dict(features)
            for feature in numbers:
                values = np.asarray(features[feature.name], dtype=np.float64)
                spread = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
                nudged[feature.name] = values + generator.normal(0.0, 0.01 * spread, len(values))
            changes.append(("numbers nudged by 1 % of their spread", nudged, 0.0))
        if texts:
            added = dict(features)
            for feature in texts:
                added[feature.name] = np.array(
                    [f"{text} {UNSEEN_WORD}" for text in features[feature.name]], dtype=object
                )
            changes.append((f"an unseen word ({UNSEEN_WORD!r}) added to each text", added, 0.0))
        return changes

    def model_batch(self, features, start, end) -> dict[str, np.ndarray]:
        return {
            name: values[start:end].reshape(-1, 1).astype(np.float32 if values.dtype.kind == "f" else object)
            for name, values in features.items()
        }

    def drift_families(self, reference, current, spec, settings, embeddings, held_out=None) -> dict:
        tests, missing = {}, {}
        for feature in spec.features:
            name, kind = feature.name, feature.column_type
            ref_values, new_values = reference[name], current[name]
            # Missing values are counted once, in their own family below: not as a category here too.
            ref_samples = kind.drift_samples(kind.present(ref_values), feature)
            new_samples = kind.drift_samples(kind.present(new_values), feature)
            if held_out is not None:  # what depends on the training split's own words is judged on held-out data
                held_samples = kind.drift_samples(kind.present(held_out[name]), feature)
                ref_samples.update({suffix: held_samples[suffix] for suffix in kind.learnt_from_training})
            for suffix, sample in ref_samples.items():
                tests[name + suffix] = kind.drift_test_for(suffix, feature)(sample, new_samples[suffix])
            missing[name] = {
                "reference": float(np.mean(kind.missing(ref_values))),
                "current": float(np.mean(kind.missing(new_values))),
            }
        drifted = drift.flag(tests, settings.p_value)
        drifted += [
            name
            for name, test in tests.items()
            if test.get("psi", 0.0) > settings.psi_threshold
            and test.get("psi_p_value", 0.0) < settings.p_value / len(tests)
            and name not in drifted
        ]
        rates = [
            name
            for name, rate in missing.items()
            if rate["current"] - rate["reference"] > settings.missing_rate_tolerance
        ]
        return {
            "features": {"tests": tests, "drifted": drifted},
            "missing_values": {"rates": missing, "drifted": rates},
        }

    def report_plots(self, samples, spec) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plotted = [feature for feature in spec.features if feature.column_type.plotted]
        if not plotted:
            return []
        figure, axes = plt.subplots(1, len(plotted), figsize=(4 * len(plotted), 3), squeeze=False)
        for axis, feature in zip(axes[0], plotted, strict=True):
            name = feature.name
            drift.histograms(axis, samples["reference"][name], samples["current"][name], feature.column)
        return ["<h2>Numeric features</h2>" + drift.figure_html(figure)]


MODALITY = TableModel()
