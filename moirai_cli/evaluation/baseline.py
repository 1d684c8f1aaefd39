"""Seasonal-naive baseline with quantiles, the yardstick the model's skill is measured against.

Point forecast: the last observed season repeated, yhat_{T+h} = y_{T+h-m*k} with
k = ceil(h/m) (missing values in the history are carried forward first). Quantiles: the
point forecast plus the empirical quantiles of the in-sample seasonal-naive residuals
r_t = y_t - y_{t-m}, centred on their median (so the baseline's median is exactly the
seasonal-naive forecast) and widened by sqrt(k) for the k-th season ahead, as the
seasonal-naive forecast variance grows (Hyndman & Athanasopoulos, FPP 5.5). The mean is the
point forecast. When the history has no observed pair m steps apart, m falls back to 1 (the
naive forecast), matching the seasonal error used by MASE; with no residual at all the
quantiles collapse onto the point forecast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from moirai_cli.evaluation.forecast import QuantileForecast
from moirai_cli.evaluation.metrics import seasonal_differences


def _seasonal_naive_one(
    history: np.ndarray, horizon: int, season_length: int, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Point (H,) and quantile (Q, H) seasonal-naive forecasts for one univariate history (T,)."""
    if np.isnan(history).all():
        return np.full(horizon, np.nan), np.full((levels.size, horizon), np.nan)
    lag, residuals = seasonal_differences(history, season_length)  # the lag MASE's scale uses
    filled = pd.Series(history).ffill().bfill().to_numpy()  # (T,)
    steps = np.arange(horizon)  # (H,)
    point = filled[filled.shape[0] - lag + steps % lag]  # (H,)
    if not residuals.size:
        return point, np.repeat(point[None, :], levels.size, axis=0)
    offsets = np.quantile(residuals, levels) - np.median(residuals)  # (Q,)
    widening = np.sqrt(steps // lag + 1.0)  # (H,) sqrt of seasons ahead
    return point, point[None, :] + offsets[:, None] * widening[None, :]


def seasonal_naive(
    contexts: Sequence[np.ndarray],
    horizon: int,
    season_length: int,
    quantile_levels: Sequence[float],
) -> QuantileForecast:
    """Seasonal-naive mean (N, H, V) and quantiles (N, Q, H, V) for histories (T_i, V) with NaN."""
    levels = np.asarray(quantile_levels, dtype=np.float64)
    n_variates = {np.asarray(c).reshape(len(c), -1).shape[1] for c in contexts}
    if len(n_variates) != 1:
        raise ValueError(f"all series must have the same number of variates, got {sorted(n_variates)}")
    (variates,) = n_variates
    mean = np.empty((len(contexts), horizon, variates))
    quantiles = np.empty((len(contexts), levels.size, horizon, variates))
    for i, context in enumerate(contexts):
        context = np.asarray(context, dtype=np.float64).reshape(len(context), -1)  # (T, V)
        for v in range(variates):
            mean[i, :, v], quantiles[i, :, :, v] = _seasonal_naive_one(context[:, v], horizon, season_length, levels)
    return QuantileForecast(mean, quantiles, tuple(float(q) for q in levels))
