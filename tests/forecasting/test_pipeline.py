"""The forecaster's public API: shapes, seeds, quantiles, validation, auto patch size, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moirai_cli.errors import InputError
from moirai_cli.forecasting.pipeline import Forecast, MoiraiForecaster

CONTEXT = 64
SAMPLES = 16


@pytest.fixture(scope="module")
def multipatch_forecaster(multipatch_checkpoint):
    return MoiraiForecaster.from_pretrained(str(multipatch_checkpoint), device="cpu")


def make_series(count: int, seed: int = 0, variates: int | None = None, lengths=(40, 70, 100, 130)) -> list[np.ndarray]:
    """Random walks with a daily-ish cycle, of several lengths (some shorter than the context)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        length = lengths[i % len(lengths)]
        shape = (length,) if variates is None else (length, variates)
        steps = np.arange(length).reshape(-1, *([1] * (len(shape) - 1)))
        out.append((rng.normal(size=shape).cumsum(axis=0) + 5 * np.sin(steps / 4 + i)).astype(np.float32))
    return out


def forecast(forecaster, series, horizon=20, **options) -> Forecast:
    options = {"context_length": CONTEXT, "num_samples": SAMPLES, "seed": 0, **options}
    return forecaster.predict(series, horizon, **options)


# --- shapes -------------------------------------------------------------------------------------


def test_univariate_shapes(tiny_forecaster):
    series = make_series(5)
    result = forecast(tiny_forecaster, series, horizon=20)
    assert result.samples.shape == (5, SAMPLES, 20, 1)
    assert result.samples.dtype == np.float32
    assert np.isfinite(result.samples).all()
    assert result.mean.shape == (5, 20, 1)
    np.testing.assert_allclose(result.mean, result.samples.mean(axis=1), rtol=1e-6)
    assert result.quantiles([0.1, 0.5, 0.9]).shape == (5, 3, 20, 1)
    np.testing.assert_array_equal(result.patch_sizes, [16] * 5)


def test_one_and_two_dimensional_univariate_inputs_agree(tiny_forecaster):
    series = make_series(3)
    flat = forecast(tiny_forecaster, series).samples
    column = forecast(tiny_forecaster, [s[:, None] for s in series]).samples
    np.testing.assert_array_equal(flat, column)


def test_multivariate_shapes(tiny_forecaster):
    series = make_series(3, variates=3)
    result = forecast(tiny_forecaster, series, horizon=7)
    assert result.samples.shape == (3, SAMPLES, 7, 3)
    assert result.quantiles([0.5]).shape == (3, 1, 7, 3)
    assert np.isfinite(result.samples).all()


def test_covariate_shapes_and_covariates_are_used(tiny_forecaster):
    rng = np.random.default_rng(1)
    series = make_series(3)
    horizon = 24
    known = [rng.normal(size=(len(s) + horizon, 2)).astype(np.float32) for s in series]
    past = [rng.normal(size=(len(s),)).astype(np.float32) for s in series]
    plain = forecast(tiny_forecaster, series, horizon=horizon).samples
    with_known = forecast(tiny_forecaster, series, horizon=horizon, known_covariates=known).samples
    with_both = forecast(tiny_forecaster, series, horizon=horizon, known_covariates=known, past_covariates=past).samples
    for samples in (with_known, with_both):
        assert samples.shape == (3, SAMPLES, horizon, 1)
        assert np.isfinite(samples).all()
    # The network attends to covariate tokens, so they change the forecast.
    assert not np.allclose(plain, with_known)
    assert not np.allclose(with_known, with_both)


def test_missing_values_give_finite_forecasts(tiny_forecaster):
    series = make_series(3)
    series[0][[0, 1, 2, 20, 21, 39]] = np.nan  # leading, inner, trailing
    series[1][:] = np.nan
    series[1][-1] = 3.0
    result = forecast(tiny_forecaster, series, horizon=5)
    assert np.isfinite(result.samples).all()


def test_horizon_shorter_than_a_patch(tiny_forecaster):
    result = forecast(tiny_forecaster, make_series(2), horizon=1)
    assert result.samples.shape == (2, SAMPLES, 1, 1)


# --- seeds and sampling -------------------------------------------------------------------------


def test_same_seed_same_samples_and_different_seeds_differ(tiny_forecaster):
    series = make_series(3)
    a = forecast(tiny_forecaster, series, seed=7).samples
    torch.manual_seed(12345)  # the global generator's state must not matter
    b = forecast(tiny_forecaster, series, seed=7).samples
    c = forecast(tiny_forecaster, series, seed=8).samples
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Different seeds still describe the same distribution: medians are close in scale.
    assert np.abs(np.median(a) - np.median(c)) < 3 * np.std(a)


def test_a_seeded_forecast_leaves_the_global_generator_alone(tiny_forecaster):
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    forecast(tiny_forecaster, make_series(2), seed=1)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_unseeded_forecasts_differ(tiny_forecaster):
    series = make_series(2)
    a = forecast(tiny_forecaster, series, seed=None).samples
    b = forecast(tiny_forecaster, series, seed=None).samples
    assert not np.array_equal(a, b)


def test_first_patch_does_not_depend_on_the_horizon(tiny_forecaster):
    # Pass 1 draws the first patch from the context alone, with the same random numbers.
    series = make_series(3)
    short = forecast(tiny_forecaster, series, horizon=16, seed=4).samples
    long = forecast(tiny_forecaster, series, horizon=40, seed=4).samples
    np.testing.assert_array_equal(short, long[:, :, :16])


def test_only_the_context_window_is_used(tiny_forecaster):
    # Without missing values, what lies before the context window cannot matter.
    series = make_series(3, lengths=(150, 200, 300))
    full = forecast(tiny_forecaster, series, seed=5).samples
    cut = forecast(tiny_forecaster, [s[-CONTEXT:] for s in series], seed=5).samples
    np.testing.assert_allclose(full, cut, rtol=1e-5, atol=1e-5)


def test_quantiles_are_monotone_in_level(tiny_forecaster):
    result = forecast(tiny_forecaster, make_series(4, variates=2), horizon=20, num_samples=64)
    levels = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    quantiles = result.quantiles(levels)
    assert quantiles.shape == (4, len(levels), 20, 2)
    assert (np.diff(quantiles, axis=1) >= 0).all()
    assert (quantiles[:, 0] >= result.samples.min(axis=1)).all()
    assert (quantiles[:, -1] <= result.samples.max(axis=1)).all()
    np.testing.assert_allclose(quantiles[:, 3], np.median(result.samples, axis=1), rtol=1e-6)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [0, -3])
def test_horizon_must_be_positive(tiny_forecaster, horizon):
    with pytest.raises(InputError, match="horizon"):
        tiny_forecaster.predict(make_series(1), horizon)


def test_known_covariates_must_cover_the_horizon(tiny_forecaster):
    series = make_series(2)
    known = [np.zeros((len(s), 1), np.float32) for s in series]  # history only
    with pytest.raises(InputError, match="known covariates of series 0"):
        tiny_forecaster.predict(series, 5, known_covariates=known)


def test_past_covariates_must_match_the_target(tiny_forecaster):
    series = make_series(2)
    past = [np.zeros(len(series[0])), np.zeros(len(series[1]) + 1)]
    with pytest.raises(InputError, match="past covariates of series 1"):
        tiny_forecaster.predict(series, 5, past_covariates=past)


def test_covariates_must_be_given_for_every_series_with_the_same_columns(tiny_forecaster):
    series = make_series(2)
    with pytest.raises(InputError, match="every series"):
        tiny_forecaster.predict(series, 5, past_covariates=[np.zeros(len(series[0]))])
    with pytest.raises(InputError, match="same number of columns"):
        tiny_forecaster.predict(series, 5, past_covariates=[np.zeros((len(series[0]), 1)), np.zeros((len(series[1]), 2))])


def test_mixed_variate_counts_are_rejected(tiny_forecaster):
    series = [np.zeros((50, 2), np.float32), np.zeros((50, 3), np.float32)]
    with pytest.raises(InputError, match="same number of target variates"):
        tiny_forecaster.predict(series, 5)


@pytest.mark.parametrize("patch_size", [8, 32, 7])
def test_unknown_patch_size_is_rejected(tiny_forecaster, patch_size):
    with pytest.raises(InputError, match=r"patch size .* \[16\]"):
        tiny_forecaster.predict(make_series(1), 5, patch_size=patch_size)


def test_non_numeric_patch_size_is_an_input_error(tiny_forecaster):
    with pytest.raises(InputError, match="patch size"):
        tiny_forecaster.predict(make_series(1), 5, patch_size="sixteen")


@pytest.mark.parametrize(
    "target, options, message",
    [
        ([], {}, "no series"),
        ([np.zeros(0)], {}, "empty"),
        ([np.zeros((4, 2, 2))], {}, "1-D or 2-D"),
        ([np.zeros(30)], {"context_length": 0}, "at least 1"),
        ([np.zeros(30)], {"num_samples": 0}, "at least 1"),
        ([np.zeros(30)], {"batch_size": 0}, "at least 1"),
        ([np.zeros(30)], {"decoding": "fast"}, "decoding"),
    ],
)
def test_other_bad_inputs(tiny_forecaster, target, options, message):
    with pytest.raises(InputError, match=message):
        tiny_forecaster.predict(target, 5, **options)


# --- auto patch size ----------------------------------------------------------------------------


def test_auto_picks_the_size_with_the_lowest_holdout_nll(multipatch_forecaster):
    series = make_series(8, seed=3, lengths=(60, 90, 120, 150))
    series[2][10:14] = np.nan
    horizon = 12
    result = forecast(multipatch_forecaster, series, horizon=horizon, patch_size="auto", batch_size=3)
    targets = [s[:, None] for s in series]
    with torch.inference_mode():
        scores = np.stack([
            multipatch_forecaster.holdout_nll(targets, None, None, horizon, CONTEXT, size, 3)
            for size in multipatch_forecaster.patch_sizes
        ])
    assert scores.shape == (3, 8) and np.isfinite(scores).all()
    expected = np.asarray(multipatch_forecaster.patch_sizes)[scores.argmin(axis=0)]
    np.testing.assert_array_equal(result.patch_sizes, expected)
    assert set(result.patch_sizes.tolist()) <= {8, 16, 32}
    assert result.samples.shape == (8, SAMPLES, horizon, 1)


def test_auto_forecasts_each_series_with_its_chosen_size(multipatch_forecaster):
    (series,) = make_series(1, seed=11, lengths=(120,))
    auto = forecast(multipatch_forecaster, [series], horizon=10, patch_size="auto", seed=2)
    (size,) = auto.patch_sizes.tolist()
    fixed = forecast(multipatch_forecaster, [series], horizon=10, patch_size=size, seed=2)
    np.testing.assert_array_equal(auto.samples, fixed.samples)


def test_auto_with_covariates(multipatch_forecaster):
    rng = np.random.default_rng(5)
    series = make_series(3, seed=5)
    horizon = 10
    known = [rng.normal(size=(len(s) + horizon, 1)).astype(np.float32) for s in series]
    past = [rng.normal(size=(len(s), 1)).astype(np.float32) for s in series]
    result = forecast(multipatch_forecaster, series, horizon=horizon, patch_size="auto", known_covariates=known, past_covariates=past)
    targets = [s[:, None] for s in series]
    with torch.inference_mode():
        scores = np.stack([
            multipatch_forecaster.holdout_nll(targets, past, known, horizon, CONTEXT, size, 32)
            for size in multipatch_forecaster.patch_sizes
        ])
    np.testing.assert_array_equal(result.patch_sizes, np.asarray(multipatch_forecaster.patch_sizes)[scores.argmin(axis=0)])


def test_auto_on_a_single_size_checkpoint_uses_that_size(tiny_forecaster):
    result = forecast(tiny_forecaster, make_series(3), patch_size="auto")
    np.testing.assert_array_equal(result.patch_sizes, [16, 16, 16])


def test_fixed_patch_sizes_of_the_multipatch_checkpoint(multipatch_forecaster):
    for size in (8, 16, 32):
        result = forecast(multipatch_forecaster, make_series(2), horizon=9, patch_size=size)
        assert result.samples.shape == (2, SAMPLES, 9, 1)
        np.testing.assert_array_equal(result.patch_sizes, [size, size])


# --- batching, progress, device -----------------------------------------------------------------


@pytest.mark.parametrize("patch_size", [16, "auto"])
def test_progress_counts_every_series_once(multipatch_forecaster, patch_size):
    calls = []
    series = make_series(7)
    forecast(multipatch_forecaster, series, patch_size=patch_size, batch_size=3, progress=calls.append)
    assert sum(calls) == 7
    assert all(1 <= c <= 3 for c in calls)


def test_small_batches_give_the_same_shapes(tiny_forecaster):
    series = make_series(5, variates=2)
    whole = forecast(tiny_forecaster, series, horizon=18, batch_size=32)
    split = forecast(tiny_forecaster, series, horizon=18, batch_size=2)
    assert whole.samples.shape == split.samples.shape == (5, SAMPLES, 18, 2)
    np.testing.assert_array_equal(whole.patch_sizes, split.patch_sizes)
    assert np.isfinite(split.samples).all()


def test_cpu_device(tiny_checkpoint):
    forecaster = MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="cpu")
    assert forecaster.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in forecaster.model.parameters())
    assert forecaster.model.encoder.centroid.device.type == "cpu"
    assert forecaster.patch_sizes == (16,)
    assert forecast(forecaster, make_series(1)).samples.shape == (1, SAMPLES, 20, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_auto_device_without_a_gpu_is_cpu_and_cuda_is_refused(tiny_checkpoint):
    if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
        assert MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="auto").device == torch.device("cpu")
    with pytest.raises(InputError, match="cuda"):
        MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="cuda")


def test_unknown_device_is_an_input_error(tiny_checkpoint):
    with pytest.raises(InputError, match="unknown device"):
        MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="abacus")


# --- the three families through the same predict ------------------------------------------------


@pytest.fixture(scope="module")
def family_forecasters(family_checkpoints):
    return {family: MoiraiForecaster.from_pretrained(str(path), device="cpu") for family, path in family_checkpoints.items()}


def test_each_family_loads_with_its_metadata(family_forecasters):
    expected = {
        "moirai-1": ("Moirai 1.x", "samples", (8, 16, 32, 64, 128), "auto", ("exact",)),
        "moirai-moe": ("Moirai-MoE", "samples", (16,), 16, ("exact", "cached")),
        "moirai-2": ("Moirai 2.0", "quantiles", (16,), 16, ("exact",)),
    }
    for family, forecaster in family_forecasters.items():
        assert forecaster.family == family
        got = (forecaster.family_title, forecaster.output_kind, forecaster.patch_sizes, forecaster.default_patch_size, forecaster.decodings)
        assert got == expected[family]
        assert forecaster.parameter_count == sum(p.numel() for p in forecaster.model.parameters()) > 0
    assert family_forecasters["moirai-2"].quantile_levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert family_forecasters["moirai-1"].quantile_levels is None


@pytest.mark.parametrize("family", ["moirai-1", "moirai-moe", "moirai-2"])
def test_every_family_forecasts_through_the_same_predict(family_forecasters, family):
    forecaster = family_forecasters[family]
    series = make_series(3, variates=2)
    rng = np.random.default_rng(1)
    known = [rng.normal(size=(len(s) + 30, 1)).astype(np.float32) for s in series]
    past = [rng.normal(size=(len(s), 2)).astype(np.float32) for s in series]
    result = forecaster.predict(series, 30, known_covariates=known, past_covariates=past, context_length=CONTEXT, num_samples=SAMPLES, seed=0)
    assert result.mean.shape == (3, 30, 2) and np.isfinite(result.mean).all()
    assert result.quantiles([0.1, 0.5, 0.9]).shape == (3, 3, 30, 2)
    assert len(result.patch_sizes) == 3
    if family == "moirai-2":
        assert result.samples is None and result.values.shape == (3, 9, 30, 2)
    else:
        assert result.samples.shape == (3, SAMPLES, 30, 2)


def test_moirai_1_samples_are_seeded_and_auto_by_default(family_forecasters):
    forecaster = family_forecasters["moirai-1"]
    series = make_series(4, seed=2)
    first = forecaster.predict(series, 20, context_length=CONTEXT, num_samples=SAMPLES, seed=3)
    again = forecaster.predict(series, 20, context_length=CONTEXT, num_samples=SAMPLES, seed=3, patch_size="auto")
    other = forecaster.predict(series, 20, context_length=CONTEXT, num_samples=SAMPLES, seed=4)
    np.testing.assert_array_equal(first.samples, again.samples)
    np.testing.assert_array_equal(first.patch_sizes, again.patch_sizes)
    assert not np.array_equal(first.samples, other.samples)
    fixed = forecaster.predict(series, 20, context_length=CONTEXT, num_samples=SAMPLES, seed=3, patch_size=32)
    np.testing.assert_array_equal(fixed.patch_sizes, [32] * 4)


def test_moirai_2_is_deterministic_and_takes_no_samples(family_forecasters):
    forecaster = family_forecasters["moirai-2"]
    series = make_series(3, seed=4)
    one = forecaster.predict(series, 70, context_length=CONTEXT, num_samples=5, seed=0)
    two = forecaster.predict(series, 70, context_length=CONTEXT, seed=9)
    np.testing.assert_array_equal(one.values, two.values)
    assert one.values.shape == (3, 9, 70, 1)


@pytest.mark.parametrize("family", ["moirai-1", "moirai-2"])
def test_cached_decoding_is_refused_where_there_is_nothing_to_cache(family_forecasters, family):
    with pytest.raises(InputError, match=r"decoding 'cached' is not available for Moirai (1\.x|2\.0) checkpoints: use exact"):
        family_forecasters[family].predict(make_series(1), 5, decoding="cached")


def test_moirai_2_has_one_patch_size(family_forecasters):
    with pytest.raises(InputError, match=r"patch size 32 is not one of this checkpoint's sizes \[16\]"):
        family_forecasters["moirai-2"].predict(make_series(1), 5, patch_size=32)
    assert family_forecasters["moirai-2"].predict(make_series(1), 5, patch_size="auto").patch_sizes.tolist() == [16]


@pytest.mark.gluonts
def test_direct_quantiles_follow_gluonts_quantile_forecast():
    """Levels between the model's interpolate linearly, levels beyond them follow GluonTS's exponential tails."""
    gluonts_forecast = pytest.importorskip("gluonts.model.forecast")
    import pandas as pd

    from moirai_cli.forecasting.pipeline import DirectQuantileForecast

    rng = np.random.default_rng(0)
    levels = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    values = np.sort(rng.normal(size=(2, 9, 6, 1)) * 3 + 10, axis=1).astype(np.float32)  # (N, Q, H, V)
    ours = DirectQuantileForecast(values, levels)
    asked = [0.01, 0.05, 0.1, 0.15, 0.25, 0.5, 0.55, 0.87, 0.9, 0.95, 0.99]
    mine = ours.quantiles(asked)
    for n in range(2):
        theirs = gluonts_forecast.QuantileForecast(values[n, :, :, 0], pd.Period("2020-01-01", "h"), [str(q) for q in levels])
        for j, level in enumerate(asked):
            np.testing.assert_allclose(mine[n, j, :, 0], theirs.quantile(level), rtol=1e-6, err_msg=str(level))
        np.testing.assert_array_equal(ours.mean[n, :, 0], theirs.mean)  # the median
    np.testing.assert_array_equal(ours.quantiles(levels), values)


# --- one forecaster per process (engine workers) --------------------------------------------------


def test_load_forecaster_once_loads_each_checkpoint_and_device_once(tiny_checkpoint, monkeypatch):
    from moirai_cli.forecasting import pipeline

    monkeypatch.setattr(pipeline, "_PROCESS_FORECASTERS", {})
    loads = []
    real = MoiraiForecaster.from_pretrained.__func__

    def counting(cls, name_or_path, **options):
        loads.append((name_or_path, options["device"], options["dtype"]))
        return real(cls, name_or_path, **options)

    monkeypatch.setattr(MoiraiForecaster, "from_pretrained", classmethod(counting))
    first = pipeline.load_forecaster_once(str(tiny_checkpoint), device="cpu")
    assert pipeline.load_forecaster_once(str(tiny_checkpoint), device="cpu") is first
    other = pipeline.load_forecaster_once(str(tiny_checkpoint), device="cpu", dtype=torch.bfloat16)
    assert other is not first and any(p.dtype == torch.bfloat16 for p in other.model.parameters())
    assert loads == [(str(tiny_checkpoint), "cpu", torch.float32), (str(tiny_checkpoint), "cpu", torch.bfloat16)]
