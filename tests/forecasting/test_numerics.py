"""Series that float32 or the reference's variance floor would spoil are rescaled in float64, and only those."""

from __future__ import annotations

import numpy as np
import pytest

from moirai_cli.errors import InputError
from moirai_cli.forecasting.numerics import condition_inputs, fit_scaling, restore_samples

LEVELS = [0.1, 0.5, 0.9]
HORIZON = 8  # one patch: one pass of the network, so samples move smoothly with its inputs


def unit_series(length: int = 120) -> np.ndarray:
    """A noisy sine of unit scale with mean zero (what a rescaled series looks like to the network)."""
    rng = np.random.default_rng(0)
    values = np.sin(np.arange(length) / 5) + 0.3 * rng.normal(size=length)
    return values - values.mean()


@pytest.mark.parametrize(
    "values",
    [
        unit_series(),
        100 + 10 * unit_series(),
        np.zeros(50),
        np.full(50, 12345.67),  # constant: float32 rounds it by far less than the reference's smallest scale
        np.r_[np.zeros(40), np.ones(3)],  # intermittent
        np.arange(200.0) * 1000,  # integers up to 2e5
        0.05 + 0.01 * unit_series(),  # small, but above the variance floor
        np.r_[np.nan, 3.0, np.nan, 4.0, 5.0],
    ],
)
def test_ordinary_series_pass_through_unchanged(values):
    scaling = fit_scaling(values[:, None], context_length=1024)
    assert scaling.identity
    assert np.array_equal(scaling.apply(values[:, None]), values[:, None].astype(np.float32), equal_nan=True)


def test_the_rule_looks_at_the_context_window_only():
    values = np.r_[unit_series(100), 1e-9 * unit_series(64)]  # ordinary, then tiny for the last 64 steps
    assert not fit_scaling(values[:, None], context_length=64).identity
    assert fit_scaling(values[:, None], context_length=1024).identity


@pytest.mark.parametrize(
    "values, shift, scale",
    [
        (1e-9 * unit_series() + 3e-9, 3e-9, 1e-9),  # tiny: the variance floor 1e-5 would swamp it
        (1e12 + unit_series(), 1e12, 1.0),  # coarse: float32 rounds 1e12 by 2^15
        (1e300 * unit_series() + 5e300, 5e300, 1e300),  # huge: beyond float32
        (1e-300 * unit_series(), 0.0, 1e-300),  # underflows float32
        (np.full(30, 2e-9), 2e-9, 1e-9),  # a constant tiny level: scaled by its level
    ],
)
def test_spoilt_series_are_centred_and_scaled_by_a_power_of_ten(values, shift, scale):
    scaling = fit_scaling(values[:, None], context_length=1024)
    assert not scaling.identity
    assert scaling.shift[0] == pytest.approx(shift, rel=1e-6, abs=1e-6 * scale)
    assert scaling.scale[0] == pytest.approx(scale, rel=1e-12)
    network = scaling.apply(values[:, None])
    assert network.dtype == np.float32 and np.isfinite(network).all() and np.abs(network).max() < 10
    assert np.allclose(scaling.restore(network.astype(np.float64)), values[:, None], rtol=1e-6, atol=1e-6 * scale)


def test_each_variate_and_covariate_gets_its_own_map():
    target = np.stack([unit_series(), 1e12 + unit_series()], axis=1)
    known = np.stack([1e-9 * unit_series(128), unit_series(128)], axis=1)  # 120 history rows + 8 future
    targets, _, knowns, scalings = condition_inputs([target], None, [known], context_length=1024)
    assert scalings[0].scale.tolist() == [1.0, 1.0] and scalings[0].shift[0] == 0 and scalings[0].shift[1] > 0
    assert np.abs(knowns[0]).max() < 10 and knowns[0].dtype == np.float32
    samples = np.zeros((1, 2, 3, 2), np.float32)
    restored = restore_samples(samples, scalings)
    assert restored.dtype == np.float64 and np.all(restored[..., 1] == scalings[0].shift[1])
    assert restore_samples(samples, [fit_scaling(unit_series()[:, None], 1024)]) is samples


@pytest.mark.parametrize(
    "name, to_series, from_series",
    [
        ("1e-9 scale", lambda x: 1e-9 * x + 3e-9, lambda y: (y - 3e-9) / 1e-9),
        ("1e12 level, unit variation", lambda x: 1e12 + x, lambda y: y - 1e12),
        ("1e300", lambda x: 1e300 * x + 1e300, lambda y: (y - 1e300) / 1e300),
    ],
)
def test_forecasts_of_spoilt_series_match_a_unit_scale_series(tiny_forecaster, name, to_series, from_series):
    # 1e-9: band 1e6 times too wide; 1e12: a flat line with zero-width band; 1e300: a torch error (exit 1).
    unit = unit_series()
    expected = tiny_forecaster.predict([unit], HORIZON, num_samples=200, seed=0)
    forecast = tiny_forecaster.predict([to_series(unit)], HORIZON, num_samples=200, seed=0)
    assert expected.samples.dtype == np.float32 and forecast.samples.dtype == np.float64
    assert np.isfinite(forecast.samples).all()
    got = from_series(forecast.quantiles(LEVELS)[0, :, :, 0])  # back on the unit series' scale
    want = expected.quantiles(LEVELS)[0, :, :, 0]
    band = float((want[2] - want[0]).mean())
    assert band > 0.1
    assert np.abs(got - want).max() < 0.01 * band, name


def test_infinite_values_in_arrays_are_refused_naming_series_and_row(tiny_forecaster):
    values = unit_series()
    values[7] = np.inf
    with pytest.raises(InputError, match=r"target of series 1, row 7, column 0: inf is not finite; use NaN"):
        tiny_forecaster.predict([unit_series(), values], 4)
    with pytest.raises(InputError, match=r"past covariates of series 0, row 2, column 0: -inf is not finite"):
        tiny_forecaster.predict([unit_series()], 4, past_covariates=[np.r_[0.0, 0.0, -np.inf, np.zeros(117)]])


@pytest.mark.parametrize("family", ["moirai-1", "moirai-2"])
def test_every_family_gets_the_same_rescaling(family_checkpoints, family):
    # Moirai 1.x draws in one pass, Moirai 2.0 predicts quantiles: both are mapped back the same way.
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    forecaster = MoiraiForecaster.from_pretrained(str(family_checkpoints[family]), device="cpu")
    unit = unit_series()
    options = dict(num_samples=200, seed=0, patch_size=16, context_length=64)
    expected = forecaster.predict([unit], HORIZON, **options).quantiles(LEVELS)[0, :, :, 0]
    for to_series, from_series in ((lambda x: 1e12 + x, lambda y: y - 1e12), (lambda x: 1e-9 * x, lambda y: y / 1e-9)):
        got = from_series(forecaster.predict([to_series(unit)], HORIZON, **options).quantiles(LEVELS)[0, :, :, 0])
        band = float((expected[2] - expected[0]).mean())
        assert band > 0 and np.abs(got - expected).max() < 0.01 * band


@pytest.mark.parametrize("level", [2e302, 1e307, 1.5e308])
def test_values_too_large_for_float64_forecasts_are_refused(tiny_forecaster, level):
    # Finite values from 1e307 to 1.7e308 gave mean = inf and empty quantile cells, exit 0.
    rng = np.random.default_rng(0)
    values = level * (0.9 + 0.05 * rng.random(40))
    with pytest.raises(InputError, match=r"^target of series 0, row 0: .* is too large to forecast \(magnitudes above 1e\+302"):
        tiny_forecaster.predict([values], 4, num_samples=10, seed=0)


def test_values_up_to_the_limit_give_finite_forecasts(family_checkpoints):
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    rng = np.random.default_rng(0)
    values = 1e302 * (0.5 + 0.1 * rng.standard_normal(40))
    for folder in family_checkpoints.values():
        forecast = MoiraiForecaster.from_pretrained(str(folder), device="cpu").predict([values], 4, num_samples=100, seed=0)
        assert np.isfinite(forecast.mean).all() and np.isfinite(forecast.quantiles([0.1, 0.5, 0.9])).all()
