"""Text end to end: the built-in Rotten Tomatoes reviews through `dvc repro` (every stage, the gate and the monitor),
served from raw strings the way TF Serving's REST API and MLflow's clients send them; and a user's CSV of texts as
users have them (emoji, right-to-left scripts, HTML remnants, a very long text, a numeric column beside the text)
through a bidirectional LSTM."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_dvc_project, run, serving, stage, write_params
from tests.e2e.test_zoo import holdout, run_stages

pytestmark = pytest.mark.e2e

TEXT = {
    "data": {"source": "rotten_tomatoes"},
    "model": {"hidden_units": "auto"},  # text's default: a linear model over every training term (not the tiny [32])
    "gate": {"thresholds": {"accuracy": 0.6}},  # a tiny budget's model: not held to the baselines (thresholds: auto)
}
REVIEW = "A gripping, beautifully acted film; the ending is a triumph."


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    project = make_dvc_project(tmp_path_factory.mktemp("text"), TEXT)
    run(["dvc", "repro"], project)
    return project


def post(server: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{server}/v1/models/rotten_tomatoes:predict", data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_every_stage_runs_and_the_reviews_are_learnt(reproduced):
    metrics, predictions = holdout(reproduced)
    majority = predictions["actual"].value_counts(normalize=True).max()
    assert metrics["accuracy"] > majority + 0.1, (metrics, majority)
    export = json.loads((reproduced / "reports/export/export.json").read_text())
    assert export["infra_validation"]["servable"] is True
    assert export["signature"]["inputs"]["review"]["dtype"] == "string"
    edge = export["tflite"]  # the texts vectorised outside the TFLite graph, as text_vectorization.json says
    assert edge["computed_outside"] == {"file": "text_vectorization.json", "inputs": ["review"]}, edge
    assert edge["float"]["max_abs_difference"] < 1e-5 and edge["float"]["accuracy"] == edge["keras_accuracy"]
    assert abs(edge["dynamic_range_quantized"]["accuracy"] - edge["keras_accuracy"]) < 0.02
    assert (reproduced / "models/edge/text_vectorization.json").exists()
    gate = json.loads((reproduced / "reports/gate/decision.json").read_text())
    assert gate["blessed"] is True, gate
    drift = json.loads((reproduced / "reports/monitor/drift.json").read_text())
    assert drift["retrain"] is False, drift["reasons"]  # the test split is no drift: not even the predictions
    validated = json.loads((reproduced / "data/validated/dataset.json").read_text())
    assert validated["kind"] == "text" and validated["text_columns"] == ["review"]


def test_the_api_takes_raw_strings_and_refuses_what_is_not_text(reproduced):
    with serving("models/serving", reproduced) as server:
        status, answer = post(server, {"instances": [{"review": REVIEW}, {"review": "Zürich 🎬 فيلم رائع <br/> dull"}]})
        assert status == 200 and len(answer["predictions"]) == 2, answer
        assert all(abs(sum(row) - 1) < 1e-5 or len(row) == 1 for row in answer["predictions"])
        status, single = post(server, {"instances": [{"review": REVIEW}]})
        # a batch of two and a batch of one run different matrix kernels: the same prediction to float rounding
        assert status == 200 and np.allclose(single["predictions"][0], answer["predictions"][0], rtol=0, atol=1e-6)
        status, plain = post(server, {"instances": [REVIEW]})  # TF Serving's row format for one input
        assert status == 200 and plain["predictions"][0] == single["predictions"][0]
        status, columnar = post(server, {"inputs": {"review": [REVIEW]}})
        assert status == 200 and columnar["outputs"][0] == single["predictions"][0]
        status, problem = post(server, {"instances": [{"review": 42}]})
        assert status == 400 and "expected a string of text" in problem["error"]
        status, problem = post(server, {"instances": [{"review": "word " * 1000}]})
        assert status == 400 and "this model takes at most" in problem["error"]
        status, problem = post(server, b'{"instances": [{"review": "\\ud800 broken \xff"}]}')
        assert 400 <= status < 500, problem
        status, problem = post(server, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        assert 400 <= status < 500, problem  # a 10 MB body is refused before it is read: tests/code/test_api.py


def test_predict_reads_a_csv_of_texts(reproduced):
    pd.DataFrame({"review": [REVIEW, "Tedious, shallow and far too long."]}).to_csv(reproduced / "new.csv", index=False)
    predicted = run(["pipeline", "predict", "--model", "models/serving", "--input", "new.csv"], reproduced)
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) >= 2 and "fresh" in predicted.stdout


def test_the_registered_model_predicts_a_dataframe_in_an_interpreter_without_the_pipeline(reproduced, tmp_path):
    store = f"sqlite:///{reproduced / 'mlflow.db'}"
    script = (
        "import sys, json, mlflow, pandas as pd, numpy as np\n"
        f"mlflow.set_tracking_uri({store!r})\n"
        "model = mlflow.pyfunc.load_model('models:/rotten_tomatoes@champion')\n"
        f"rows = pd.DataFrame({{'review': [{REVIEW!r}, 'Zürich 🎬 فيلم']}})\n"
        "print(json.dumps({'pipeline_imported': any(name.split('.')[0] == 'pipeline' for name in sys.modules),"
        " 'outputs': np.asarray(model.predict(rows)).tolist(),"
        " 'example': np.asarray(model.predict(model.input_example)).shape[0]}))\n"
    )
    result = json.loads(run([sys.executable, "-c", script], tmp_path).stdout.strip().splitlines()[-1])
    assert result["pipeline_imported"] is False
    assert len(result["outputs"]) == 2 and result["example"] == 2


def users_texts(count: int = 600, seed: int = 7) -> pd.DataFrame:
    """Reviews of a made-up shop: the label follows the words (and a little the stars), in the forms real
    exports have them."""
    generator = np.random.default_rng(seed)
    good = ["great", "lovely", "works", "recommend", "fast", "perfect", "😀", "ممتاز", "très bien"]
    bad = ["broken", "awful", "refund", "slow", "never", "disappointed", "😡", "سيء", "nul"]
    filler = ["the", "item", "arrived", "box", "it", "was", "<br/>", "&amp;", "order", "🙂", "Zürich"]
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        words = list(generator.choice(good if positive else bad, 3)) + list(generator.choice(filler, 6))
        generator.shuffle(words)
        text = " ".join(words)
        if index == 5:
            text = "<p>" + " ".join(["long"] * 4000) + " great</p>"  # a very long text
        stars = float(np.clip((4 if positive else 2) + generator.normal(0, 1.5), 1, 5))
        rows.append({"comment": text, "stars": round(stars, 1), "verdict": "happy" if positive else "unhappy"})
    return pd.DataFrame(rows)


def test_a_users_csv_of_texts_beside_numbers_trains_a_bidirectional_lstm(workdir, capsys):
    users_texts().to_csv(workdir / "data/user/reviews.csv", index=False)
    data = {"source": "csv", "path": "data/user/reviews.csv", "label": "verdict", "text_columns": ["comment"]}
    model = {
        "family": "rnn",
        "rnn_bidirectional": True,
        "rnn_units": 16,
        "text_sequence_length": 24,
        "text_embedding_dim": 16,
        "hidden_units": [16],
        "dropout": 0.0,
    }
    train = {"epochs": 6, "learning_rate": 0.01, "batch_size": 32, "early_stopping_patience": 6}
    export = {"version": 1, "infra_validation": True, "tflite": True}
    run_stages(workdir, {"data": data, "model": model, "train": train, "export": export})
    metrics, predictions = holdout(workdir)
    assert metrics["accuracy"] > 0.8, metrics
    exported = json.loads((workdir / "reports/export/export.json").read_text())
    assert exported["infra_validation"]["servable"] is True
    assert set(exported["signature"]["inputs"]) == {"comment", "stars"}
    assert exported["tflite"]["float"]["max_abs_difference"] < 1e-5  # the LSTMs unrolled, the text vectorised
    drift = json.loads((workdir / "reports/monitor/drift.json").read_text())
    assert drift["retrain"] is False, drift["reasons"]
    # Transfer: the trained LSTM fine-tuned on another shop's texts with 10 labelled examples per class
    target = users_texts(300, seed=8)
    target["feeling"] = target.pop("verdict").map({"happy": "satisfied", "unhappy": "complaint"})
    target.to_csv(workdir / "data/user/other_shop.csv", index=False)
    other = {**data, "path": "data/user/other_shop.csv", "label": "feeling"}
    finetune = {"enabled": True, "data": other, "head_epochs": 12, "fine_tune_epochs": 2, "batch_size": 8}
    write_params(workdir, {"data": data, "model": model, "train": train, "export": export, "finetune": finetune})
    from pipeline.cli import main

    with pytest.raises(SystemExit) as stopped:  # no suite for the target yet: the error says how to make one
        main(["run", "prepare_target"])
    assert stopped.value.code == 2 and "`pipeline validate --profile --target`" in capsys.readouterr().err
    assert main(["validate", "--profile", "--target"]) == 0 and (workdir / "expectations/other_shop.yaml").exists()
    assert main(["run", "prepare_target"]) == 0 and main(["run", "finetune"]) == 0
    transfer = json.loads((workdir / "reports/finetune/transfer.json").read_text())
    assert transfer["labelled_train_examples"] == 20 and transfer["finetuned"]["accuracy"] > 0.8, transfer
    assert "lstm" in " ".join(transfer["unfrozen_layers"]), transfer  # the encoder itself was fine-tuned
    from pipeline.ml.models import load_trained_model

    base = load_trained_model(workdir / "models/model.keras")
    tuned = load_trained_model(workdir / "models/finetuned/model.keras")
    (embedding,) = [layer.name for layer in base.layers if layer.name.startswith("embed_")]
    reused = base.get_layer(embedding).get_weights()[0]
    np.testing.assert_array_equal(reused, tuned.get_layer("base").get_layer(embedding).get_weights()[0])  # frozen


def test_a_blank_text_stops_validation_with_the_line(workdir):
    table = users_texts(200)
    table.loc[17, "comment"] = "   "
    table.to_csv(workdir / "data/user/reviews.csv", index=False)
    data = {"source": "csv", "path": "data/user/reviews.csv", "label": "verdict", "text_columns": ["comment"]}
    clean = table.drop(index=17)
    clean.to_csv(workdir / "data/user/clean.csv", index=False)
    run_stages(workdir, {"data": {**data, "path": "data/user/clean.csv"}}, stages=())  # the suite, from clean data
    (workdir / "expectations/clean.yaml").rename(workdir / "expectations/reviews.yaml")
    run_stages(workdir, {"data": data}, stages=("ingest",), profile=False)
    assert stage("validate", workdir, check=False).returncode != 0
    summary = json.loads((workdir / "reports/validate/summary.json").read_text())
    (failure,) = [check for check in summary["failures"] if check["expectation"].endswith("not_match_regex")]
    assert "19" in json.dumps(failure), failure  # line 19 of the CSV (the header is line 1)
