"""Forecast arrays back to long tables: one row per item, future timestamp (and target, when multivariate)."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from moirai_cli.data.frames import SeriesDataset, SeriesRecord
from moirai_cli.errors import InputError

TARGET_COLUMN = "target"
SAMPLE_COLUMN = "sample"
VALUE_COLUMN = "value"
MEAN_COLUMN = "mean"


class ForecastLike(Protocol):
    """What the builders need from a forecast: mean (N, H, V), quantiles and sample paths (N, S, H, V) if any."""

    samples: np.ndarray | None

    @property
    def mean(self) -> np.ndarray: ...

    def quantiles(self, levels: Sequence[float]) -> np.ndarray: ...


def quantile_column(level: float) -> str:
    """A quantile level as AutoGluon names its column: 0.1 -> '0.1', 0.05 -> '0.05'."""
    return repr(float(level))


def check_output_columns(
    dataset: SeriesDataset, quantile_levels: Sequence[float] | None = None, *, samples: bool = False
) -> None:
    """InputError when an id or timestamp column has the name of a column the forecast writes.

    The forecast table (checked when `quantile_levels` is given) has `mean`, one column per level (and
    `target` for several variates); the samples table (`samples`) has `sample` and `value` (and `target`). A key column with such a
    name would be overwritten, so it is refused before any work; rename it in the input.
    """
    keys = {"id": dataset.id_column, "timestamp": dataset.timestamp_column}
    if keys["id"] == keys["timestamp"]:
        raise InputError(
            f"{dataset.source}: the timestamp column is called '{keys['id']}', the name the output gives the "
            "series ids; rename it in the input"
        )
    variates = {TARGET_COLUMN} if len(dataset.target_names) > 1 else set()
    tables = {}
    if quantile_levels is not None:
        tables["forecast"] = {MEAN_COLUMN, *map(quantile_column, quantile_levels), *variates}
    if samples:
        tables["samples"] = {SAMPLE_COLUMN, VALUE_COLUMN, *variates}
    for role, name in keys.items():
        for table, taken in tables.items():
            if name in taken:
                raise InputError(
                    f"{dataset.source}: the {role} column '{name}' has the name of a column of the {table} output "
                    f"({', '.join(sorted(taken))}); rename it in the input"
                )


def _key_columns(
    dataset: SeriesDataset, records: Sequence[SeriesRecord], horizon: int, inner: int = 1
) -> dict[str, object]:
    """Id, timestamp and (multivariate) target columns, ordered item > target > [inner] > timestamp."""
    names = dataset.target_names
    n_var = len(names)
    per_item = n_var * inner * horizon
    ids = pd.Series([r.item_id for r in records]).repeat(per_item).reset_index(drop=True)
    stamps = [dataset.future_index(r, horizon) for r in records]
    index = np.tile(np.arange(horizon), len(records) * n_var * inner) + np.repeat(
        np.arange(len(records)) * horizon, per_item
    )
    timestamps = stamps[0].append(stamps[1:]) if len(stamps) > 1 else stamps[0]
    columns: dict[str, object] = {dataset.id_column: ids, dataset.timestamp_column: timestamps[index]}
    if n_var > 1:
        columns[TARGET_COLUMN] = np.tile(np.repeat(np.array(names, dtype=object), inner * horizon), len(records))
    return columns


def forecast_frame(
    dataset: SeriesDataset,
    forecast: ForecastLike,
    quantile_levels: Sequence[float],
    *,
    start: int = 0,
) -> pd.DataFrame:
    """Long table of the forecast for series `start .. start+N` of `dataset`: keys, `mean`, one column per level.

    Values are float64 on every surface: computed in the forecast's own precision, then widened exactly.
    """
    check_output_columns(dataset, quantile_levels)
    mean = forecast.mean  # (N, H, V)
    n, horizon, n_var = mean.shape
    records = dataset.series[start : start + n]
    columns = _key_columns(dataset, records, horizon)
    empty = np.repeat(_never_observed(records).reshape(-1), horizon)  # (N * V * H,) rows left empty
    columns[MEAN_COLUMN] = np.where(empty, np.nan, mean.transpose(0, 2, 1).reshape(-1).astype(np.float64))  # (N, V, H)
    if len(quantile_levels):
        q = forecast.quantiles(quantile_levels).astype(mean.dtype, copy=False).astype(np.float64)
        q = q.transpose(0, 3, 2, 1).reshape(-1, len(quantile_levels))  # (N, V, H, Q)
        q = np.where(empty[:, None], np.nan, q)
        for j, level in enumerate(quantile_levels):
            columns[quantile_column(level)] = q[:, j]
    return pd.DataFrame(columns)


def _never_observed(records: Sequence[SeriesRecord]) -> np.ndarray:
    """(N, V): the variates of each series with no observed value, whose forecasts are left empty (NaN)."""
    return np.stack([np.isnan(record.target).all(axis=0) for record in records]) if records else np.zeros((0, 1), bool)


def samples_frame(dataset: SeriesDataset, forecast: ForecastLike, *, start: int = 0) -> pd.DataFrame:
    """Long table of sample paths: keys, `sample` (0..S-1) and `value`; each path's rows are consecutive."""
    check_output_columns(dataset, samples=True)
    samples = forecast.samples
    if samples is None:
        raise InputError("this forecast has no sample paths: its model predicts quantiles (Moirai 2.0)")
    n, n_samples, horizon, n_var = samples.shape
    records = dataset.series[start : start + n]
    columns = _key_columns(dataset, records, horizon, inner=n_samples)
    key_order = list(columns)
    columns[SAMPLE_COLUMN] = np.tile(np.repeat(np.arange(n_samples), horizon), n * n_var)
    empty = np.repeat(_never_observed(records).reshape(-1), n_samples * horizon)  # (N * V * S * H,)
    values = samples.transpose(0, 3, 1, 2).reshape(-1).astype(np.float64)  # (N, V, S, H), widened exactly
    columns[VALUE_COLUMN] = np.where(empty, np.nan, values)
    return pd.DataFrame(columns, columns=[*key_order, SAMPLE_COLUMN, VALUE_COLUMN])
