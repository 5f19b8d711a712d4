"""Time series on the data side: a table with a time column (`data.time_column`; the built-in `sunspots`,
`co2` and `elec_equip` ship in statsmodels' wheel), one or more numeric value columns, the one to forecast
(`data.label`) among them, and optionally an id column that tells several series apart.

Validation parses the timestamps (an error names the line), the suite checks that they are unique and increase,
and the steps' frequency is inferred, with gaps and missing values reported. Preprocess cuts each series into
three consecutive blocks, training, validation then test, in time order, and each block into windows that lie
wholly inside it: `preprocess.window` steps of every value column as the inputs, the next `data.horizon` values
of the target as the label. So no window spans two blocks, and the first window of a block is only read as
history: between the last training target and the first validation target lie `window` steps. Normalisation
statistics come from the training block's values only; the training windows are then shuffled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.forecasts import (
    AUTOREGRESSION,
    BASES,
    autoregression_forecasts,
    base_positions,
    fit_autoregression,
)
from pipeline.core.kinds import SEASONAL_PERIODS
from pipeline.core.spec import FeatureSpec, SeriesSpec
from pipeline.data import expectations, preparation, shuffle, sources
from pipeline.data.columns import input_names
from pipeline.data.modalities.table import TableData

# pandas frequency -> the season's length in steps, for `data.seasonal_period: auto`
CALENDAR_SEASONS = {"h": 24, "D": 7, "B": 5, "W": 52, "MS": 12, "ME": 12, "QS": 4, "QE": 4}
NUMBERED_STEPS = "steps"


def step_label(value) -> str:
    """A step's time as people write it: a date (2008-01-01) at midnight, else ISO 8601; a step number as is."""
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    return str(value)


def parse_times(values: pd.Series, column: str, lines: pd.Index) -> pd.Series:
    """Timestamps as datetime64 (dates and times in any format pandas reads, or years as whole numbers), or
    whole step numbers as int64. Raises DataError naming the first line that does not parse."""
    if values.isna().any():
        line = lines[int(np.flatnonzero(values.isna().to_numpy())[0])]
        raise DataError(f"line {line}: the time column {column!r} is empty; every row needs its time.")
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy()
        if not np.all(np.equal(np.mod(numbers, 1), 0)):
            position = int(np.flatnonzero(np.mod(numbers, 1))[0])
            raise DataError(
                f"line {lines[position]}: {column!r} holds {values.iloc[position]}; expected dates or whole steps."
            )
        numbers = numbers.astype(np.int64)
        if numbers.min() >= 1000 and numbers.max() <= 2999:  # years
            return pd.Series(pd.to_datetime(numbers.astype(str), format="%Y"), index=values.index, name=column)
        return pd.Series(numbers, index=values.index, name=column)
    parsed = pd.to_datetime(values.astype(str), errors="coerce", format="mixed")
    if parsed.isna().any():
        position = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataError(
            f"line {lines[position]}: {column!r} holds {values.iloc[position]!r}, which is not a date or time;"
            " write times as ISO 8601 (2024-01-31 or 2024-01-31T12:00) or as whole step numbers."
        )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed


def infer_frequency(times: pd.Series) -> str:
    """The steps' frequency: a pandas name (`MS`, `W-SAT`, `YS-JAN`, `D`, `h`...) for timestamps, `steps` for
    numbered steps. The commonest step decides; gaps (missing steps) do not change it.

    Raises:
        DataError: for a single timestamp, or timestamps that fall off every regular grid.
    """
    ordered = pd.Series(times).sort_values().drop_duplicates().reset_index(drop=True)
    if len(ordered) < 3:
        raise DataError(f"a series of {len(ordered)} distinct times; a forecast needs a series of many steps.")
    if not pd.api.types.is_datetime64_any_dtype(ordered):
        return NUMBERED_STEPS
    for length in (len(ordered), 64, 16, 5):  # the whole series, else its start (gaps make infer_freq give up)
        for start in range(0, max(1, len(ordered) - length + 1), max(1, length)):
            name = pd.infer_freq(pd.DatetimeIndex(ordered[start : start + length]))
            if name is not None and len(pd.date_range(ordered.iloc[0], ordered.iloc[-1], freq=name)) >= len(ordered):
                grid = pd.date_range(ordered.iloc[0], ordered.iloc[-1], freq=name)
                if ordered.isin(grid).all():
                    return name
    first = ordered.iloc[0]
    raise DataError(
        f"the times from {first} on fall on no regular grid (hourly, daily, weekly, monthly, quarterly, yearly...);"
        " a forecast needs evenly spaced steps: resample the series first, or number the steps."
    )


def step_grid(times: pd.Series, frequency: str) -> pd.Index:
    """Every step from the first time to the last, gaps included."""
    if frequency == NUMBERED_STEPS:
        numbers = np.sort(times.unique())
        step = int(np.min(np.diff(numbers))) if len(numbers) > 1 else 1
        return pd.Index(np.arange(numbers[0], numbers[-1] + 1, step), name=times.name)
    return pd.date_range(times.min(), times.max(), freq=frequency, name=times.name)


def seasonal_period(setting, source: str, frequency: str) -> int:
    """`data.seasonal_period`, or for `auto` the built-in series' own or the calendar's (12 for months...)."""
    if setting != "auto":
        return int(setting)
    if source in SEASONAL_PERIODS:
        return SEASONAL_PERIODS[source]
    return CALENDAR_SEASONS.get(frequency.split("-")[0], 1)


def window_length(setting, period: int) -> int:
    """`preprocess.window`, or for `auto` two seasons (at least 8 steps)."""
    return int(setting) if setting != "auto" else max(2 * period, 8)


def series_groups(table: pd.DataFrame, time_column: str, id_column: Optional[str]):
    """(series name, its rows sorted by time) for each series in the table."""
    if id_column is None:
        yield "", table.sort_values(time_column, kind="stable")
        return
    for name, rows in table.groupby(id_column, sort=True):
        yield str(name), rows.sort_values(time_column, kind="stable")


def regular_values(rows: pd.DataFrame, time_column: str, columns: list[str], frequency: str, fill: bool):
    """(the grid of steps, the values (steps, columns) on it); missing steps and values are NaN, or with `fill`
    interpolated linearly in time (the ends repeat the nearest value)."""
    grid = step_grid(rows[time_column], frequency)
    frame = rows.set_index(time_column)[columns].astype("float64").reindex(grid)
    if fill:
        frame = frame.interpolate(method="linear", limit_direction="both")
    return grid, frame.to_numpy()


def blocks(steps: int, validation_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Consecutive [start, end) blocks of a series' steps: training, then validation, then test."""
    test, held = round(steps * test_fraction), round(steps * validation_fraction)
    train = steps - held - test
    return {"train": (0, train), "validation": (train, train + held), "test": (train + held, steps)}


def cut_windows(values: np.ndarray, target: int, window: int, horizon: int, start: int, end: int):
    """Windows wholly inside [start, end): inputs (N, window, columns) and labels (N, horizon) of the target
    column, and each window's last step; windows with a missing value are left out."""
    starts = np.arange(start, end - window - horizon + 1)
    if len(starts) == 0:
        return np.zeros((0, window, values.shape[1])), np.zeros((0, horizon)), starts
    inputs = np.stack([values[first : first + window] for first in starts])
    labels = np.stack([values[first + window : first + window + horizon, target] for first in starts])
    complete = ~(np.isnan(inputs).any(axis=(1, 2)) | np.isnan(labels).any(axis=1))
    return inputs[complete], labels[complete], starts[complete] + window - 1


def too_short(name: str, steps: int, window: int, horizon: int, settings) -> DataError:
    per_block = window + horizon
    needed = int(np.ceil(per_block / min(settings.validation_fraction, settings.test_fraction)))
    which = f"series {name!r}" if name else "the series"
    return DataError(
        f"{which} has {steps} steps: each of the three blocks (training, validation {settings.validation_fraction},"
        f" test {settings.test_fraction}) needs a window of {window} steps and a horizon of {horizon} (at least"
        f" {per_block} steps), so the series needs at least {needed} steps. Bring a longer series, or shorten"
        " preprocess.window or data.horizon."
    )


def value_columns(table: pd.DataFrame, time_column: str, id_column: Optional[str], label: str) -> list[str]:
    """The numeric columns a window holds, the target first. Raises DataError for a column of another type."""
    columns = [str(column) for column in table.columns if column not in (time_column, id_column)]
    for column in columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise DataError(
                f"column {column!r} is not numeric; a series' value columns are numbers. Drop it with"
                f" data.drop_columns: [{column}], or name it in data.series_id_column if it tells series apart."
            )
    if label not in columns:
        raise DataError(f"the column to forecast, {label!r}, is not among the value columns {columns}.")
    return [label] + [column for column in columns if column != label]


@dataclasses.dataclass(frozen=True)
class Windows:
    """A table's series cut into windows: inputs (N, window, columns), labels (N, horizon), each window's series
    and last step, and each window's block."""

    inputs: np.ndarray
    labels: np.ndarray
    series: list[str]
    ends: list[str]
    split: np.ndarray


def windows_of(
    table: pd.DataFrame, series: SeriesSpec, columns: list[str], fill: bool, settings=None
) -> tuple[Windows, dict[str, list[str]]]:
    """Every window of every series in `table`; with `settings` (preprocess) cut in the three blocks, else all
    in one ("test"). Returns (the windows, the first series' blocks as [first, last] times)."""
    parts, spans = [], {}
    for name, rows in series_groups(table, series.time_column, series.id_column):
        grid, values = regular_values(rows, series.time_column, columns, series.frequency, fill)
        if settings is None:
            cuts = {"test": (0, len(grid))}
        else:
            cuts = blocks(len(grid), settings.validation_fraction, settings.test_fraction)
            if min(end - start for start, end in cuts.values()) < series.window + series.horizon:
                raise too_short(name, len(grid), series.window, series.horizon, settings)
        for split, (start, end) in cuts.items():
            inputs, labels, ends = cut_windows(values, 0, series.window, series.horizon, start, end)
            parts.append((split, inputs, labels, [name] * len(ends), [step_label(grid[end]) for end in ends]))
            if not spans.get(split) and end > start:
                spans[split] = [step_label(grid[start]), step_label(grid[end - 1])]
    return (
        Windows(
            inputs=np.concatenate([part[1] for part in parts]) if parts else np.zeros((0, series.window, len(columns))),
            labels=np.concatenate([part[2] for part in parts]) if parts else np.zeros((0, series.horizon)),
            series=[name for part in parts for name in part[3]],
            ends=[end for part in parts for end in part[4]],
            split=np.array([part[0] for part in parts for _ in part[3]], dtype=object),
        ),
        spans,
    )


def step_notes(table: pd.DataFrame, time_column: str, id_column: Optional[str], frequency: str) -> list[str]:
    """Warnings on the validated series: gaps (how many steps are missing, the first) and missing values."""
    notes = []
    for name, rows in series_groups(table, time_column, id_column):
        grid = step_grid(rows[time_column], frequency)
        missing = grid.difference(pd.Index(rows[time_column]))
        which = f"series {name!r}" if name else "the series"
        if len(missing):
            notes.append(
                f"{which}: {len(missing)} of {len(grid)} steps ({frequency}) are missing, the first at {missing[0]};"
                " preprocess.missing_steps says what happens to them (interpolate, or drop the windows)"
            )
        empty = {column: int(count) for column, count in rows.isna().sum().items() if count}
        if empty:
            notes.append(f"{which}: missing values {empty} (preprocess.missing_steps applies to them too)")
    return notes


class SeriesData(TableData):
    kind = "series"
    chunked_validation = False  # the timestamps are checked across the whole table

    def write_snapshot(self, data, target: Path) -> None:
        if data.source in sources.STATSMODELS_SERIES:
            sources.write_builtin_series_csv(data.source, target)
        else:
            super().write_snapshot(data, target)

    def ingest(self, data, output_dir, final_dir, batches, runner) -> dict:
        description = super().ingest(data, output_dir, final_dir, batches, runner)
        description.update(time_column=data.time_column_name, id_column=data.series_id_column)
        return description

    def ingest_summary(self, description: dict) -> str:
        return f"{description['format']} file, a series in time by {description['time_column']!r}"

    def validation_frame(self, description, path, runner=None) -> pd.DataFrame:
        table = super().validation_frame(description, path, runner)
        column = description["time_column"]
        for needed in (column, description.get("id_column")):
            if needed and needed not in table.columns:
                raise DataError(f"{path}: no column {needed!r}; the columns are {list(table.columns)}.")
        table[column] = parse_times(table[column], column, table.index)
        return table

    def profile(self, frame, description):
        suite = expectations.profile_series(
            frame, description["label"], description["time_column"], description.get("id_column")
        )
        return suite, []

    def check_validated(self, frame, description) -> list[str]:
        time_column, id_column = description["time_column"], description.get("id_column")
        value_columns(frame, time_column, id_column, description["label"])
        frequency = infer_frequency(frame[time_column])
        return step_notes(frame, time_column, id_column, frequency)

    def validated_fields(self, description: dict) -> dict:
        return {
            **super().validated_fields(description),
            "time_column": description["time_column"],
            "id_column": description.get("id_column"),
        }

    def prepare(self, description, data_path, data, split, folder, runner) -> tuple:
        """The windows of each series' three blocks, written in one task (a series is small beside its
        windows); the training windows shuffled."""
        table = pd.read_parquet(data_path)
        label, time_column, id_column = description["label"], description["time_column"], description.get("id_column")
        columns = value_columns(table, time_column, id_column, label)
        frequency = infer_frequency(table[time_column])
        period = seasonal_period(data.seasonal_period, description["source"], frequency)
        settings = split.settings
        series = SeriesSpec(
            time_column=time_column,
            window=window_length(settings.window, period),
            horizon=data.horizon,
            seasonal_period=period,
            frequency=frequency,
            id_column=id_column,
        )
        if series.window < period:
            raise DataError(
                f"preprocess.window is {series.window} steps, shorter than a season ({period} steps,"
                " data.seasonal_period): the seasonal-naive forecast reads a whole season; lengthen the window."
            )
        fill = settings.missing_steps == "interpolate"
        windows, spans = windows_of(table, series, columns, fill, settings)
        chosen = {name: np.flatnonzero(windows.split == name) for name in ("train", "validation", "test")}
        for name, rows in chosen.items():
            if len(rows) == 0:
                raise DataError(
                    f"no complete window in the {name} block (every one holds a missing value);"
                    " set preprocess.missing_steps: interpolate, or bring a series with fewer gaps."
                )
        chosen["train"] = np.random.default_rng(split.seed).permutation(chosen["train"])
        # Statistics of the training block's values only (never a validation or test value).
        training = self.training_values(table, series, columns, fill, settings)
        names = input_names(columns)
        specs = []
        for position, column in enumerate(columns):
            values = training[:, position]
            values = values[~np.isnan(values)]
            specs.append(
                FeatureSpec(
                    column=column,
                    name=names[column],
                    type="numeric",
                    mean=float(values.mean()),
                    variance=float(values.var()),
                    median=float(np.median(values)),
                )
            )
        train = windows.inputs[chosen["train"]], windows.labels[chosen["train"]]
        validation = windows.inputs[chosen["validation"]], windows.labels[chosen["validation"]]
        autoregression = fit_autoregression(train, validation)

        def forecasts(inputs, base):
            if base == AUTOREGRESSION:
                return autoregression_forecasts(inputs, autoregression)
            return inputs[:, base_positions(series.window, series.horizon, period, base), 0]

        # The model corrects the base that errs least on the validation block: a naive forecast, or the linear
        # autoregression fitted on the training block (sunspots: MASE 0.65 where the seasonal naive is 1).
        bases = (*BASES, AUTOREGRESSION)
        base = min(bases, key=lambda name: np.abs(forecasts(validation[0], name) - validation[1]).mean())
        changes = train[1] - forecasts(train[0], base)
        layout = preparation.shard_layout(len(windows.labels), chosen, settings.shard_size)
        features = {spec.name: windows.inputs[:, :, position] for position, spec in enumerate(specs)}
        examples = preparation.serialise_examples(features, windows.labels, split.task.name)
        shuffle.write_run(Path(folder), 0, layout.shards, layout.positions, examples, len(layout.names))
        fields = {
            "features": specs,
            "series": dataclasses.replace(
                series, blocks=spans, base=base, autoregression=autoregression if base == AUTOREGRESSION else None
            ),
            "dropped_columns": description.get("dropped_columns", []),
            "label_statistics": {"mean": float(changes.mean()), "variance": float(changes.var())},
        }
        return windows.labels, chosen, layout, 1, fields

    @staticmethod
    def training_values(table, series: SeriesSpec, columns: list[str], fill: bool, settings) -> np.ndarray:
        parts = []
        for _, rows in series_groups(table, series.time_column, series.id_column):
            grid, values = regular_values(rows, series.time_column, columns, series.frequency, fill)
            start, end = blocks(len(grid), settings.validation_fraction, settings.test_fraction)["train"]
            parts.append(values[start:end])
        return np.concatenate(parts)

    def feedback_data(self, data, path):
        """New observations (later times of the same series, the label column included) as a CSV or Parquet
        source that keeps the series' time column."""
        batch = super().feedback_data(data, path)
        return dataclasses.replace(batch, time_column=data.time_column_name)

    def read_table(self, path, spec) -> pd.DataFrame:
        """New observations: a CSV or Parquet file with the time column and the model's value columns."""
        path = Path(path)
        table = self.read_new_table(path)
        series = spec.series
        needed = [series.time_column, *([series.id_column] if series.id_column else [])]
        needed += [feature.column for feature in spec.features]
        missing = [column for column in needed if column not in table.columns]
        if missing:
            raise DataError(f"{path}: columns {missing} are missing; a window reads {needed}.")
        lines = pd.Index(np.arange(len(table)) + 2, name="line")
        table.index = lines
        table[series.time_column] = parse_times(table[series.time_column], series.time_column, lines)
        duplicated = table.duplicated([series.time_column, *needed[1 : 2 if series.id_column else 1]])
        if duplicated.any():
            raise DataError(f"{path}: line {lines[np.flatnonzero(duplicated)[0]]} repeats a time; times are unique.")
        return table

    def read_examples(self, path, spec):
        """Every complete window of new observations whose next `horizon` values are in the file too (the
        monitor's live check), the label being those values."""
        series, columns = spec.series, [feature.column for feature in spec.features]
        table = self.read_table(path, spec)
        windows, _ = windows_of(table, series, columns, fill=True)
        if len(windows.labels) == 0:
            raise DataError(
                f"{path}: no window of {series.window} steps followed by {series.horizon} more; a batch of new"
                f" observations needs at least {series.window + series.horizon} consecutive steps."
            )
        ids = [f"{name}@{end}" if name else end for name, end in zip(windows.series, windows.ends, strict=True)]
        inputs = {feature.name: windows.inputs[:, :, position] for position, feature in enumerate(spec.features)}
        return ids, inputs, windows.labels

    def read_requests(self, path, spec):
        """The last window of each series in the file: the forecast of what comes next."""
        series = spec.series
        table = self.read_table(path, spec)
        ids, inputs = [], {feature.name: [] for feature in spec.features}
        columns = [feature.column for feature in spec.features]
        for name, rows in series_groups(table, series.time_column, series.id_column):
            grid, values = regular_values(rows, series.time_column, columns, series.frequency, fill=True)
            if len(grid) < series.window or np.isnan(values).any():
                which = f"series {name!r}" if name else "the file"
                raise DataError(
                    f"{path}: {which} has {len(grid)} steps with values; the model reads the last {series.window}."
                )
            ids.append(f"{name}@{step_label(grid[-1])}" if name else step_label(grid[-1]))
            for position, feature in enumerate(spec.features):
                inputs[feature.name].append(values[-series.window :, position])
        return ids, {name: np.asarray(values, dtype=np.float32) for name, values in inputs.items()}


MODALITY = SeriesData()
