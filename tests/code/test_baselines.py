"""The evaluate stage's baselines (the trivial one, a linear model of the same inputs for every kind of data), the
paired bootstrap that compares them with the model, and the gate that judges them when its thresholds are auto."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.config import GateConfig, config_from_dict
from pipeline.core.errors import ConfigError
from pipeline.ml import baselines
from pipeline.ml.modalities.image import pooled_pixels
from pipeline.stages.gate import decide
from tests.specs import make_spec

SPLITS = {"train": {"files": [], "num_examples": 0}}


def table_examples(count: int, seed: int) -> tuple[dict, np.ndarray]:
    """A label that only the words of `note` and the sign of `size` tell, beside a column of noise."""
    generator = np.random.default_rng(seed)
    good = generator.random(count) < 0.5
    big = generator.random(count) < 0.5
    notes = np.array(
        [("a truly good film " if g else "a dull mess ") + "é ✓ دقيقة" for g in good], dtype=object
    )  # fmt: skip
    features = {
        "island": generator.choice(["Biscoe", "Dream", ""], size=count).astype(object),
        "size": np.where(big, 1.0, -1.0) + generator.normal(0, 0.1, count),
        "note": notes,
    }
    features["size"][::17] = np.nan  # missing numbers are imputed
    return features, (good & big).astype(np.int64)


TABLE = make_spec(
    {
        "kind": "text", "label": "y", "classes": ["no", "yes"],
        "features": [{"column": "island", "name": "island", "type": "categorical"},
                     {"column": "size", "name": "size", "type": "numeric"},
                     {"column": "note", "name": "note", "type": "text"}],
    }
)  # fmt: skip


def test_the_linear_baseline_reads_numbers_categories_and_texts():
    predict, strength = baselines.fit_linear(TABLE, table_examples(300, 0), table_examples(100, 1))
    features, labels = table_examples(200, 2)
    outputs = predict(features)
    assert outputs.shape == (200, 2) and strength in baselines.STRENGTHS
    assert (outputs.argmax(axis=1) == labels).mean() >= 0.9  # no column alone is enough


def test_the_linear_baseline_reads_images_averaged_over_blocks():
    assert pooled_pixels(np.zeros((2, 96, 96, 3))).shape == (2, 9 * 9 * 3)  # 10 x 10 blocks: at most 256 values
    small = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1)
    np.testing.assert_array_equal(pooled_pixels(small), small.reshape(2, 64))  # small images stay as they are
    blocks = pooled_pixels(np.arange(6 * 6, dtype=np.float32).reshape(1, 6, 6, 1), limit=9)
    np.testing.assert_allclose(blocks, [[3.5, 5.5, 7.5, 15.5, 17.5, 19.5, 27.5, 29.5, 31.5]])

    spec = make_spec({"kind": "image", "classes": ["dark", "light"], "image": {"height": 4, "width": 4, "channels": 3}})
    generator = np.random.default_rng(0)

    def images(count):
        labels = generator.integers(0, 2, count)
        return {"image": generator.normal(0, 1, (count, 4, 4, 3)) + labels[:, None, None, None]}, labels

    predict, _ = baselines.fit_linear(spec, images(200), images(50))
    features, labels = images(100)
    assert (predict(features).argmax(axis=1) == labels).mean() >= 0.9


def test_the_linear_models_fit_and_predict_on_one_blas_thread(monkeypatch):
    """Two BLAS threads made the image baseline's fits five times slower on two cores (see `one_blas_thread`)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    seen = []

    def blas_threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    for method in ("fit", "predict_proba"):
        original = getattr(LogisticRegression, method)

        def watched(self, *arguments, original=original, **keywords):
            seen.append(blas_threads())
            return original(self, *arguments, **keywords)

        monkeypatch.setattr(LogisticRegression, method, watched)
    predict, _ = baselines.fit_linear(TABLE, table_examples(100, 0), table_examples(50, 1))
    predict(table_examples(20, 2)[0])
    assert len(seen) == 2 * len(baselines.STRENGTHS) + 1 and all(threads == {1} for threads in seen), seen


def test_the_linear_autoregression_forecasts_a_trend_from_each_windows_changes():
    spec = make_spec(
        {
            "kind": "series", "task": "forecast", "label": "level",
            "features": [{"column": "level", "name": "level", "type": "numeric"}],
            "series": {"time_column": "t", "window": 6, "horizon": 2, "seasonal_period": 1, "frequency": "D",
                       "base": "last_value", "id_column": None, "blocks": {}},
        }
    )  # fmt: skip
    generator = np.random.default_rng(0)

    def windows(count, start):
        levels = start + 3.0 * np.arange(count + 8) + generator.normal(0, 0.01, count + 8)  # a steady climb
        cut = np.stack([levels[index : index + 8] for index in range(count)])
        return {"level": cut[:, :6]}, cut[:, 6:]

    predict, _ = baselines.fit_linear(spec, windows(100, 0.0), windows(30, 1000.0))
    features, targets = windows(20, 5000.0)  # far above the training levels: the changes carry over
    outputs = predict(features)
    assert outputs.shape == (20, 2)
    np.testing.assert_allclose(outputs, targets, atol=0.2)
    trivial = baselines.TASK_BASELINES["forecast"].trivial(spec, None, targets, features["level"])
    np.testing.assert_allclose(trivial, np.repeat(features["level"][:, -1:], 2, axis=1))  # period 1: the last value


def test_the_paired_bootstrap_counts_which_is_better_on_the_same_examples():
    same = np.array([0.0, 1.0] * 50)
    assert baselines.paired_bootstrap(same, same) == (0.0, 0.0)
    model, baseline = np.zeros(100), np.zeros(100)
    baseline[:10] = 1.0  # the baseline errs on 10 examples the model gets right
    assert baselines.paired_bootstrap(model, baseline) == (0.0, 1.0)
    model[0] = 1.0
    baseline[:10] = 0.0  # one example apart: neither is surely better
    worse, better = baselines.paired_bootstrap(model, baseline)
    assert better == 0.0 and 0.5 < worse < 0.8  # the one error is in about 1 - (1 - 1/100)^100 = 63 % of resamples


def measured(trivial_model_better: float, linear_baseline_better: float) -> dict:
    return {
        "metric": "accuracy", "examples": 52,
        "baselines": [
            {"role": "trivial", "name": "majority class", "detail": "", "metrics": {"accuracy": 0.44},
             "baseline_better": 0.0, "model_better": trivial_model_better},
            {"role": "linear", "name": "logistic regression", "detail": "", "metrics": {"accuracy": 1.0},
             "baseline_better": linear_baseline_better, "model_better": 0.0},
        ],
    }  # fmt: skip


def test_the_gate_blesses_a_first_model_only_past_the_baselines_and_names_them():
    settings = GateConfig(metric="accuracy", thresholds={}, baselines="judge")
    candidate = {"accuracy": 0.9808}
    blessed = decide(candidate, None, settings, measured=measured(1.0, 0.63))
    assert blessed["blessed"] is True
    assert blessed["reasons"][0] == (
        "baseline majority class accuracy 0.4400: the model is better in 100% of 2000 resamples of the 52 test"
        " examples (needs 95%): passes"
    )
    assert "baseline logistic regression accuracy 1.0000: better than the model in 63%" in blessed["reasons"][1]
    assert blessed["reasons"][-1] == "no champion yet: the thresholds and the baselines decide"
    beaten = decide(candidate, None, settings, measured=measured(1.0, 0.97))
    assert beaten["blessed"] is False and beaten["reasons"][1].endswith("(fails at 95%): FAILS")
    useless = decide(candidate, None, settings, measured=measured(0.6, 0.99))
    assert useless["blessed"] is False and useless["reasons"][0].endswith("(needs 95%): FAILS")
    later = decide(candidate, {"accuracy": 0.99}, settings, measured=measured(1.0, 0.1))
    assert later["blessed"] is False and "does not beat" in later["reasons"][-1]  # and the champion still counts

    reported = decide(candidate, None, GateConfig(thresholds={"accuracy": 0.5}, baselines="report"),
                      measured=measured(0.6, 0.99))  # fmt: skip
    assert reported["blessed"] is True and "(not judged: gate.baselines is report)" in reported["reasons"][0]
    off = decide(candidate, None, settings, measured={"metric": "accuracy", "examples": 52, "baselines": []})
    assert off["blessed"] is True and "not measured (evaluate.baselines: false)" in off["reasons"][0]


def test_auto_thresholds_mean_the_baselines_judge_and_a_users_thresholds_mean_they_are_shown():
    automatic = config_from_dict({})
    assert automatic.gate.thresholds == {} and automatic.gate.baselines == "judge"
    assert automatic.evaluate.baselines is True
    own = config_from_dict({"gate": {"thresholds": {"accuracy": 0.8}}})
    assert own.gate.baselines == "report"
    forced = config_from_dict({"gate": {"thresholds": {"accuracy": 0.8}, "baselines": "judge"}})
    assert forced.gate.baselines == "judge"
    regression = config_from_dict({"data": {"source": "penguins", "label": "body_mass_g", "task": "regression"}})
    assert regression.gate.thresholds == {"r2": 0.0} and regression.gate.baselines == "judge"
    with pytest.raises(ConfigError, match="gate.baseline_confidence"):
        config_from_dict({"gate": {"baseline_confidence": 1.0}})
