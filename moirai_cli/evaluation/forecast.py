"""Quantile forecasts in one shape for the model and the baseline, so both are scored alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moirai_cli.errors import InputError
from moirai_cli.evaluation.metrics import INTERVAL_LEVELS, MEDIAN_LEVEL
from moirai_cli.forecasting.pipeline import Forecast


def scoring_levels(quantile_levels: Sequence[float]) -> tuple[float, ...]:
    """The requested levels plus the median and 80% interval bounds the metrics need, sorted."""
    levels = {round(float(q), 9) for q in quantile_levels} | {MEDIAN_LEVEL, *INTERVAL_LEVELS}
    if not all(0 < q < 1 for q in levels):
        raise InputError(f"quantile levels must lie strictly between 0 and 1, got {sorted(levels)}")
    return tuple(sorted(levels))


@dataclass(frozen=True)
class QuantileForecast:
    """Mean and quantile forecasts for N series: mean (N, H, V), quantiles (N, Q, H, V)."""

    mean: np.ndarray  # (N, H, V)
    quantiles: np.ndarray  # (N, Q, H, V)
    levels: tuple[float, ...]  # (Q,) increasing

    @classmethod
    def from_samples(cls, samples: np.ndarray, levels: Sequence[float]) -> QuantileForecast:
        """Summarise sample paths (N, S, H, V) by their mean and empirical quantiles."""
        paths = Forecast(np.asarray(samples, dtype=np.float64))
        return cls(paths.mean, paths.quantiles(levels), tuple(levels))
