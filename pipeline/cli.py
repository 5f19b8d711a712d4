"""The `pipeline` command: run a stage, or predict with an exported model.

Stage modules are imported only when their command runs, so `pipeline --help` and
configuration errors answer without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

STAGES = ("ingest", "preprocess", "train", "evaluate", "export")


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
        module = importlib.import_module(f"pipeline.{args.stage}")
        module.main(args.params)
        return 0
    if args.command == "check-config":
        from pipeline.config import ConfigError, load_config

        try:
            load_config(args.params)
        except ConfigError as error:
            print(f"pipeline: error: {error}", file=sys.stderr)
            return 2
        print(f"{args.params}: valid")
        return 0
    from pipeline.predict import main as predict_main

    return predict_main(args.model, args.input, args.output)
