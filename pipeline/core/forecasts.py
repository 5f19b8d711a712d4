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
"""The naive forecasts a model may correct (`SeriesSpec.base`)."""


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
