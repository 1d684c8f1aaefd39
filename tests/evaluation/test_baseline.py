"""The seasonal-naive baseline: point forecast, residual quantiles, fallbacks and shapes."""

from __future__ import annotations

import numpy as np
import pytest

from moirai_cli.evaluation.baseline import seasonal_naive

LEVELS = (0.1, 0.5, 0.9)


def test_repeats_the_last_season_and_collapses_on_a_periodic_series():
    season = np.array([1.0, 5.0, 3.0, 2.0])
    history = np.tile(season, 5)[:-1]  # ends one step into a season: (19,)
    forecast = seasonal_naive([history], horizon=6, season_length=4, quantile_levels=LEVELS)
    expected = np.tile(season, 3)[3:9]
    assert forecast.mean.shape == (1, 6, 1) and forecast.quantiles.shape == (1, 3, 6, 1)
    np.testing.assert_allclose(forecast.mean[0, :, 0], expected)
    np.testing.assert_allclose(forecast.quantiles[0, :, :, 0], np.tile(expected, (3, 1)))  # no residual spread


def test_quantiles_are_centred_residual_quantiles_widening_by_season():
    rng = np.random.default_rng(0)
    history = rng.normal(size=40)
    forecast = seasonal_naive([history], horizon=6, season_length=3, quantile_levels=LEVELS)
    residuals = history[3:] - history[:-3]
    offsets = np.quantile(residuals, LEVELS) - np.median(residuals)
    point = forecast.mean[0, :, 0]
    np.testing.assert_allclose(forecast.quantiles[0, 1, :, 0], point)  # median is the point forecast
    np.testing.assert_allclose(forecast.quantiles[0, :, 0, 0] - point[0], offsets)  # first season: k = 1
    np.testing.assert_allclose(forecast.quantiles[0, :, 4, 0] - point[4], offsets * np.sqrt(2))  # k = 2


def test_short_history_falls_back_to_naive():
    forecast = seasonal_naive([np.array([1.0, 2.0, 4.0])], horizon=3, season_length=12, quantile_levels=LEVELS)
    np.testing.assert_allclose(forecast.mean[0, :, 0], [4.0, 4.0, 4.0])
    offsets = np.quantile([1.0, 2.0], LEVELS) - 1.5
    np.testing.assert_allclose(forecast.quantiles[0, :, 2, 0], 4.0 + offsets * np.sqrt(3))


def test_missing_values_are_carried_forward_and_all_missing_gives_nan():
    history = np.array([np.nan, 1.0, 2.0, np.nan, 4.0, np.nan])
    forecast = seasonal_naive([history, np.full(5, np.nan)], horizon=2, season_length=2, quantile_levels=LEVELS)
    np.testing.assert_allclose(forecast.mean[0, :, 0], [4.0, 4.0])  # last season (4, nan -> 4)
    assert np.isfinite(forecast.quantiles[0]).all()
    assert np.isnan(forecast.mean[1]).all() and np.isnan(forecast.quantiles[1]).all()


def test_multivariate_and_ragged_series():
    series = [np.arange(20.0).reshape(10, 2), np.arange(14.0).reshape(7, 2)]
    forecast = seasonal_naive(series, horizon=3, season_length=1, quantile_levels=(0.1, 0.2, 0.5, 0.9))
    assert forecast.mean.shape == (2, 3, 2) and forecast.quantiles.shape == (2, 4, 3, 2)
    np.testing.assert_allclose(forecast.mean[1, 0], [12.0, 13.0])
    with pytest.raises(ValueError, match="variates"):
        seasonal_naive([np.ones((5, 2)), np.ones((5, 3))], 2, 1, LEVELS)
