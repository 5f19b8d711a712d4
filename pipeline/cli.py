"""The `pipeline` command: run a stage, or predict with an exported model.

Stage modules are imported only when their command runs, so `pipeline --help` and
configuration errors answer without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# stage -> (module, its entry point), in pipeline order
STAGES = {
    "ingest": ("pipeline.stages.ingest", "main"),
    "validate": ("pipeline.stages.validate", "main"),
    "preprocess": ("pipeline.stages.preprocess", "main"),
    "tune": ("pipeline.stages.tune", "main"),
    "train": ("pipeline.stages.train", "main"),
    "evaluate": ("pipeline.stages.evaluate", "main"),
    "prepare_target": ("pipeline.stages.finetune", "prepare_target_main"),
    "finetune": ("pipeline.stages.finetune", "main"),
    "export": ("pipeline.stages.export", "main"),
    "gate": ("pipeline.stages.gate", "main"),
    "monitor": ("pipeline.stages.monitor", "main"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Keras MLOps pipeline. `dvc repro` runs every stage in order; these commands run one piece.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run one stage of the pipeline (what dvc.yaml calls)")
    run.add_argument("stage", choices=STAGES, help="the stage to run")
    run.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")

    check = commands.add_parser("check-config", help="validate params.yaml and exit")
    check.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")

    validate = commands.add_parser(
        "validate", help="validate the data (the validate stage), or --profile: derive a suite from trusted data"
    )
    validate.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    validate.add_argument(
        "--profile", action="store_true", help="write a starting expectation suite from the configured data"
    )
    validate.add_argument("--output", help="with --profile: the suite file (default: validate.suite's path)")
    validate.add_argument("--force", action="store_true", help="with --profile: overwrite an existing suite")
    validate.add_argument(
        "--target", action="store_true", help="with --profile: the fine-tuning target's data (finetune.data)"
    )

    tune = commands.add_parser(
        "tune", help="the tune stage; --workers N runs Keras Tuner's chief and N workers on this machine"
    )
    tune.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    tune.add_argument("--workers", type=int, default=0, help="worker processes (0: one process, no chief)")
    tune.add_argument("--port", type=int, help="the chief oracle's port (default: a free one)")

    train = commands.add_parser(
        "train", help="the train stage; --workers N runs it on N local workers (MultiWorkerMirroredStrategy)"
    )
    train.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    train.add_argument("--workers", type=int, default=0, help="worker processes (0: one process)")

    serve = commands.add_parser("serve", help="serve an exported model over HTTP (TF Serving's REST API)")
    serve.add_argument(
        "--model",
        required=True,
        help="a SavedModel version folder, a model folder or models/serving; `-` reads it from standard input once"
        " TensorFlow is imported",
    )
    serve.add_argument("--params", default="params.yaml", help="the params file for the serve defaults")
    serve.add_argument("--host", help="the address to listen on (default: serve.host)")
    serve.add_argument("--port", type=int, help="the port (default: serve.port)")

    gate = commands.add_parser("gate", help="the blessing gate; --force-bless --reason makes the candidate champion")
    gate.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    gate.add_argument("--force-bless", action="store_true", help="make the candidate champion whatever the checks say")
    gate.add_argument("--reason", help="with --force-bless: why (recorded on the model version)")

    monitor = commands.add_parser(
        "monitor", help="compare new data (and the model's predictions on it) with the training data: drift, feedback"
    )
    monitor.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    monitor.add_argument("--data", help="an image folder or a CSV/Parquet file (default: monitor.data)")
    monitor.add_argument("--output", help="the report folder (default: <paths.reports>/monitor)")
    monitor.add_argument("--fail-on-drift", action="store_true", help="exit 1 when retraining is due (for CI)")

    feedback = commands.add_parser("feedback", help="add newly labelled production data to the training data")
    feedback_commands = feedback.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = feedback_commands.add_parser("add", help="validate PATH and add it as a new DVC-tracked feedback batch")
    add.add_argument("path", help="an image folder with class sub-folders, or a CSV/Parquet file with the label")
    add.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    add.add_argument("--name", help="the batch name (default: feedback-<UTC time>)")

    retrain = commands.add_parser(
        "retrain", help="the CI retraining job: pull, monitor, retrain if due, gate, push, Markdown report"
    )
    retrain.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    retrain.add_argument("--data", help="recent production data to monitor (and, if labelled, add as feedback)")
    retrain.add_argument("--base-rev", default="main", help="the git revision metrics are compared with")
    retrain.add_argument("--summary", help="also write the Markdown report here (e.g. $GITHUB_STEP_SUMMARY)")
    retrain.add_argument("--force", action="store_true", help="retrain even if nothing calls for it")

    ui = commands.add_parser(
        "ui", help="the MLflow UI on the project's store, with links to the runs table and the compare view"
    )
    ui.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    ui.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="the port (default: 5000)")
    ui.add_argument("--compare", type=int, default=3, help="how many of the newest runs the compare link shows")

    predict = commands.add_parser("predict", help="print predictions of an exported model for a CSV or image folder")
    predict.add_argument(
        "--model",
        required=True,
        help="a .keras file, a SavedModel version folder, or a serving folder (latest version)",
    )
    predict.add_argument("--input", required=True, help="a CSV file (one example per row) or a folder of images")
    predict.add_argument("--output", help="write the predictions as CSV here instead of printing them")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        module, entry_point = STAGES[args.stage]
        getattr(importlib.import_module(module), entry_point)(args.params)
        return 0
    if args.command == "validate":
        return _validate_command(args)
    if args.command == "gate":
        from pipeline.stages import gate

        if not args.force_bless:
            gate.main(args.params)
            return 0
        return gate.force(args.params, args.reason or "")
    if args.command == "serve":
        return _serve_command(args)
    if args.command == "tune":
        from pipeline.stages import tune

        if args.workers < 1:
            tune.main(args.params)
            return 0
        return tune.launch_distributed(args.params, args.workers, port=args.port)
    if args.command == "train":
        from pipeline.stages import train

        if args.workers < 2:
            train.main(args.params)
            return 0
        return train.launch_workers(args.params, args.workers)
    if args.command == "monitor":
        from pipeline.ops import monitoring

        return monitoring.command(args.params, args.data, args.output, args.fail_on_drift)
    if args.command == "feedback":
        from pipeline.ops import feedback

        return feedback.command(args.params, args.path, args.name)
    if args.command == "retrain":
        from pipeline.ops import retrain

        return retrain.command(args.params, args.data, args.base_rev, args.summary, args.force)
    if args.command == "ui":
        return _ui_command(args)
    if args.command == "check-config":
        from pipeline.core.config import ConfigError, load_config

        try:
            load_config(args.params)
        except ConfigError as error:
            print(f"pipeline: error: {error}", file=sys.stderr)
            return 2
        print(f"{args.params}: valid")
        return 0
    from pipeline.serving.predict import main as predict_main

    return predict_main(args.model, args.input, args.output)


def _validate_command(args: argparse.Namespace) -> int:
    from pipeline.data import validation
    from pipeline.stages import validate

    if not args.profile:
        validate.main(args.params)
        return 0
    from pipeline.core.config import load_config
    from pipeline.core.runner import user_errors

    try:
        config = load_config(args.params)
        written, notes = validation.profile(
            config.target_config() if args.target else config, args.output, force=args.force
        )
    except user_errors() as error:
        print(f"pipeline validate: error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {written}: review every bound, then commit it")
    return 0


def _ui_command(args: argparse.Namespace) -> int:
    from pipeline.core import tracking
    from pipeline.core.config import load_config
    from pipeline.core.runner import user_errors

    try:
        return tracking.ui(load_config(args.params), args.host, args.port, args.compare)
    except user_errors() as error:
        print(f"pipeline ui: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _serve_command(args: argparse.Namespace) -> int:
    import os

    from pipeline.core.config import Config, load_config
    from pipeline.core.runner import user_errors

    try:
        config = load_config(args.params) if Path(args.params).is_file() else Config()
        os.environ.setdefault("MLFLOW_TRACKING_URI", config.tracking.resolved_uri)  # for models:/ URIs
        from pipeline.serving import app

        settings = config.serve
        return app.main(
            args.model,
            args.host or settings.host,
            args.port or settings.port,
            settings.max_batch_size,
            settings.max_body_bytes,
        )
    except user_errors() as error:
        print(f"pipeline serve: error: {error}", file=sys.stderr)
        return 2
