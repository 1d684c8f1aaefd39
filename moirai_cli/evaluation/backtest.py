"""Rolling-origin backtests: forecast the last windows of each series and score them.

Window k of K (k = 0 is the oldest) of a series with T rows starts at row
c_k = T - H - (K - 1 - k) * S: it is forecast from rows [0, c_k) and scored on rows
[c_k, c_k + H). Its cutoff, the forecast origin, is the last row before it (c_k - 1): its
timestamp when the series have timestamps. A series whose first context would be empty or
entirely missing is skipped. Actuals and metrics are float64 throughout. The scoring of one
window and its aggregation are described in ``metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from moirai_cli.forecasting.job import DEFAULT_QUANTILE_LEVELS
from moirai_cli.errors import InputError, check_at_least_one
from moirai_cli.evaluation.baseline import seasonal_naive
from moirai_cli.evaluation.forecast import QuantileForecast, scoring_levels
from moirai_cli.evaluation.metrics import (
    METRIC_INFO,
    METRIC_NAMES,
    aggregate_metrics,
    count_zero_actuals,
    geometric_mean_ratio,
    season_length_from_freq,
    seasonal_error,
    window_metrics,
)
from moirai_cli.forecasting.pipeline import as_2d

MODEL = "model"
BASELINE = "baseline"


class ForecastFn(Protocol):
    """Forecasts N series from contexts (T_i, V) and optional covariates.

    Returns sample paths (N, S, H, V), or a forecast object with ``mean`` (N, H, V) and
    ``quantiles(levels)`` (N, Q, H, V) and ``samples`` None (a quantile model's, as
    MoiraiForecaster gives for Moirai 2.0). Called with ``item_ids`` (the id of each context's
    series, so that a seeded model can draw a series' samples independently of the others) and
    with ``past_covariates`` (each (T_i, Cp)) and ``known_covariates`` (each (T_i + H, Ck))
    keyword arguments only when the backtest was given covariates.
    """

    def __call__(self, contexts: list[np.ndarray], horizon: int, *, item_ids: list[str], **covariates: Any) -> Any: ...


@dataclass
class BacktestResult:
    """Per-window scores, their summary, and what was left out of a backtest."""

    per_window: pd.DataFrame  # one row per series, window (and target variate when several)
    summary: pd.DataFrame  # index: metric; columns: model, baseline, relative (gmean model/baseline)
    forecasts: pd.DataFrame  # one row per series, window, step (and target): actual, means, quantiles
    skipped: list[str]  # ids of series too short for the windows
    history: dict[str, np.ndarray] = field(repr=False)  # id -> (T, V) target of evaluated series
    timestamps: dict[str, pd.DatetimeIndex] | None = field(default=None, repr=False)  # id -> (T,)
    horizon: int = 1
    windows: int = 1
    stride: int = 1
    season_length: int = 1
    quantile_levels: tuple[float, ...] = DEFAULT_QUANTILE_LEVELS
    target_names: tuple[str, ...] = ("target",)

    @property
    def n_series(self) -> int:
        """Number of series evaluated (not skipped)."""
        return len(self.history)

    @property
    def n_zero_actuals(self) -> int:
        """Number of zero actuals MAPE left out, over all series and windows."""
        return int(self.per_window["n_zero_actuals"].sum())


def _first_cutoff(length: int, horizon: int, windows: int, stride: int) -> int:
    """Row where the oldest window starts in a series of the given length."""
    return length - horizon - (windows - 1) * stride


def has_backtest_history(target: np.ndarray, horizon: int, windows: int, stride: int) -> bool:
    """Whether a series (T,) or (T, V) is long enough for every window, with an observed value before the first.

    Backtests skip the series that are not (they are listed in `BacktestResult.skipped`).
    """
    first = _first_cutoff(len(target), horizon, windows, stride)
    return first >= 1 and not np.isnan(np.asarray(target, dtype=np.float64)[:first]).all()


def too_short_error(horizon: int, windows: int, stride: int) -> InputError:
    """The error for a backtest in which no series has the history its windows need."""
    needed = horizon + (windows - 1) * stride + 1
    return InputError(
        f"no series is long enough for {windows} window(s) of horizon {horizon} with stride {stride}: "
        f"each needs at least {needed} rows with an observed value before the first window"
    )


def _check_samples(samples: np.ndarray, n_series: int, horizon: int, variates: int) -> np.ndarray:
    """The forecast function's output as float64 (N, S, H, V), or a ValueError saying why not."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 4 or samples.shape[0] != n_series or samples.shape[2:] != (horizon, variates):
        raise ValueError(
            f"forecast function returned shape {samples.shape}, expected ({n_series}, S, {horizon}, {variates})"
        )
    return samples


def _model_forecast(result: Any, levels: tuple[float, ...], n_series: int, horizon: int, variates: int) -> QuantileForecast:
    """The forecast function's output (sample paths, or a forecast object) summarised at `levels`."""
    samples = result if isinstance(result, np.ndarray) else getattr(result, "samples", None)
    if samples is not None:
        return QuantileForecast.from_samples(_check_samples(samples, n_series, horizon, variates), levels)
    mean = np.asarray(result.mean, dtype=np.float64)
    quantiles = np.asarray(result.quantiles(levels), dtype=np.float64)
    if mean.shape != (n_series, horizon, variates) or quantiles.shape != (n_series, len(levels), horizon, variates):
        raise ValueError(
            f"forecast function returned mean {mean.shape} and quantiles {quantiles.shape}, expected "
            f"({n_series}, {horizon}, {variates}) and ({n_series}, {len(levels)}, {horizon}, {variates})"
        )
    return QuantileForecast(mean, quantiles, levels)


def quantile_columns(prefix: str, levels: Sequence[float]) -> list[str]:
    """Column names of quantile forecasts, e.g. model_0.1."""
    return [f"{prefix}_{q:g}" for q in levels]


def summarise_windows(per_window: pd.DataFrame, series_keys: Sequence[str]) -> pd.DataFrame:
    """The summary table from per-window rows: model and baseline metrics and the per-series geometric-mean relative error.

    series_keys: the columns that name a series (its id, and the target of a multivariate one).
    """
    series_keys = list(series_keys)
    model = aggregate_metrics(per_window, prefix=f"{MODEL}_").iloc[0]
    baseline = aggregate_metrics(per_window, prefix=f"{BASELINE}_").iloc[0]
    model_per_series = aggregate_metrics(per_window, prefix=f"{MODEL}_", by=series_keys)  # (series, metrics)
    baseline_per_series = aggregate_metrics(per_window, prefix=f"{BASELINE}_", by=series_keys)
    relative = {
        name: geometric_mean_ratio(model_per_series[name].to_numpy(), baseline_per_series[name].to_numpy())
        if METRIC_INFO[name].lower_is_better
        else np.nan
        for name in METRIC_NAMES
    }
    summary = pd.DataFrame({MODEL: model, BASELINE: baseline, "relative": pd.Series(relative)})
    return summary.loc[list(METRIC_NAMES)].rename_axis("metric")


@dataclass
class _Inputs:
    """Validated backtest inputs: targets (T_i, V) and covariates as float64 arrays, ids, names."""

    ids: list[str]
    targets: list[np.ndarray]  # each (T_i, V)
    target_names: tuple[str, ...]  # (V,)
    past: list[np.ndarray] | None  # each (T_i, Cp)
    known: list[np.ndarray] | None  # each (T_i, Ck)


def _validate(
    series: Sequence[np.ndarray],
    item_ids: Sequence[str] | None,
    target_names: Sequence[str] | None,
    timestamps: Sequence[pd.DatetimeIndex] | None,
    past_covariates: Sequence[np.ndarray] | None,
    known_covariates: Sequence[np.ndarray] | None,
) -> _Inputs:
    """Check that ids, target columns, covariates and timestamps line up with the series."""
    ids = [str(i) for i in (item_ids if item_ids is not None else range(len(series)))]
    if len(ids) != len(series):
        raise InputError(f"got {len(ids)} item ids for {len(series)} series")
    if len(set(ids)) != len(ids):
        raise InputError("item ids must be unique for a backtest")
    targets = [as_2d(values, "target", item_id, np.float64) for values, item_id in zip(series, ids)]
    widths = sorted({target.shape[1] for target in targets})
    if len(widths) > 1:
        raise InputError(f"all series must have the same number of target columns, got {widths}")
    n_variates = widths[0] if widths else 1
    if target_names is None:
        target_names = ["target"] if n_variates == 1 else [f"target_{v}" for v in range(n_variates)]
    if len(target_names) != n_variates:
        raise InputError(f"got {len(target_names)} target names for {n_variates} target columns")
    past = None if past_covariates is None else [as_2d(c, "past covariates", i, np.float64) for c, i in zip(past_covariates, ids)]
    known = (
        None if known_covariates is None else [as_2d(c, "known covariates", i, np.float64) for c, i in zip(known_covariates, ids)]
    )
    for rows, what in ((past, "past covariates"), (known, "known covariates"), (timestamps, "timestamps")):
        if rows is not None and len(rows) != len(targets):
            raise InputError(f"got {what} for {len(rows)} series but {len(targets)} target series")
        for target, values, item_id in zip(targets, rows or [], ids):
            # Known covariates may run past the target (into the future); the extra rows go unused.
            too_short = len(values) < len(target) if what == "known covariates" else len(values) != len(target)
            if too_short:
                raise InputError(f"series {item_id!r} has {len(target)} target rows but {len(values)} rows of {what}")
    return _Inputs(ids, targets, tuple(target_names), past, known)


def _forecast_frame(
    ids: list[str],
    window: int,
    target_names: Sequence[str] | None,
    times: list[pd.DatetimeIndex] | None,
    actual: np.ndarray,
    forecasts: dict[str, QuantileForecast],
) -> pd.DataFrame:
    """Long frame of one window's forecasts: one row per series, target and step (in that order)."""
    n_series, horizon, n_variates = actual.shape  # (N, H, V)

    def flat(values: np.ndarray) -> np.ndarray:
        """(N, H, V) -> (N * V * H,) in series, target, step order."""
        return values.transpose(0, 2, 1).ravel()

    columns: dict[str, Any] = {"item_id": np.repeat(ids, n_variates * horizon), "window": window}
    if target_names is not None:
        columns["target"] = np.tile(np.repeat(list(target_names), horizon), n_series)
    columns["step"] = np.tile(np.arange(1, horizon + 1), n_series * n_variates)
    if times is not None:
        columns["timestamp"] = np.concatenate([np.tile(t.to_numpy(), n_variates) for t in times])
    columns["actual"] = flat(actual)
    for label, forecast in forecasts.items():
        columns[f"{label}_mean"] = flat(forecast.mean)
        for q_index, column in enumerate(quantile_columns(label, forecast.levels)):
            columns[column] = flat(forecast.quantiles[:, q_index])
    return pd.DataFrame(columns)


def run_backtest(
    series: Sequence[np.ndarray],
    horizon: int,
    forecast_fn: ForecastFn,
    *,
    windows: int = 1,
    stride: int | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    season_length: int = 1,
    item_ids: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    timestamps: Sequence[pd.DatetimeIndex] | None = None,
    past_covariates: Sequence[np.ndarray] | None = None,
    known_covariates: Sequence[np.ndarray] | None = None,
) -> BacktestResult:
    """Backtest forecast_fn and a seasonal-naive baseline on the last windows of each series.

    series: targets (T_i,) or (T_i, V), NaN = missing. timestamps (optional, each of length
    T_i) date the forecasts. past_covariates (T_i, Cp) are cut at each cutoff and
    known_covariates (T_i, Ck) at cutoff + horizon. WQL is scored over quantile_levels; the
    0.1, 0.5 and 0.9 quantiles are always computed for the point metrics, MSIS and coverage.
    The per-window and forecast frames get a target column when target_names is given or the
    target has several columns.
    """
    stride = horizon if stride is None else stride
    check_at_least_one(("horizon", horizon), ("windows", windows), ("stride", stride), ("season_length", season_length))
    inputs = _validate(series, item_ids, target_names, timestamps, past_covariates, known_covariates)
    n_variates = len(inputs.target_names)
    row_names = inputs.target_names if target_names is not None or n_variates > 1 else None

    keep = [i for i, target in enumerate(inputs.targets) if has_backtest_history(target, horizon, windows, stride)]
    if not keep:
        raise too_short_error(horizon, windows, stride)
    kept_ids = [inputs.ids[i] for i in keep]

    levels = scoring_levels(quantile_levels)
    wql_levels = tuple(sorted(float(q) for q in quantile_levels))
    metric_rows: list[dict[str, Any]] = []
    forecast_frames: list[pd.DataFrame] = []
    for window in range(windows):
        cutoffs = [_first_cutoff(len(inputs.targets[i]), horizon, windows, stride) + window * stride for i in keep]
        contexts = [inputs.targets[i][:cutoff] for i, cutoff in zip(keep, cutoffs)]
        covariates: dict[str, list[np.ndarray]] = {}
        if inputs.past is not None:
            covariates["past_covariates"] = [inputs.past[i][:cutoff] for i, cutoff in zip(keep, cutoffs)]
        if inputs.known is not None:
            covariates["known_covariates"] = [inputs.known[i][: cutoff + horizon] for i, cutoff in zip(keep, cutoffs)]
        forecasts = {
            MODEL: _model_forecast(forecast_fn(contexts, horizon, item_ids=kept_ids, **covariates), levels, len(keep), horizon, n_variates),
            BASELINE: seasonal_naive(contexts, horizon, season_length, levels),
        }
        actual = np.stack([inputs.targets[i][cutoff : cutoff + horizon] for i, cutoff in zip(keep, cutoffs)])
        for n, (i, cutoff) in enumerate(zip(keep, cutoffs)):
            for v in range(n_variates):
                y_true = actual[n, :, v]  # (H,)
                scale = seasonal_error(contexts[n][:, v], season_length)
                row: dict[str, Any] = {
                    "item_id": inputs.ids[i],
                    "window": window,
                    "cutoff": cutoff - 1 if timestamps is None else timestamps[i][cutoff - 1],  # the forecast origin
                    "window_start_row": cutoff,  # 0-based row of the window's first step = rows of history
                }
                if timestamps is not None:
                    row["forecast_start"] = timestamps[i][cutoff]
                if row_names is not None:
                    row["target"] = row_names[v]
                row.update(
                    n_observed=int(np.count_nonzero(~np.isnan(y_true))),
                    n_zero_actuals=count_zero_actuals(y_true),
                    seasonal_error=scale,
                    sum_abs_target=float(np.nansum(np.abs(y_true))),
                )
                for label, forecast in forecasts.items():
                    quantiles = forecast.quantiles[n, :, :, v]  # (Q, H)
                    scores = window_metrics(y_true, forecast.mean[n, :, v], quantiles, levels, scale, wql_levels)
                    row.update({f"{label}_{key}": value for key, value in scores.items()})
                metric_rows.append(row)
        times = (
            None
            if timestamps is None
            else [pd.DatetimeIndex(timestamps[i][cutoff : cutoff + horizon]) for i, cutoff in zip(keep, cutoffs)]
        )
        forecast_frames.append(_forecast_frame(kept_ids, window, row_names, times, actual, forecasts))

    per_window = pd.DataFrame(metric_rows)
    kept = set(kept_ids)
    return BacktestResult(
        per_window=per_window,
        summary=summarise_windows(per_window, ["item_id", "target"] if row_names is not None else ["item_id"]),
        forecasts=pd.concat(forecast_frames, ignore_index=True),
        skipped=[item_id for item_id in inputs.ids if item_id not in kept],
        history={inputs.ids[i]: inputs.targets[i] for i in keep},
        timestamps=None if timestamps is None else {inputs.ids[i]: pd.DatetimeIndex(timestamps[i]) for i in keep},
        horizon=horizon,
        windows=windows,
        stride=stride,
        season_length=season_length,
        quantile_levels=wql_levels,
        target_names=inputs.target_names,
    )


class SeriesLike(Protocol):
    """One series as the data layer gives it (moirai_cli.data.frames.SeriesRecord)."""

    item_id: Any
    timestamps: pd.DatetimeIndex  # (T,)
    target: np.ndarray  # (T, V)
    past_covariates: np.ndarray | None  # (T, Cp)
    known_covariates: np.ndarray | None  # (T [+ horizon], Ck)


def evaluate(
    forecaster: Any,
    records: Sequence[SeriesLike],
    horizon: int,
    *,
    windows: int = 1,
    stride: int | None = None,
    freq: str | None = None,
    season_length: int | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    num_samples: int | None = None,
    seed: int | None = None,
    target_names: Sequence[str] | None = None,
    **predict_options: Any,
) -> BacktestResult:
    """Backtest a MoiraiForecaster (or anything with its predict) on data records, as `moirai evaluate` does.

    The season length is season_length if given, else derived from freq. Covariates are used
    when the records carry them. target_names label the variates of a multivariate target.
    predict_options (context_length, patch_size, batch_size, progress, ...) go to
    forecaster.predict unchanged; progress is called once per series and window. num_samples
    None keeps predict's default (a quantile model such as Moirai 2.0 takes none).
    """

    def forecast_fn(contexts: list[np.ndarray], horizon: int, *, item_ids: list[str], **covariates: Any) -> Any:
        """The forecaster's forecast of one window (sample paths, or quantiles for a quantile model), each series keyed by its id."""
        target = [c[:, 0] if c.shape[1] == 1 else c for c in contexts]  # univariate as (T,)
        samples = {} if num_samples is None else {"num_samples": num_samples}
        return forecaster.predict(target, horizon, item_ids=item_ids, seed=seed, **samples, **covariates, **predict_options)

    def covariates(name: str) -> list[np.ndarray] | None:
        """The records' covariates of one kind, or None when the records have none."""
        values = [getattr(record, name) for record in records]
        return None if not values or values[0] is None else values

    n_variates = np.asarray(records[0].target).reshape(len(records[0].target), -1).shape[1] if records else 1
    return run_backtest(
        [record.target for record in records],
        horizon,
        forecast_fn,
        windows=windows,
        stride=stride,
        quantile_levels=quantile_levels,
        season_length=season_length if season_length is not None else season_length_from_freq(freq),
        item_ids=[str(record.item_id) for record in records],
        target_names=target_names if n_variates > 1 else None,
        timestamps=[record.timestamps for record in records],
        past_covariates=covariates("past_covariates"),
        known_covariates=covariates("known_covariates"),
    )


OUTPUT_COLUMNS = ("window", "cutoff", "window_start_row", "forecast_start", "target", "step", "timestamp", "actual")
"""Key columns of the per-window and forecast tables (besides the id and the model_/baseline_ scores)."""
MODEL_COLUMN = "model"  # names the forecaster of each row of a leaderboard's tables


def check_output_id_column(id_column: str, leaderboard: bool = False) -> None:
    """InputError when the input's id column would clash with a column of the backtest's output tables
    (a leaderboard's also have a `model` column)."""
    clashes = id_column in OUTPUT_COLUMNS or (leaderboard and id_column == MODEL_COLUMN)
    if clashes or id_column.startswith(("model_", "baseline_", "n_", "seasonal_", "sum_")):
        raise InputError(
            f"id column '{id_column}': the backtest's output has a column of that name; rename it in the input"
        )


def with_input_id_column(frame: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """A backtest table with its `item_id` column named like the input's id column, as `forecast` writes it."""
    return frame if id_column == "item_id" else frame.rename(columns={"item_id": id_column})
