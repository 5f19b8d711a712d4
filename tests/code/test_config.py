import subprocess
import sys

import pytest

from pipeline.core.config import ConfigError, config_from_dict, load_config
from tests.conftest import ROOT, default_params, merged


def test_the_shipped_params_file_is_valid():
    config = load_config(ROOT / "params.yaml")
    assert config.data.source == "digits"
    assert config.model_family == "cnn"
    assert config.model_name == "digits"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"train": {"optimizer": "adamw"}},
            "train.optimizer = 'adamw' is not valid; expected one of: sgd, adam, rmsprop",
        ),
        ({"model": {"dropout": 1.5}}, "model.dropout = 1.5 is not valid; expected a rate in [0, 1)"),
        ({"train": {"learnin_rate": 0.1}}, "unknown key train.learnin_rate; the train section accepts: optimizer"),
        ({"trian": {}}, "unknown section 'trian'"),
        ({"train": {"epochs": "ten"}}, "train.epochs = 'ten' is not valid; expected an integer"),
        ({"train": {"epochs": 0}}, "train.epochs = 0 is not valid"),
        ({"model": {"activation": "swish"}}, "expected one of: relu, leaky_relu, tanh, sigmoid, gelu"),
        ({"model": {"hidden_units": 64}}, "model.hidden_units = 64 is not valid; expected a list of an integer"),
        ({"data": {"source": "csv", "label": "y", "path": "no/such.csv"}}, "data.path = 'no/such.csv' is not valid"),
        ({"data": {"source": "csv", "path": "params.yaml"}}, "data.label = None is not valid"),
        ({"data": {"source": "penguins"}, "model": {"family": "cnn"}}, "model.family = 'cnn' is not valid"),
        ({"preprocess": {"test_fraction": 0.7}}, "preprocess.test_fraction = 0.7 is not valid"),
        ({"base": {"strategy": "gpu"}}, "base.strategy = 'gpu' is not valid; expected one of: auto, cpu"),
        ({"export": {"version": "latest"}}, "export.version = 'latest' is not valid"),
        (
            {"tune": {"space": {"depth": {"choice": [1]}}}},
            "tune.space.depth = {'choice': [1]} is not valid; expected a"
            " hyperparameter to search; tunable names: num_layers, units",
        ),
        ({"tune": {"space": {"units": {"choice": []}}}}, "tune.space.units = {'choice': []} is not valid"),
        ({"tune": {"space": {"optimizer": {"choice": ["adamw"]}}}}, "expected choices among sgd, adam, rmsprop"),
        ({"tune": {"space": {"learning_rate": {"min": 0, "max": 0.1, "log": True}}}}, "a positive min when log: true"),
        ({"tune": {"space": {"units": {"min": 8.5, "max": 64}}}}, "integer bounds"),
        ({"tune": {"space": {"dropout": {"min": 0.5, "max": 0.1}}}}, "numbers with min < max"),
        (
            {"tune": {"algorithm": "grid", "space": {"l2": {"min": 0.0001, "max": 0.01}}}},
            "needs a finite set of values",
        ),
        ({"tune": {"algorithm": "annealing"}}, "tune.algorithm = 'annealing' is not valid; expected one of: hyperband"),
        (
            {"train": {"jit_compile": True}},
            "train.jit_compile = True is not valid; expected false while base.deterministic is true",
        ),
        ({"base": {"gpu_memory_limit_mb": 10}}, "base.gpu_memory_limit_mb = 10 is not valid"),
        (
            {
                "data": {"source": "penguins", "task": "regression"},
                "tune": {"objective": "val_accuracy"},
                "train": {"monitor": "val_loss"},
            },
            "tune.objective = 'val_accuracy' is not valid; expected val_loss",
        ),
    ],
)
def test_bad_settings_name_the_key_the_value_and_what_is_allowed(overrides, expected):
    with pytest.raises(ConfigError) as raised:
        config_from_dict(merged(default_params(), overrides))
    assert expected in str(raised.value)


def test_integers_are_accepted_where_numbers_are_expected():
    config = config_from_dict(merged(default_params(), {"train": {"learning_rate": 1}}))
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)


@pytest.mark.parametrize("written", ["1e-05", "1E-5", "2.5e-4"])
def test_scientific_notation_that_yaml_reads_as_text_is_a_number(written):
    config = config_from_dict(merged(default_params(), {"train": {"learning_rate": written}}))
    assert config.train.learning_rate == float(written)


def test_tracking_uri_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert load_config(ROOT / "params.yaml").tracking.resolved_uri == "http://127.0.0.1:5000"


def test_auto_hidden_layers_and_learning_rate_follow_the_kind_and_family():
    from pipeline.ml.hyperparameters import defaults_from_config

    def chosen(overrides):
        values = defaults_from_config(config_from_dict(merged(default_params(), overrides)))
        return values["family"], values["hidden_units"], values["learning_rate"]

    text = {"data": {"source": "rotten_tomatoes"}}
    assert chosen({}) == ("cnn", [128], 0.001)
    assert chosen(text) == ("mlp", [], 0.01)  # a linear model over the n-grams
    assert chosen({**text, "model": {"family": "rnn"}}) == ("rnn", [128], 0.001)
    assert chosen({**text, "model": {"family": "transformer"}}) == ("transformer", [128], 0.0001)
    assert chosen({"model": {"family": "transformer"}}) == ("transformer", [128], 0.001)  # images keep theirs
    assert chosen({**text, "model": {"hidden_units": [64]}, "train": {"learning_rate": 0.002}}) == ("mlp", [64], 0.002)


def test_flat_params_for_mlflow():
    flat = load_config(ROOT / "params.yaml").to_flat_dict()
    assert flat["train.learning_rate"] == "auto"
    assert flat["model.filters"] == [32, 64]


def test_a_bad_setting_stops_the_stage_before_tensorflow_is_imported(tmp_path):
    (tmp_path / "params.yaml").write_text(
        (ROOT / "params.yaml").read_text().replace("optimizer: adam", "optimizer: adamw")
    )
    script = (
        "import sys\n"
        "from pipeline.cli import main\n"
        "try:\n"
        "    main(['run', 'train'])\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, 'tensorflow' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert completed.stdout.strip() == "exit 2 False", completed.stderr
    assert "train.optimizer = 'adamw' is not valid" in completed.stderr


def test_check_config_command(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text().replace("dropout: 0.2", "dropout: 1.5"))
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline", "check-config"], cwd=tmp_path, capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert "model.dropout = 1.5" in completed.stderr
