"""Forecast accuracy metrics for one series and window, and how they are aggregated.

Every metric takes the actuals ``y_true`` of one evaluation window (shape (H,); NaN marks a
missing observation, which is left out of every metric) and a forecast for the same steps.
Point metrics use the forecast median for absolute-error metrics (MAE, MASE, sMAPE, MAPE) and
the forecast mean for RMSE, as GluonTS's evaluator does: each is the point forecast that is
optimal for its loss.

Definitions (sums and means run over the observed steps of the window):

- MAE: mean |y - median|.
- RMSE: sqrt(mean (y - mean)^2).
- MASE: MAE / seasonal error, where the seasonal error is the mean |y_t - y_{t-m}| of the
  history before the window (pairs with a missing value left out). When the history has no
  such pair (it is shorter than m + 1, or too sparse) the lag falls back to m = 1.
- sMAPE: mean 2|y - median| / (|y| + |median|), bounded 0..2 (GluonTS and M4 convention; the
  utilsforecast variant is half of it). A step where both are 0 counts as 0 error.
- MAPE: mean |y - median| / |y| over the steps where y != 0; the zeros left out are counted.
- WQL: mean over the quantile levels q of sum 2*pinball_q(y, yhat_q) / sum |y|
  (GluonTS ``mean_weighted_sum_quantile_loss``, fev ``WQL``).
- MSIS: mean of (u - l + 2/a (l - y)[y < l] + 2/a (y - u)[y > u]) / seasonal error, with
  a = 0.2: the 80% interval between the 0.1 and 0.9 quantiles (GluonTS and M4 convention).
- Coverage: share of observed steps with l <= y <= u for the same 80% interval.

Aggregation over series and windows (multivariate targets: one row per variate):

- MAE, RMSE, MASE, sMAPE, MAPE, MSIS and coverage: the mean over series-windows of the
  per-window values (fev averages per-series values the same way). Windows where a metric is
  undefined (no observed step, a zero seasonal error, no non-zero actual) are left out.
- WQL: the ratio of sums over all series-windows, sum of quantile losses / sum |y|, as GluonTS
  ``mean_weighted_sum_quantile_loss`` and fev compute it on a whole dataset, so that series
  with large values weigh more and near-zero series cannot blow the average up.
- Relative error against the seasonal-naive baseline: per series, the metric aggregated over
  its windows as above, then the geometric mean over series of model / baseline, each ratio
  clipped to [0.01, 100] (0/0 counts as 1); below 1 means the model is better.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

INTERVAL_ALPHA = 0.2  # MSIS and coverage use the central 1 - alpha = 80% interval
INTERVAL_LEVELS = (INTERVAL_ALPHA / 2, 1 - INTERVAL_ALPHA / 2)  # (0.1, 0.9)
MEDIAN_LEVEL = 0.5
RATIO_CLIP = (0.01, 100.0)  # bounds of one series' model/baseline error ratio

# Metrics in table order; every one is an error (lower is better) except coverage.
METRIC_NAMES = ("mae", "rmse", "mase", "smape", "mape", "wql", "msis", "coverage")


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is labelled in tables and aggregated over series and windows."""

    label: str
    aggregation: str
    lower_is_better: bool = True


METRIC_INFO: dict[str, MetricInfo] = {
    "mae": MetricInfo("MAE", "mean"),
    "rmse": MetricInfo("RMSE", "mean"),
    "mase": MetricInfo("MASE", "mean"),
    "smape": MetricInfo("sMAPE", "mean, 0..2"),
    "mape": MetricInfo("MAPE", "mean, zero actuals left out"),
    "wql": MetricInfo("WQL", "sum quantile loss / sum |y|"),
    "msis": MetricInfo("MSIS", "mean, 80% interval"),
    "coverage": MetricInfo("Coverage 80%", "mean, ideal 0.80", lower_is_better=False),
}

# Base seasonality per pandas offset alias: one day for sub-daily data, one week of days,
# one year of weeks, months and quarters (the table AutoGluon and statsforecast use). GluonTS
# uses 1 for daily and weekly data and one day (1440) for minutes; pass an explicit
# season length to follow it instead.
_BASE_SEASONALITY = {
    "Y": 1, "YE": 1, "YS": 1, "A": 1, "AS": 1, "BY": 1, "BYE": 1, "BYS": 1, "BA": 1, "BAS": 1,
    "Q": 4, "QE": 4, "QS": 4, "BQ": 4, "BQE": 4, "BQS": 4,
    "M": 12, "ME": 12, "MS": 12, "BM": 12, "BME": 12, "BMS": 12, "SM": 24, "SME": 24, "SMS": 24,
    "W": 52,
    "D": 7, "B": 5, "C": 5,
    "H": 24, "h": 24, "BH": 24, "bh": 24,
    "T": 60, "min": 60,
    "S": 60, "s": 60,
}  # fmt: skip
_FREQ_PATTERN = re.compile(r"^\s*(\d*)\s*([A-Za-z]+)(?:-[A-Za-z0-9]+)?\s*$")


def season_length_from_freq(freq: str | pd.DateOffset | None) -> int:
    """Season length m for a pandas frequency ("h" -> 24, "2h" -> 12, "D" -> 7); 1 if unknown."""
    if freq is None:
        return 1
    freq_str = freq.freqstr if isinstance(freq, pd.DateOffset) else str(freq)
    match = _FREQ_PATTERN.match(freq_str)
    if match is None:
        return 1
    multiple = int(match.group(1) or 1)
    base = _BASE_SEASONALITY.get(match.group(2), 1)  # case matters: "ms" is milliseconds, "MS" month start
    # A multiple that does not divide the base season (e.g. "5h") has no whole season length.
    season, remainder = divmod(base, multiple)
    return season if remainder == 0 and season >= 1 else 1


def seasonal_differences(history: np.ndarray, season_length: int) -> tuple[int, np.ndarray]:
    """The lag m, or 1 when the history (T,) has no observed pair m steps apart, and the observed y_t - y_{t-lag}.

    One rule for the MASE/MSIS scale and the seasonal-naive baseline, so both use the same lag.
    """
    history = np.asarray(history, dtype=np.float64)
    for lag in (season_length, 1) if season_length > 1 else (1,):
        diffs = history[lag:] - history[:-lag]  # (T - lag,); empty when T <= lag
        diffs = diffs[~np.isnan(diffs)]
        if diffs.size:
            return lag, diffs
    return 1, np.empty(0)


def seasonal_error(history: np.ndarray, season_length: int) -> float:
    """Mean |y_t - y_{t-m}| of a history (T,), the MASE/MSIS scale; lag 1 if no lag-m pair."""
    _, diffs = seasonal_differences(history, season_length)
    return float(np.abs(diffs).mean()) if diffs.size else math.nan


def _observed(y_true: np.ndarray, *forecasts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Keep the steps (last axis) where the actual is observed, from actuals and forecasts."""
    y_true = np.asarray(y_true, dtype=np.float64)
    mask = ~np.isnan(y_true)  # (H,)
    return (y_true[mask], *(np.asarray(f, dtype=np.float64)[..., mask] for f in forecasts))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error over the observed steps of y_true (H,) against y_pred (H,)."""
    y, pred = _observed(y_true, y_pred)
    return float(np.abs(y - pred).mean()) if y.size else math.nan


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error over the observed steps of y_true (H,) against y_pred (H,)."""
    y, pred = _observed(y_true, y_pred)
    return float(np.sqrt(np.square(y - pred).mean())) if y.size else math.nan


def mase(y_true: np.ndarray, y_pred: np.ndarray, scale: float) -> float:
    """MAE scaled by the seasonal error of the history; NaN when the scale is 0 or NaN."""
    return _scaled(mae(y_true, y_pred), scale)


def _scaled(error: float, scale: float) -> float:
    """An error divided by a positive scale; NaN when the scale is 0 or NaN."""
    return error / scale if scale > 0 else math.nan


def smape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Symmetric MAPE, mean 2|y - yhat| / (|y| + |yhat|) in 0..2, with 0/0 counted as 0."""
    y, pred = _observed(y_true, y_pred)
    if not y.size:
        return math.nan
    denominator = np.abs(y) + np.abs(pred)  # (H_obs,)
    ratio = np.divide(2 * np.abs(y - pred), denominator, out=np.zeros_like(y), where=denominator > 0)
    return float(ratio.mean())


def mape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean |y - yhat| / |y| over observed non-zero actuals (see count_zero_actuals)."""
    y, pred = _observed(y_true, y_pred)
    nonzero = y != 0
    if not nonzero.any():
        return math.nan
    return float((np.abs(y[nonzero] - pred[nonzero]) / np.abs(y[nonzero])).mean())


def count_zero_actuals(y_true: np.ndarray) -> int:
    """Number of observed actuals equal to 0, which MAPE leaves out."""
    return int(np.count_nonzero(np.asarray(y_true) == 0))


def quantile_loss_sum(y_true: np.ndarray, quantile_preds: np.ndarray, quantile_levels: Sequence[float]) -> float:
    """Mean over levels of sum_t 2*pinball: the WQL numerator for quantile_preds (Q, H)."""
    levels = np.asarray(quantile_levels, dtype=np.float64)[:, None]  # (Q, 1)
    y, preds = _observed(y_true, quantile_preds)  # (H_obs,), (Q, H_obs)
    if not y.size:
        return math.nan
    error = y[None, :] - preds  # (Q, H_obs)
    pinball = np.maximum(levels * error, (levels - 1) * error)  # (Q, H_obs)
    return float((2 * pinball).sum(axis=1).mean())


def wql(y_true: np.ndarray, quantile_preds: np.ndarray, quantile_levels: Sequence[float]) -> float:
    """Weighted quantile loss of quantile_preds (Q, H): mean_q sum 2*pinball_q / sum |y|."""
    return _weighted(quantile_loss_sum(y_true, quantile_preds, quantile_levels), y_true)


def _weighted(loss: float, y_true: np.ndarray) -> float:
    """A quantile-loss sum divided by sum |y| over the observed actuals; NaN when that is 0."""
    (y,) = _observed(y_true)
    denominator = float(np.abs(y).sum())
    return loss / denominator if denominator > 0 else math.nan


def msis(
    y_true: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    scale: float,
    alpha: float = INTERVAL_ALPHA,
) -> float:
    """Mean scaled interval score of the (1 - alpha) interval [lower, upper] (H,) each."""
    y, low, up = _observed(y_true, lower, upper)
    if not y.size or not scale > 0:
        return math.nan
    score = (up - low) + 2 / alpha * ((low - y) * (y < low) + (y - up) * (y > up))  # (H_obs,)
    return float(score.mean() / scale)


def coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of observed actuals inside the closed interval [lower, upper] (H,) each."""
    y, low, up = _observed(y_true, lower, upper)
    return float(((y >= low) & (y <= up)).mean()) if y.size else math.nan


def _level_index(quantile_levels: Sequence[float], level: float) -> int:
    """Position of a quantile level among quantile_levels (compared to 1e-9)."""
    for index, candidate in enumerate(quantile_levels):
        if abs(candidate - level) < 1e-9:
            return index
    raise ValueError(f"quantile level {level} is needed but the forecast only has {list(quantile_levels)}")


def window_metrics(
    y_true: np.ndarray,
    mean: np.ndarray,
    quantile_preds: np.ndarray,
    quantile_levels: Sequence[float],
    scale: float,
    wql_levels: Sequence[float] | None = None,
) -> dict[str, float]:
    """All metrics of one forecast for one window, plus the WQL numerator `sum_quantile_loss`.

    y_true (H,) and mean (H,); quantile_preds (Q, H) at quantile_levels, which must hold 0.1,
    0.5 and 0.9; WQL averages over wql_levels (default: all of quantile_levels); scale is the
    seasonal error of the history (see seasonal_error).
    """
    levels = [float(q) for q in quantile_levels]
    median = quantile_preds[_level_index(levels, MEDIAN_LEVEL)]  # (H,)
    lower = quantile_preds[_level_index(levels, INTERVAL_LEVELS[0])]  # (H,)
    upper = quantile_preds[_level_index(levels, INTERVAL_LEVELS[1])]  # (H,)
    wql_index = [_level_index(levels, q) for q in (levels if wql_levels is None else wql_levels)]
    wql_preds = quantile_preds[wql_index]  # (Q_wql, H)
    wql_levels_used = [levels[k] for k in wql_index]
    absolute_error = mae(y_true, median)
    quantile_loss = quantile_loss_sum(y_true, wql_preds, wql_levels_used)
    return {
        "mae": absolute_error,
        "rmse": rmse(y_true, mean),
        "mase": _scaled(absolute_error, scale),
        "smape": smape(y_true, median),
        "mape": mape(y_true, median),
        "wql": _weighted(quantile_loss, y_true),
        "msis": msis(y_true, lower, upper, scale),
        "coverage": coverage(y_true, lower, upper),
        "sum_quantile_loss": quantile_loss,
    }


def aggregate_metrics(rows: pd.DataFrame, prefix: str = "", by: Sequence[str] | None = None) -> pd.DataFrame:
    """Aggregate per-window metric columns (named prefix + metric) as documented, per group of `by`.

    Returns one row per group (a single row when by is None) and one column per metric. WQL
    needs the columns prefix + "sum_quantile_loss" and "sum_abs_target".
    """
    keys = [rows[key] for key in by] if by else np.zeros(len(rows), dtype=int)
    mean_names = [name for name in METRIC_NAMES if name != "wql"]
    means = rows[[prefix + name for name in mean_names]].set_axis(mean_names, axis=1).groupby(keys, sort=False).mean()
    numerator = rows[prefix + "sum_quantile_loss"]
    denominator = rows["sum_abs_target"]
    observed = numerator.notna() & denominator.notna()  # windows where WQL is defined
    total_loss = numerator.where(observed, 0.0).groupby(keys, sort=False).sum()
    total_target = denominator.where(observed, 0.0).groupby(keys, sort=False).sum()
    means["wql"] = (total_loss / total_target).where(total_target > 0)
    return means[list(METRIC_NAMES)]


def geometric_mean_ratio(model_errors: np.ndarray, baseline_errors: np.ndarray) -> float:
    """Geometric mean of per-series model/baseline error ratios (clipped; 0/0 = 1; NaN skipped)."""
    model_errors = np.asarray(model_errors, dtype=np.float64)
    baseline_errors = np.asarray(baseline_errors, dtype=np.float64)
    keep = ~np.isnan(model_errors) & ~np.isnan(baseline_errors)
    model_errors, baseline_errors = model_errors[keep], baseline_errors[keep]
    if not model_errors.size:
        return math.nan
    both_zero = (model_errors == 0) & (baseline_errors == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(both_zero, 1.0, model_errors / baseline_errors)  # x/0 -> inf, clipped
    ratios = np.clip(ratios, *RATIO_CLIP)
    return float(np.exp(np.log(ratios).mean()))
