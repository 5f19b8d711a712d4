"""The naive forecasts a time series model is measured against, in one definition used by the data side (the
statistics of what the seasonal-naive forecast misses), the model (which adds that forecast to its correction)
and the evaluation (the baselines' scores). numpy only."""

from __future__ import annotations

import numpy as np


def seasonal_positions(window: int, horizon: int, period: int) -> list[int]:
    """For each forecast step k (1 to `horizon`), the position in a window of `window` steps of the value a whole
    number of seasons (`period` steps) before it: the seasonal-naive forecast (period 1: the last value)."""
    steps = np.arange(1, horizon + 1)
    return (window - 1 + steps - period * np.ceil(steps / period).astype(int)).tolist()


BASES = ("last_value", "seasonal_naive")
"""The naive forecasts a model may correct (`SeriesSpec.base`; or `AUTOREGRESSION`)."""


def base_positions(window: int, horizon: int, period: int, base: str) -> list[int]:
    """For each forecast step, the position in the window of the value the naive forecast `base` repeats."""
    return [window - 1] * horizon if base == "last_value" else seasonal_positions(window, horizon, period)


def naive_forecasts(history: np.ndarray, horizon: int, period: int) -> dict[str, np.ndarray]:
    """The baselines of windows of the target's `history` (N, window), each (N, horizon): the last value; the
    seasonal naive (each step repeats the value one season before it); the moving average of the last season (of
    the last 3 values when there is no season)."""
    history = np.asarray(history, dtype=np.float64)
    span = period if period > 1 else 3
    return {
        "last_value": np.repeat(history[:, -1:], horizon, axis=1),
        "seasonal_naive": history[:, seasonal_positions(history.shape[1], horizon, period)],
        "moving_average": np.repeat(history[:, -span:].mean(axis=1, keepdims=True), horizon, axis=1),
    }


AUTOREGRESSION = "autoregression"
"""The base that is a linear autoregression fitted on the training block (`fit_autoregression`)."""
RIDGE_STRENGTHS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""Ridge penalties tried, per training window (on inputs standardised as scikit-learn's StandardScaler would)."""


def relative_windows(inputs: np.ndarray) -> np.ndarray:
    """(N, window x columns) of (N, window, columns) windows: each value minus its column's last value."""
    inputs = np.asarray(inputs, dtype=np.float64)
    return (inputs - inputs[:, -1:, :]).reshape(len(inputs), -1)


def autoregression_forecasts(inputs: np.ndarray, fitted: dict) -> np.ndarray:
    """(N, horizon) forecasts of `fit_autoregression`'s model: the target's (column 0's) last value plus a linear
    function of every column's window relative to its last value."""
    inputs = np.asarray(inputs, dtype=np.float64)
    changes = relative_windows(inputs) @ np.asarray(fitted["coefficients"]) + np.asarray(fitted["intercept"])
    return inputs[:, -1:, 0] + changes


def fit_autoregression(train: tuple, validation: tuple) -> dict:
    """A ridge regression from (N, window, columns) windows to the target's next (N, horizon) values, on each
    window's changes from its last value; the penalty (of `RIDGE_STRENGTHS`, per window, on each change
    standardised by its spread over the training windows) is the one with the lowest MAE on the `validation`
    windows. Returns {"coefficients": (window x columns, horizon) for unscaled changes, "intercept": (horizon,),
    "strength": the penalty} as lists."""
    inputs, labels = np.asarray(train[0], dtype=np.float64), np.asarray(train[1], dtype=np.float64)
    changes = relative_windows(inputs)  # window-major order
    spread = changes.std(axis=0)
    spread[spread < 1e-12] = 1.0  # each column's last step is always 0: its coefficient does not matter
    matrix = changes / spread
    targets = labels - inputs[:, -1:, 0]
    matrix_mean, target_mean = matrix.mean(axis=0), targets.mean(axis=0)
    centred, centred_targets = matrix - matrix_mean, targets - target_mean
    gram, moment = centred.T @ centred, centred.T @ centred_targets
    best = None
    for strength in RIDGE_STRENGTHS:
        penalty = strength * len(matrix) * np.eye(gram.shape[0])
        scaled = np.linalg.solve(gram + penalty, moment)
        coefficients = scaled / spread[:, None]
        fitted = {
            "coefficients": coefficients.tolist(),
            "intercept": (target_mean - (matrix_mean * spread) @ coefficients).tolist(),
            "strength": strength,
        }
        error = float(np.abs(autoregression_forecasts(validation[0], fitted) - validation[1]).mean())
        if best is None or error < best[0]:
            best = (error, fitted)
    return best[1]
