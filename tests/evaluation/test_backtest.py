"""Rolling-origin window cutting, skipping, aggregation and the evaluate() entry point."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import load_dataset
from moirai_cli.errors import InputError
from moirai_cli.evaluation import METRIC_NAMES, evaluate, run_backtest
from moirai_cli.evaluation.metrics import seasonal_error


def noisy_series(lengths: list[int], seed: int = 0, variates: int = 1) -> list[np.ndarray]:
    """Seasonal (period 4) positive series (T_i, V) with noise."""
    rng = np.random.default_rng(seed)
    return [10 + np.sin(np.arange(t) * np.pi / 2)[:, None] + rng.normal(0, 0.5, size=(t, variates)) for t in lengths]


class RecordingForecaster:
    """Forecast function recording its inputs; samples are the last value plus noise."""

    def __init__(self, num_samples: int = 20) -> None:
        self.calls: list[dict] = []
        self.rng = np.random.default_rng(1)
        self.num_samples = num_samples

    def __call__(self, contexts, horizon, *, item_ids, **covariates):
        self.calls.append({"contexts": contexts, "horizon": horizon, "item_ids": item_ids, **covariates})
        last = np.stack([c[-1] for c in contexts])  # (N, V)
        noise = self.rng.normal(size=(len(contexts), self.num_samples, horizon, last.shape[1]))
        return last[:, None, None, :] + noise


def test_windows_are_cut_from_the_end_with_stride():
    series = noisy_series([30, 25])
    past = [np.arange(len(s) * 2.0).reshape(-1, 2) for s in series]
    known = [np.arange(float(len(s)))[:, None] for s in series]
    forecaster = RecordingForecaster()
    result = run_backtest(
        series, 4, forecaster, windows=3, stride=2, item_ids=["a", "b"], past_covariates=past, known_covariates=known
    )
    assert len(forecaster.calls) == 3
    for k, call in enumerate(forecaster.calls):
        cutoffs = [len(s) - 4 - (3 - 1 - k) * 2 for s in series]  # T - H - (K-1-k) S
        assert [len(c) for c in call["contexts"]] == cutoffs
        assert [len(c) for c in call["past_covariates"]] == cutoffs
        assert [len(c) for c in call["known_covariates"]] == [c + 4 for c in cutoffs]
        np.testing.assert_array_equal(call["contexts"][0], series[0][: cutoffs[0]])
    per_window = result.per_window
    assert list(per_window[["item_id", "window", "window_start_row"]].itertuples(index=False, name=None)) == [
        ("a", 0, 22), ("b", 0, 17), ("a", 1, 24), ("b", 1, 19), ("a", 2, 26), ("b", 2, 21)
    ]  # fmt: skip
    assert (per_window["cutoff"] == per_window["window_start_row"] - 1).all()  # no timestamps: the origin's row
    assert result.forecasts.shape[0] == 2 * 3 * 4
    last = result.forecasts[(result.forecasts["item_id"] == "a") & (result.forecasts["window"] == 2)]
    np.testing.assert_array_equal(last["actual"], series[0][26:30, 0])


def test_default_stride_is_the_horizon_and_covariates_are_optional():
    forecaster = RecordingForecaster()
    result = run_backtest(noisy_series([20]), 3, forecaster, windows=2)
    assert result.stride == 3
    assert [len(call["contexts"][0]) for call in forecaster.calls] == [14, 17]
    assert set(forecaster.calls[0]) == {"contexts", "horizon", "item_ids"}
    assert forecaster.calls[0]["item_ids"] == ["0"]


def test_short_series_are_skipped_and_counted():
    series = noisy_series([30, 9, 10, 12])
    series[3][:4] = np.nan  # only missing values before its first window
    result = run_backtest(series, 4, RecordingForecaster(), windows=2, item_ids=["ok", "short", "edge", "empty"])
    # Two windows of 4 need more than 8 rows: 9 leaves a 1-row context, 12 a fully missing one.
    assert result.skipped == ["empty"]
    assert sorted(result.per_window["item_id"].unique()) == ["edge", "ok", "short"]
    result = run_backtest(series, 5, RecordingForecaster(), windows=2, item_ids=["ok", "short", "edge", "empty"])
    assert result.skipped == ["short", "edge", "empty"] and result.n_series == 1


def test_no_series_long_enough_is_a_clear_input_error():
    with pytest.raises(InputError, match="no series is long enough .* at least 25 rows"):
        run_backtest(noisy_series([10, 12]), 8, RecordingForecaster(), windows=3)


@pytest.mark.parametrize("argument", ["horizon", "windows", "stride"])
def test_invalid_window_arguments(argument):
    kwargs = {"horizon": 2, "windows": 1, "stride": 1} | {argument: 0}
    with pytest.raises(InputError, match=f"{argument} must be at least 1"):
        run_backtest(noisy_series([10]), kwargs.pop("horizon"), RecordingForecaster(), **kwargs)


def test_forecast_shape_is_checked():
    with pytest.raises(ValueError, match=r"expected \(1, S, 3, 1\)"):
        run_backtest(noisy_series([20]), 3, lambda contexts, horizon, item_ids: np.zeros((1, 5, 3)))


def test_summary_aggregates_per_window_rows_as_documented():
    result = run_backtest(noisy_series([40, 33, 50]), 4, RecordingForecaster(), windows=2, season_length=4)
    per_window, summary = result.per_window, result.summary
    assert list(summary.index) == list(METRIC_NAMES)
    for name in ["mae", "rmse", "mase", "smape", "mape", "msis", "coverage"]:
        assert summary.loc[name, "model"] == pytest.approx(per_window[f"model_{name}"].mean())
        assert summary.loc[name, "baseline"] == pytest.approx(per_window[f"baseline_{name}"].mean())
    assert summary.loc["wql", "model"] == pytest.approx(
        per_window["model_sum_quantile_loss"].sum() / per_window["sum_abs_target"].sum()
    )
    per_series = per_window.groupby("item_id")[["model_mase", "baseline_mase"]].mean()
    ratios = per_series["model_mase"] / per_series["baseline_mase"]
    assert summary.loc["mase", "relative"] == pytest.approx(np.exp(np.log(ratios).mean()))
    assert np.isnan(summary.loc["coverage", "relative"])
    first = per_window.iloc[0]
    assert first["seasonal_error"] == pytest.approx(seasonal_error(noisy_series([40])[0][:32, 0], 4))


def test_oracle_beats_the_baseline_and_missing_actuals_are_ignored():
    series = noisy_series([30, 30])
    series[1][-2:] = np.nan
    series[0][-4:] = 0.0  # MAPE leaves out zero actuals and counts them

    def oracle(contexts, horizon, item_ids):
        futures = [s[len(c) : len(c) + horizon] for s, c in zip(series, contexts)]
        return np.stack([np.nan_to_num(f)[None].repeat(3, axis=0) for f in futures])  # (N, 3, H, 1)

    result = run_backtest(series, 4, oracle, season_length=4)
    assert result.summary.loc["mae", "model"] == 0.0
    assert result.summary.loc["coverage", "model"] == 1.0
    assert result.summary.loc["mase", "relative"] == pytest.approx(0.01)  # ratios are clipped at 0.01
    assert result.per_window["n_observed"].tolist() == [4, 2]
    assert result.n_zero_actuals == 4
    assert np.isnan(result.per_window.loc[0, "model_mape"])


def test_multivariate_rows_per_target_and_timestamps():
    series = noisy_series([24, 30], variates=2)
    stamps = [pd.date_range("2024-01-01", periods=len(s), freq="D") for s in series]
    result = run_backtest(series, 5, RecordingForecaster(), target_names=["x", "y"], timestamps=stamps)
    per_window = result.per_window
    assert per_window[["item_id", "target"]].values.tolist() == [["0", "x"], ["0", "y"], ["1", "x"], ["1", "y"]]
    assert per_window.loc[0, "forecast_start"] == pd.Timestamp("2024-01-20")
    assert per_window.loc[0, "cutoff"] == pd.Timestamp("2024-01-19")  # the last day the forecast saw
    assert per_window.loc[0, "window_start_row"] == 19
    rows = result.forecasts[(result.forecasts["item_id"] == "1") & (result.forecasts["target"] == "y")]
    np.testing.assert_array_equal(rows["actual"], series[1][25:, 1])
    assert rows["timestamp"].iloc[0] == pd.Timestamp("2024-01-26")


def test_wql_uses_the_requested_levels_only():
    result = run_backtest(noisy_series([30]), 4, RecordingForecaster(), quantile_levels=[0.5])
    row = result.per_window.iloc[0]
    median = result.forecasts["model_0.5"].to_numpy()
    actual = result.forecasts["actual"].to_numpy()
    pinball = np.maximum(0.5 * (actual - median), -0.5 * (actual - median))
    assert row["model_wql"] == pytest.approx(2 * pinball.sum() / np.abs(actual).sum())
    assert result.quantile_levels == (0.5,)
    assert "model_0.1" in result.forecasts  # still computed for MSIS and coverage


@dataclass
class FakeForecast:
    samples: np.ndarray


class FakeMoirai:
    """Stands in for MoiraiForecaster: same predict signature, records its keyword arguments."""

    def __init__(self) -> None:
        self.kwargs: list[dict] = []
        self.targets: list[list[np.ndarray]] = []  # the contexts of each call

    def predict(self, target, horizon, *, num_samples=100, seed=None, **options):
        self.kwargs.append({"num_samples": num_samples, "seed": seed, **options})
        self.targets.append(list(target))
        assert all(t.ndim == 1 for t in target)  # univariate targets go in as (T,)
        rng = np.random.default_rng(seed)
        return FakeForecast(np.stack([t[-1] + rng.normal(size=(num_samples, horizon, 1)) for t in target]))


@dataclass
class Record:
    """Stands in for moirai_cli.data.frames.SeriesRecord."""

    item_id: str
    timestamps: pd.DatetimeIndex
    target: np.ndarray  # (T, V)
    past_covariates: np.ndarray | None = None
    known_covariates: np.ndarray | None = None


def records(lengths: list[int], covariates: bool = False, variates: int = 1) -> list[Record]:
    """Daily records of noisy seasonal series, optionally with covariates (known ones 3 rows past the end)."""
    return [
        Record(
            f"item{i}",
            pd.date_range("2024-01-01", periods=len(target), freq="D"),
            target,
            np.ones((len(target), 2)) if covariates else None,
            np.ones((len(target) + 3, 1)) if covariates else None,
        )
        for i, target in enumerate(noisy_series(lengths, variates=variates))
    ]


def test_evaluate_drives_the_forecaster_and_derives_the_season():
    forecaster = FakeMoirai()
    result = evaluate(forecaster, records([60, 70]), 6, windows=2, freq="h", num_samples=7, seed=3, context_length=32)
    assert result.season_length == 24
    assert forecaster.kwargs == [{"num_samples": 7, "seed": 3, "item_ids": ["item0", "item1"], "context_length": 32}] * 2
    assert list(result.per_window["item_id"].unique()) == ["item0", "item1"]
    assert result.per_window.loc[0, "forecast_start"] == pd.Timestamp("2024-01-01") + pd.Timedelta(days=48)
    assert evaluate(FakeMoirai(), records([60]), 6, freq="h", season_length=5).season_length == 5


def test_evaluate_passes_record_covariates_and_names_variates():
    forecaster = FakeMoirai()
    result = evaluate(forecaster, records([30], covariates=True), 4, freq="D")
    assert forecaster.kwargs[0]["past_covariates"][0].shape == (26, 2)
    assert forecaster.kwargs[0]["known_covariates"][0].shape == (30, 1)
    assert "target" not in result.per_window
    result = evaluate(MultivariateFake(), records([30], variates=2), 4, target_names=["a", "b"])
    assert result.per_window["target"].tolist() == ["a", "b"]


class MultivariateFake:
    """A predict that returns (N, S, H, V) samples for (T, V) targets."""

    def predict(self, target, horizon, *, num_samples=100, seed=None, **options):
        return FakeForecast(np.stack([np.broadcast_to(t[-1], (num_samples, horizon, t.shape[1])) for t in target]))


def test_evaluate_with_the_real_forecaster(real_forecaster):
    result = evaluate(real_forecaster, records([60, 45, 8]), 4, windows=2, freq="D", num_samples=16, seed=0)
    assert result.skipped == ["item2"]
    assert np.isfinite(result.summary[["model", "baseline"]].to_numpy()).all()
    with_covariates = evaluate(real_forecaster, records([40, 30], covariates=True), 4, freq="D", num_samples=8, seed=0)
    assert np.isfinite(with_covariates.summary["model"].to_numpy()).all()


def test_bad_quantile_levels_and_duplicate_ids_are_input_errors():
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        run_backtest(noisy_series([20]), 3, RecordingForecaster(), quantile_levels=[0.5, 1.0])
    with pytest.raises(InputError, match="unique"):
        run_backtest(noisy_series([20, 20]), 3, RecordingForecaster(), item_ids=["a", "a"])


def test_a_quantile_forecast_is_scored_at_its_own_quantiles(moirai2_checkpoint):
    """A quantile model (Moirai 2.0) gives quantiles, not samples: the backtest scores those, its mean the median."""
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    forecaster = MoiraiForecaster.from_pretrained(str(moirai2_checkpoint), device="cpu")
    data = records([60, 45])
    result = evaluate(forecaster, data, 4, windows=2, freq="D", context_length=32)
    forecasts = result.forecasts
    np.testing.assert_array_equal(forecasts["model_mean"], forecasts["model_0.5"])
    last = forecaster.predict([r.target[:-4, 0] for r in data], 4, context_length=32)
    window = forecasts[forecasts["window"] == 1]
    np.testing.assert_allclose(window["model_0.9"], last.values[:, 8, :, 0].ravel(), rtol=1e-6)
    assert np.isfinite(result.summary["model"].drop("mape", errors="ignore").to_numpy()).all()


def test_a_forecast_object_of_the_wrong_shape_is_refused():
    from moirai_cli.forecasting.pipeline import DirectQuantileForecast

    def forecast_fn(contexts, horizon, **covariates):
        return DirectQuantileForecast(np.zeros((len(contexts), 3, horizon + 1, 1), np.float32), (0.1, 0.5, 0.9))

    with pytest.raises(ValueError, match="expected"):
        run_backtest(noisy_series([20]), 3, forecast_fn)


def test_actuals_and_metrics_keep_float64_precision():
    """Values a float32 would round (1e8 + fractions) are scored exactly, and ties at an interval bound hold."""
    base = 1e8
    series = [base + np.arange(40) % 4 * 0.25]  # float64: 1e8, 1e8 + 0.25, ...; float32 holds only 1e8
    constant = lambda contexts, horizon, **_: np.full((len(contexts), 5, horizon, 1), base)  # noqa: E731
    result = run_backtest(series, 4, constant, season_length=4)
    rows = result.forecasts
    np.testing.assert_array_equal(rows["actual"], series[0][-4:])
    assert result.per_window.loc[0, "model_mae"] == pytest.approx(np.mean(series[0][-4:] - base), rel=1e-12)
    assert result.per_window.loc[0, "model_mae"] == 0.375
    # Only the actual equal to the (constant) forecast lies inside the degenerate interval [1e8, 1e8].
    assert result.per_window.loc[0, "model_coverage"] == 0.25
def test_actuals_keep_their_precision_from_file_to_scores(real_forecaster):
    # Values were float32 in the data layer: 1e-300 actuals became zeros (dropped from MAPE, counted as
    # zero actuals) and a 1e12 level lost its unit variation.
    rng = np.random.default_rng(0)
    unit = np.sin(np.arange(40) / 3) + 0.1 * rng.normal(size=40)
    table = pd.DataFrame(
        {"date": pd.date_range("2024-01-01", periods=40).strftime("%Y-%m-%d"), "tiny": 1e-300 * (2 + unit), "level": 1e12 + unit}
    )
    dataset = load_dataset(pd.read_csv(io.StringIO(table.to_csv(index=False)), dtype=str))
    result = evaluate(real_forecaster, dataset.series, 4, freq=dataset.freq, num_samples=16, seed=0)
    actual = result.forecasts.set_index("item_id")["actual"]
    assert actual.loc["tiny"].tolist() == pytest.approx((1e-300 * (2 + unit[-4:])).tolist(), rel=1e-12, abs=0)
    assert actual.loc["level"].tolist() == pytest.approx((1e12 + unit[-4:]).tolist(), rel=0, abs=1e-3)
    assert result.n_zero_actuals == 0
    model = result.per_window.set_index("item_id")
    assert np.isfinite(model.loc[["tiny", "level"], "model_mase"]).all() and (model["model_mase"] < 20).all()


def test_windows_of_a_series_with_leading_missing_values_count_from_its_first_row():
    """Rows before a series' first observed value are history: the windows, their cutoffs and the contexts
    the forecaster gets are counted from the series' first row in the file."""
    days = pd.date_range("2024-01-01", periods=40).strftime("%Y-%m-%d")
    values = noisy_series([40])[0][:, 0]
    text = "id,date,y\n" + "".join(
        f"{item},{day},{'' if item == 'late' and row < 5 else value}\n"
        for item in ("late", "whole")
        for row, (day, value) in enumerate(zip(days, values))
    )
    dataset = load_dataset(pd.read_csv(io.StringIO(text), dtype=str))
    forecaster = FakeMoirai()
    result = evaluate(forecaster, dataset.series, 4, windows=2, freq="D", num_samples=5, seed=0)
    rows = result.per_window.set_index(["item_id", "window"])
    for item in ("late", "whole"):
        assert rows.loc[(item, 0), "window_start_row"] == 32 and rows.loc[(item, 1), "window_start_row"] == 36
        assert rows.loc[(item, 0), "cutoff"] == pd.Timestamp(days[31]) and rows.loc[(item, 1), "forecast_start"] == pd.Timestamp(days[36])
    late = result.forecasts[(result.forecasts["item_id"] == "late") & (result.forecasts["window"] == 0)]
    np.testing.assert_array_equal(late["actual"], values[32:36])
    late_context, whole_context = forecaster.targets[0]
    assert len(late_context) == len(whole_context) == 32
    assert np.isnan(late_context[:5]).all() and not np.isnan(late_context[5:]).any()
