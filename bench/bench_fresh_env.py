"""A registered model in a fresh virtual environment that holds only the model's own requirements (its
`requirements.txt`: MLflow, TensorFlow, numpy, pandas, cloudpickle; not this project), as a serving platform builds
one: `mlflow models predict --env-manager local` on its serving input example, and `mlflow.pyfunc.load_model` by
alias. Needs the package index (the environment is installed from it), so it is a benchmark, not a CI test.

Usage: python bench/bench_fresh_env.py --project DIR --model NAME [--alias champion]
    (DIR: a project that ran `dvc repro`, with its `mlflow.db`; the environment is kept in .bench/ by the hash of
    the requirements) [--smoke]  (this environment instead of a fresh one: checks the benchmark runs, not the
    claim)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--smoke", action="store_true", help="this environment; install nothing")
    args = parser.parse_args()
    import mlflow

    store = f"sqlite:///{args.project.resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    uri = f"models:/{args.model}@{args.alias}"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    requirements = (local / "requirements.txt").read_text()
    environment = ROOT / ".bench" / f"fresh-{hashlib.sha256(requirements.encode()).hexdigest()[:12]}"
    result = {"model": uri, "requirements": requirements.split()}
    started = time.perf_counter()
    if args.smoke:
        result["smoke"] = "this environment, not a fresh one: nothing was installed"
    elif not (environment / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(environment)], check=True)
        pip = [str(environment / "bin" / "pip"), "install", "-q", "-r", str(local / "requirements.txt")]
        subprocess.run(pip, check=True)
        result["install_s"] = round(time.perf_counter() - started, 1)
    python = sys.executable if args.smoke else str(environment / "bin" / "python")
    elsewhere = tempfile.mkdtemp()  # not this project's folder: `import pipeline` must not find its sources
    probe = subprocess.run([python, "-c", "import pipeline"], capture_output=True, cwd=elsewhere)
    result["pipeline_importable"] = probe.returncode == 0
    started = time.perf_counter()
    predicted = subprocess.run(
        [python, "-m", "mlflow", "models", "predict", "-m", str(local), "-t", "json",
         "-i", str(local / "serving_input_example.json"), "--env-manager", "local"],
        capture_output=True, text=True, check=True, cwd=elsewhere,
    )  # fmt: skip
    result["mlflow_models_predict_s"] = round(time.perf_counter() - started, 1)
    result["mlflow_models_predict"] = json.loads(predicted.stdout.strip().splitlines()[-1])
    script = (
        "import json, sys, mlflow, numpy as np\n"
        f"model = mlflow.pyfunc.load_model({uri!r})\n"
        "print(json.dumps(np.asarray(model.predict(model.input_example)).round(4).tolist()))\n"
    )
    loaded = subprocess.run(
        [python, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"MLFLOW_TRACKING_URI": store},
        cwd=elsewhere,
    )
    result["pyfunc_by_alias"] = json.loads(loaded.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
