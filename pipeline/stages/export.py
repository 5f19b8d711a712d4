"""Stage `export`: the SavedModel for TF Serving, checked against the Keras model.

Layout: `<paths.serving>/<model name>/<version>/` with `saved_model.pb`, `variables/` and a
`serving_default` signature taking raw inputs (pixels, or one named input per column).
`assets.extra/pipeline_spec.json` carries the class names and feature description for
clients such as `pipeline predict`. After writing, the SavedModel is reloaded with
`tf.saved_model.load` and must reproduce the Keras model's test-split predictions.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.core.config import Config
from pipeline.core.outputs import staged_directory, write_json_atomic
from pipeline.core.runner import StageResult, run_stage
from pipeline.ml.distribute import setup_tensorflow
from pipeline.serving.saved_model import (
    check_parity,
    compute_dtype,
    export_saved_model,
    parity_tolerance,
    serving_spec,
    signature_description,
)

log = logging.getLogger(__name__)


def resolve_version(setting: int | str) -> int:
    return int(time.time()) if setting == "auto" else int(setting)


def log_model_to_mlflow(model, spec, saved_model_dir: Path, keras_file: Path, example_inputs: dict) -> str:
    """Logs the model to the active MLflow run as a pyfunc over the SavedModel (`pipeline.serving.mlflow_model`),
    which `mlflow.pyfunc.load_model` loads in any interpreter with TensorFlow, without this project; the `.keras`
    file travels beside it for the pipeline's own stages. Its signature and input example come from
    `example_inputs` (a few test examples as the model takes them) in the form a client sends."""
    import cloudpickle
    import mlflow
    from mlflow.models import infer_signature

    from pipeline.ml.modalities import model_modality
    from pipeline.serving import mlflow_model

    example = model_modality(spec.kind).mlflow_example(example_inputs, spec)
    signature = infer_signature(example, np.asarray(model(example_inputs, training=False)))
    predictor = mlflow_model.SavedModelPredictor({feature.column: feature.name for feature in spec.features or []})
    requirements = [f"{package}=={_version(package)}" for package in ("tensorflow", "numpy", "pandas", "cloudpickle")]
    cloudpickle.register_pickle_by_value(mlflow_model)  # the class travels in the model, not as an import
    try:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=predictor,
            artifacts={mlflow_model.SAVED_MODEL: str(saved_model_dir), mlflow_model.KERAS_MODEL: str(keras_file)},
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            metadata={"pipeline_spec": serving_spec(spec).to_dict()},  # what `pipeline serve` checks requests against
        )
    finally:
        cloudpickle.unregister_pickle_by_value(mlflow_model)
    return info.model_uri


def register_candidate(model_uri: str, name: str, tags: dict[str, str] | None = None) -> int:
    """Registers the logged model as a new version of `name` (with `tags`: the data version) and
    points the `candidate` alias at it. The run and its metrics come with the logged model."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    mlflow.tracking.MlflowClient().set_registered_model_alias(name, "candidate", version.version)
    return int(version.version)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def run(config: Config) -> StageResult:
    from pipeline.serving import checks, model_card

    settings = config.export
    # The infra-validation server starts first: it imports TensorFlow while this process does and exports.
    server = checks.infra_validation_server() if settings.infra_validation else contextlib.nullcontext()
    with server as infra_server:
        setup_tensorflow(config)
        from pipeline.core.spec import load as load_spec
        from pipeline.ml.features import make_dataset
        from pipeline.ml.modalities import model_modality
        from pipeline.ml.models import float32_copy, load_trained_model

        spec = load_spec(config.paths.prepared)
        model = load_trained_model(config.paths.model)
        serving_model = float32_copy(model)  # what is exported; parity is judged against `model` itself
        version = resolve_version(settings.version)
        tolerance = parity_tolerance(model, settings.tolerance)
        if tolerance != settings.tolerance:
            log.info(
                "parity tolerance %g: the model computes in %s (export.tolerance %g is for float32)",
                tolerance,
                compute_dtype(model),
                settings.tolerance,
            )
        target, edge_target = Path(config.paths.serving), Path(config.paths.edge)
        target.parent.mkdir(parents=True, exist_ok=True)
        test_split = list(make_dataset(config.paths.prepared, spec, "test", 256))
        batches = [inputs for inputs, _ in test_split]
        labels = np.concatenate([np.asarray(batch_labels) for _, batch_labels in test_split])
        expected = np.concatenate([np.asarray(model(inputs, training=False)) for inputs in batches])
        warmup = [
            inputs for inputs, _ in make_dataset(config.paths.prepared, spec, "test", settings.warmup_examples).take(2)
        ]
        with staged_directory(target) as staging, staged_directory(edge_target) as edge_dir:
            version_dir = staging / config.model_name / str(version)
            export_saved_model(serving_model, spec, version_dir)
            difference = check_parity(model, version_dir, test_split, tolerance)
            description = signature_description(version_dir)
            checks.write_warmup_requests(version_dir, config.model_name, warmup)
            edge = {"skipped": "export.tflite is false"}

            def convert_for_edge() -> None:
                if settings.tflite:
                    edge.clear()
                    edge.update(
                        checks.export_tflite(version_dir, edge_dir, spec, batches, labels, expected, serving_model)
                    )

            infra = {"servable": None, "skipped": "export.infra_validation is false"}
            if infra_server is not None:  # the TFLite conversions run while the server loads the model
                warmup_expected = np.concatenate([np.asarray(model(inputs, training=False)) for inputs in warmup])
                infra = infra_server.validate(
                    version_dir, config.model_name, spec, warmup, warmup_expected, tolerance, meanwhile=convert_for_edge
                )
            else:
                convert_for_edge()
            write_json_atomic(edge_dir / "tflite.json", edge)  # also says why nothing was converted
    published = target / config.model_name / str(version)
    example_inputs = {name: np.asarray(values)[:2] for name, values in batches[0].items()}
    first_example = model_modality(spec.kind).request_instances(
        {name: values[:1] for name, values in example_inputs.items()}, spec
    )
    with tempfile.TemporaryDirectory() as scratch:  # the float32 model that was exported, as the Keras artifact
        keras_file = Path(scratch) / Path(config.paths.model).name
        serving_model.save(keras_file)
        model_uri = log_model_to_mlflow(serving_model, spec, published, keras_file, example_inputs)
    from pipeline.core.tracking import data_version, git_commit

    tags = {**data_version(config), "git.commit": git_commit() or "unknown"}
    registered_version = register_candidate(model_uri, config.model_name, tags)
    report = {
        "model_name": config.model_name,
        "version": version,
        "path": str(published),
        "max_abs_difference": difference,
        "compute_dtype": compute_dtype(model),
        "parity_tolerance": tolerance,
        "signature": description,
        "mlflow_model_uri": model_uri,
        "registered_model": {"name": config.model_name, "version": registered_version, "alias": "candidate"},
        "infra_validation": infra,
        "tflite": edge,
        "warmup_requests": str(published / checks.WARMUP_FILE),
        "parameters": model.count_params(),  # for the model card, which the gate writes without TensorFlow
        "example_request": model_card.example_request(first_example),
    }
    report_path = write_json_atomic(Path(config.paths.reports) / "export" / "export.json", report)
    edge_summary = ""
    if "float" in edge:

        def scored(variant: dict) -> str:  # accuracy for classes, else the largest difference from the model
            if variant["accuracy"] is not None:
                return f"acc {variant['accuracy']:.4f}"
            return f"max diff {variant['max_abs_difference']:.2g}"

        edge_summary = (
            f", TFLite {edge['float']['size_bytes'] / 1024:.0f} KiB {scored(edge['float'])}"
            f" / quantised {edge['dynamic_range_quantized']['size_bytes'] / 1024:.0f} KiB"
            f" {scored(edge['dynamic_range_quantized'])}"
        )
    servable = ", infra-validated" if infra.get("servable") else ""
    metrics = {"export_max_abs_difference": difference}
    for variant in ("float", "dynamic_range_quantized"):
        if variant in edge and edge[variant]["accuracy"] is not None:
            metrics[f"tflite_{variant}_accuracy"] = edge[variant]["accuracy"]
            metrics[f"tflite_{variant}_bytes"] = edge[variant]["size_bytes"]
    return StageResult(
        summary=f"SavedModel {config.model_name} v{version} (parity max diff {difference:.1e}{servable}{edge_summary})"
        f" -> {published}",
        metrics=metrics,
        artifacts=[report_path],
    )


def main(params_file: str = "params.yaml") -> None:
    run_stage("export", params_file, run)
