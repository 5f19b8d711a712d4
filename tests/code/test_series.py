"""Time series as a kind of data, in small parts: timestamps and their frequency, the time-ordered split and its
windows (tests that fail on leakage), the naive baselines and MASE, the request checks, and every model family on a
window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import config_from_dict
from pipeline.core.errors import ConfigError, DataError
from pipeline.core.forecasts import naive_forecasts, seasonal_positions
from pipeline.data.modalities.series import blocks, cut_windows, infer_frequency, parse_times
from pipeline.ml.evaluation import forecast_metrics
from pipeline.ml.modalities import RequestError, model_modality

LINES = pd.Index(range(2, 100))


def test_times_parse_in_the_forms_users_write_them_and_a_bad_one_names_its_line():
    iso = parse_times(pd.Series(["2024-01-01", "2024-02-01"]), "date", LINES[:2])
    assert str(iso.dtype).startswith("datetime64")
    years = parse_times(pd.Series([1700, 1701]), "YEAR", LINES[:2])
    assert years.iloc[1] == pd.Timestamp("1701-01-01")
    steps = parse_times(pd.Series([10, 11, 12]), "t", LINES[:3])
    assert steps.dtype == np.int64
    with pytest.raises(DataError, match=r"line 5: 't' holds 2.5; expected dates or whole steps"):
        parse_times(pd.Series([1.0, 2.0, 2.0, 2.5]), "t", LINES[:4])
    with pytest.raises(DataError, match=r"line 3: 'date' holds 'soon'"):
        parse_times(pd.Series(["2024-01-01", "soon"]), "date", LINES[:2])
    with pytest.raises(DataError, match="line 2: the time column 'date' is empty"):
        parse_times(pd.Series([None, "2024-01-01"]), "date", LINES[:2])


def test_the_frequency_is_inferred_despite_gaps_and_irregular_times_are_an_error():
    monthly = pd.Series(pd.date_range("2000-01-01", periods=40, freq="MS"))
    assert infer_frequency(monthly) == "MS"
    assert infer_frequency(monthly.drop(index=[5, 6, 20])) == "MS"  # gaps do not change the step
    weekly = pd.Series(pd.date_range("1958-03-29", periods=30, freq="W-SAT"))
    assert infer_frequency(weekly) == "W-SAT"
    assert infer_frequency(pd.Series(np.arange(5, 50, 5))) == "steps"
    irregular = pd.Series(
        pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-05", "2024-01-06 13:17"], format="mixed")
    )
    with pytest.raises(DataError, match="no regular grid"):
        infer_frequency(irregular)


def test_blocks_are_consecutive_and_no_window_spans_two():
    cuts = blocks(100, 0.15, 0.15)
    assert cuts == {"train": (0, 70), "validation": (70, 85), "test": (85, 100)}
    values = np.arange(100, dtype=float)[:, None]
    for start, end in cuts.values():
        inputs, labels, ends = cut_windows(values, 0, 6, 2, start, end)
        assert inputs.min() >= start and labels.max() < end  # every input and target inside the block
        assert len(labels) == end - start - 6 - 2 + 1
        assert (ends == inputs[:, -1, 0]).all()
    with_gap = values.copy()
    with_gap[40] = np.nan
    inputs, labels, _ = cut_windows(with_gap, 0, 6, 2, 0, 70)
    assert not np.isnan(inputs).any() and len(labels) == 63 - 8  # the windows that hold the gap are left out


def series_table(months: int = 240) -> pd.DataFrame:
    """A monthly series whose blocks sit at very different levels: training near 0, validation near 500, test
    near 1000 (cut by the default fractions), so a value read across a block's edge shows."""
    generator = np.random.default_rng(0)
    season = 10 * np.sin(2 * np.pi * np.arange(months) / 12)
    level = np.select(
        [np.arange(months) < round(months * 0.7), np.arange(months) < round(months * 0.85)], [0.0, 500.0], 1000.0
    )
    return pd.DataFrame(
        {
            "date": pd.date_range("2000-01-01", periods=months, freq="MS"),
            "sales": level + season + generator.normal(0, 1, months),
            "price": generator.normal(5, 1, months),
        }
    )


@pytest.fixture
def prepared(tmp_path):
    from pipeline.core import spec as data_spec
    from pipeline.data.preparation import preprocess

    path = tmp_path / "validated.parquet"
    series_table().to_parquet(path, index=False)
    config = config_from_dict({"data": {"source": "sunspots", "horizon": 2}, "preprocess": {"window": 12}})
    description = {
        "source": "csv", "kind": "series", "task": "forecast", "label": "sales", "fingerprint": "f",
        "time_column": "date",
    }  # fmt: skip
    output = tmp_path / "prepared"
    output.mkdir()
    preprocess(description, path, config.data, config.preprocess, 42, output)
    return output, data_spec.load(output)


def read_split(output, spec, split):
    from pipeline.ml.features import make_dataset

    inputs, labels = [], []
    for batch, batch_labels in make_dataset(output, spec, split, 512):
        inputs.append(np.asarray(batch["sales"]))
        labels.append(np.asarray(batch_labels))
    return np.concatenate(inputs), np.concatenate(labels)


def test_the_split_is_in_time_order_and_no_test_window_reads_an_earlier_block(prepared):
    output, spec = prepared
    assert spec.series.blocks["train"][1] < spec.series.blocks["validation"][0]
    assert spec.series.blocks["validation"][1] < spec.series.blocks["test"][0]
    test_inputs, test_labels = read_split(output, spec, "test")
    assert test_inputs.min() > 900 and test_labels.min() > 900  # nothing from the training or validation block
    validation_inputs, _ = read_split(output, spec, "validation")
    assert 400 < validation_inputs.min() and validation_inputs.max() < 600
    train_inputs, train_labels = read_split(output, spec, "train")
    assert train_inputs.max() < 100 and train_labels.max() < 100
    assert spec.split("test").num_examples == 36 - 12 - 2 + 1
    # the test windows are written in time order (each is the one before it moved on a step); the training
    # windows are shuffled
    assert np.allclose(test_inputs[1:, :-1], test_inputs[:-1, 1:])
    assert not np.allclose(train_inputs[1:, :-1], train_inputs[:-1, 1:])


def test_normalisation_statistics_come_from_the_training_block_only(prepared):
    _, spec = prepared
    sales, price = spec.features
    training = series_table()["sales"][:168]
    assert sales.column == "sales" and price.column == "price"  # the forecast column first
    assert sales.mean == pytest.approx(training.mean()) and sales.variance == pytest.approx(training.var(ddof=0))
    assert spec.series.frequency == "MS" and spec.series.seasonal_period == 12 and spec.series.window == 12
    # the window's linear autoregression (which a sine obeys exactly) errs less on the validation block than the
    # seasonal naive (its noise twice) and the last value (the season's swing)
    assert spec.series.base == "autoregression"
    coefficients = np.asarray(spec.series.autoregression["coefficients"])
    assert coefficients.shape == (12 * 2, 2)  # each step of both columns, for each of the 2 forecast steps


def test_a_series_too_short_for_three_blocks_names_the_numbers(tmp_path):
    from pipeline.data.preparation import preprocess

    path = tmp_path / "short.parquet"
    series_table(60).to_parquet(path, index=False)
    config = config_from_dict({"data": {"source": "sunspots"}, "preprocess": {"window": 24}})
    description = {
        "source": "csv", "kind": "series", "task": "forecast", "label": "sales", "fingerprint": "f",
        "time_column": "date",
    }  # fmt: skip
    with pytest.raises(DataError, match=r"has 60 steps.*window of 24 steps and a horizon of 3.*at least 180 steps"):
        preprocess(description, path, config.data, config.preprocess, 42, tmp_path / "out")


def test_naive_forecasts_and_mase_are_measured_on_the_same_windows():
    assert seasonal_positions(12, 3, 4) == [8, 9, 10]  # step k repeats the value 4 steps before it
    assert seasonal_positions(12, 5, 4) == [8, 9, 10, 11, 8]
    assert seasonal_positions(12, 2, 1) == [11, 11]  # no season: the last value
    history = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8]])
    baselines = naive_forecasts(history, 2, 4)
    assert baselines["last_value"].tolist() == [[8, 8]]
    assert baselines["seasonal_naive"].tolist() == [[5, 6]]
    assert baselines["moving_average"].tolist() == [[6.5, 6.5]]
    targets = np.array([[9.0, 10.0]])
    perfect = forecast_metrics(targets, targets, history, 4)
    assert perfect["mase"] == 0 and perfect["seasonal_naive_mase"] == 1.0
    assert perfect["seasonal_naive_mae"] == 4.0 and perfect["last_value_mae"] == 1.5
    halfway = forecast_metrics(targets, np.array([[7.0, 8.0]]), history, 4)
    assert halfway["mase"] == pytest.approx(0.5) and halfway["smape"] > 0


def test_settings_of_a_series_are_checked():
    config = config_from_dict({"data": {"source": "sunspots"}})
    assert config.data.kind == "series" and config.data.task_name == "forecast"
    assert config.gate.metric == "mase" and config.gate.thresholds == {"mase": 1.0}
    assert config.model_family == "mlp"
    with pytest.raises(ConfigError, match="data.horizon"):
        config_from_dict({"data": {"source": "sunspots", "horizon": 0}})
    with pytest.raises(ConfigError, match="data.time_column"):
        config_from_dict({"data": {"source": "penguins", "time_column": "year"}})
    with pytest.raises(ConfigError, match="gate.metric"):
        config_from_dict({"data": {"source": "sunspots"}, "gate": {"metric": "accuracy"}})
    with pytest.raises(ConfigError, match="preprocess.window"):
        config_from_dict({"data": {"source": "sunspots"}, "preprocess": {"window": 1}})


def test_requests_are_windows_of_numbers_and_anything_else_is_named(prepared):
    _, spec = prepared
    modality = model_modality("series")
    window = list(range(12))
    batch = modality.request_batch([{"sales": window, "price": window}], spec)
    assert batch["sales"].shape == (1, 12) and batch["price"].dtype == np.float32
    assert modality.request_instances(batch, spec)[0]["sales"] == [float(value) for value in window]
    problems = {
        "instances[0].sales: expected a list of the last 12 values, oldest first; got 11 values": {
            "sales": window[:11], "price": window
        },
        "instances[0].sales[3]: 'x' is not a number": {"sales": [0, 1, 2, "x", *window[4:]], "price": window},
        "instances[0].price[0]: nan": {"sales": window, "price": [float("nan"), *window[1:]]},
        "instances[0].price: missing": {"sales": window},
        "instances[0]: unknown column 'colour'": {"sales": window, "price": window, "colour": window},
    }  # fmt: skip
    for message, instance in problems.items():
        with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
            modality.request_batch([instance], spec)
    univariate = dataclasses.replace(spec, features=spec.features[:1])
    assert modality.request_batch([window], univariate)["sales"].shape == (1, 12)  # a plain list: one column
    assert len(modality.columnar_instances({"sales": [window, window]}, univariate)) == 2


@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn", "transformer"])
def test_every_family_forecasts_the_horizon_in_the_series_units(prepared, family):
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.models import build_model

    output, spec = prepared
    hyperparameters = {
        **defaults_from_config(config_from_dict({})),
        "family": family,
        "rnn_units": 8,
        "hidden_units": [8],
    }
    model = build_model(hyperparameters, spec)
    inputs, _ = read_split(output, spec, "test")
    prices = np.full_like(inputs, 5.0)
    outputs = np.asarray(model({"sales": inputs, "price": prices}))
    assert outputs.shape == (len(inputs), 2)
    # an untrained network's correction is small: the output starts near the naive forecast, in the series' units
    naive = inputs[:, seasonal_positions(12, 2, 12)]
    assert np.abs(outputs - naive).mean() < 0.2 * np.abs(naive).mean()


def test_a_column_named_value_builds_with_the_autoregressive_base(prepared):
    """`value` is a series' commonest column name; its layers once clashed with the autoregression's own
    (`base_last_value` twice: a generated hourly series failed in the train stage)."""
    from pipeline.core.forecasts import AUTOREGRESSION
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.models import build_model

    _, spec = prepared
    series = spec.series
    fitted = {
        "coefficients": np.zeros((series.window * len(spec.features), series.horizon)).tolist(),
        "intercept": np.zeros(series.horizon).tolist(),
    }
    features = [dataclasses.replace(spec.features[0], column="value", name="value"), *spec.features[1:]]
    spec = dataclasses.replace(
        spec, features=features, series=dataclasses.replace(series, base=AUTOREGRESSION, autoregression=fitted)
    )
    model = build_model({**defaults_from_config(config_from_dict({})), "family": "mlp", "hidden_units": [4]}, spec)
    windows = np.arange(2 * series.window, dtype="float32").reshape(2, series.window)
    outputs = np.asarray(model({"value": windows, "price": np.full_like(windows, 5.0)}))
    assert outputs.shape == (2, series.horizon)


def test_the_lookback_crops_what_the_network_reads_not_the_naive_forecast(prepared):
    from pipeline.core.search_space import validate_entry
    from pipeline.ml.hyperparameters import defaults_from_config
    from pipeline.ml.models import build_model

    output, spec = prepared
    # the seasonal naive reads the window's first steps only (the autoregression, which reads them all, is not it)
    naive = dataclasses.replace(spec.series, base="seasonal_naive", autoregression=None)
    spec = dataclasses.replace(spec, series=naive)
    validate_entry("tune.space.series_lookback", "series_lookback", {"choice": [4, 8, 12]}, "random")
    hyperparameters = {**defaults_from_config(config_from_dict({})), "family": "mlp", "series_lookback": 4}
    model = build_model(hyperparameters, spec)
    assert model.get_layer("lookback").output.shape[1] == 4 and model.get_layer("flatten").output.shape[1] == 4 * 2
    inputs, _ = read_split(output, spec, "test")
    cropped = np.asarray(model({"sales": inputs, "price": np.full_like(inputs, 5.0)}))
    changed = inputs.copy()
    assert seasonal_positions(12, 2, 12) == [0, 1]  # the seasonal-naive forecast reads the window's first steps
    changed[:, 2:8] += 50.0  # steps neither the network nor the naive forecast reads
    assert np.allclose(np.asarray(model({"sales": changed, "price": np.full_like(inputs, 5.0)})), cropped)
    with pytest.raises(ConfigError, match="model.series_lookback"):
        config_from_dict({"model": {"series_lookback": 1}})


def test_the_family_can_be_searched_among_those_that_read_the_data():
    from pipeline.ml.hyperparameters import searched_names

    space = {"family": {"choice": ["mlp", "rnn"]}, "rnn_units": {}, "filters": {}, "units": {}}
    assert searched_names(space, "mlp") == ["family", "rnn_units", "units"]  # the CNN's filters: no trial reads them
    space = {"family": {"choice": ["mlp", "rnn"]}, "rnn_units": {"choice": [8, 16]}}
    config = config_from_dict({"data": {"source": "sunspots"}, "tune": {"space": space}})
    assert config.tune.space["family"] == {"choice": ["mlp", "rnn"]}
    with pytest.raises(ConfigError, match=r"tune.space.family.*table data cannot be read by cnn"):
        config_from_dict({"data": {"source": "penguins"}, "tune": {"space": {"family": {"choice": ["mlp", "cnn"]}}}})
