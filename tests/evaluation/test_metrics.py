"""Our metrics against independent implementations (utilsforecast, GluonTS) on the same forecasts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from moirai_cli.evaluation.metrics import (
    aggregate_metrics,
    count_zero_actuals,
    geometric_mean_ratio,
    mape,
    season_length_from_freq,
    seasonal_error,
    smape,
    window_metrics,
)

N_SERIES, HISTORY, HORIZON, SEASON = 6, 40, 12, 12
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RTOL = 1e-6


def make_case(seed: int = 0, zeros: bool = False, missing: bool = False) -> dict:
    """Seeded histories (N, T), actuals (N, H), means (N, H) and sorted quantiles (N, Q, H)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(HISTORY + HORIZON)
    level = rng.uniform(5, 50, size=(N_SERIES, 1))
    series = level + 5 * np.sin(2 * np.pi * steps / SEASON) + rng.normal(0, 2, size=(N_SERIES, steps.size))
    history, actual = series[:, :HISTORY].copy(), series[:, HISTORY:].copy()
    if zeros:
        actual[0, [1, 4]] = 0.0
        actual[2, 0] = 0.0
    if missing:
        actual[1, [0, 5, 6]] = np.nan
        history[3, [2, 17]] = np.nan
    mean = actual + rng.normal(0, 3, size=actual.shape)
    mean = np.nan_to_num(mean, nan=level[:, 0].mean())
    spread = np.sort(rng.normal(0, 4, size=(N_SERIES, len(LEVELS), HORIZON)), axis=1)
    quantiles = mean[:, None, :] + spread - spread[:, [LEVELS.index(0.5)], :]  # median = mean
    quantiles[:, LEVELS.index(0.5)] += rng.normal(0, 0.5, size=(N_SERIES, HORIZON))  # median != mean
    quantiles = np.sort(quantiles, axis=1)
    return {"history": history, "actual": actual, "mean": mean, "quantiles": quantiles}


def our_metrics(case: dict) -> pd.DataFrame:
    """Per-series metrics (one row per series) from window_metrics."""
    rows = []
    for i in range(N_SERIES):
        scale = seasonal_error(case["history"][i], SEASON)
        scores = window_metrics(case["actual"][i], case["mean"][i], case["quantiles"][i], LEVELS, scale)
        scores["sum_abs_target"] = float(np.nansum(np.abs(case["actual"][i])))
        rows.append(scores)
    return pd.DataFrame(rows)


def utilsforecast_frames(case: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The case as utilsforecast's long test frame (with quantile and interval columns) and train frame."""
    ids = np.repeat([f"s{i}" for i in range(N_SERIES)], HORIZON)
    test = pd.DataFrame(
        {
            "unique_id": ids,
            "ds": np.tile(np.arange(HISTORY, HISTORY + HORIZON), N_SERIES),
            "y": case["actual"].ravel(),
            "mean": case["mean"].ravel(),
        }
    )
    for q_index, q in enumerate(LEVELS):
        test[f"q{q}"] = case["quantiles"][:, q_index].ravel()
    test["median"] = test["q0.5"]
    test["model-lo-80"], test["model-hi-80"] = test["q0.1"], test["q0.9"]
    train = pd.DataFrame(
        {
            "unique_id": np.repeat([f"s{i}" for i in range(N_SERIES)], HISTORY),
            "ds": np.tile(np.arange(HISTORY), N_SERIES),
            "y": case["history"].ravel(),
        }
    )
    return test, train


def test_point_and_quantile_metrics_match_utilsforecast():
    losses = pytest.importorskip("utilsforecast.losses")
    case = make_case(seed=1, zeros=True)
    ours = our_metrics(case)
    assert np.isfinite(ours.to_numpy()).all()
    test, train = utilsforecast_frames(case)

    def column(frame: pd.DataFrame, name: str) -> np.ndarray:
        return frame.sort_values("unique_id")[name].to_numpy()

    np.testing.assert_allclose(ours["mae"], column(losses.mae(test, ["median"]), "median"), rtol=RTOL)
    np.testing.assert_allclose(ours["rmse"], column(losses.rmse(test, ["mean"]), "mean"), rtol=RTOL)
    mase = losses.mase(test, ["median"], seasonality=SEASON, train_df=train)
    np.testing.assert_allclose(ours["mase"], column(mase, "median"), rtol=RTOL)
    # utilsforecast's sMAPE is |e| / (|y| + |yhat|), bounded 0..1: ours (GluonTS, M4) is twice it.
    np.testing.assert_allclose(ours["smape"], 2 * column(losses.smape(test, ["median"]), "median"), rtol=RTOL)
    # utilsforecast also turns zero actuals into missing values for MAPE.
    np.testing.assert_allclose(ours["mape"], column(losses.mape(test, ["median"]), "median"), rtol=RTOL)
    assert [count_zero_actuals(a) for a in case["actual"]] == [2, 0, 1, 0, 0, 0]
    # scaled_crps = mean over levels of sum 2*pinball / sum |y|: the weighted quantile loss.
    models = {"model": [f"q{q}" for q in LEVELS]}
    crps = losses.scaled_crps(test, models, quantiles=np.array(LEVELS))
    np.testing.assert_allclose(ours["wql"], column(crps, "model"), rtol=RTOL)
    coverage = losses.coverage(test, ["model"], level=80)
    np.testing.assert_allclose(ours["coverage"], column(coverage, "model"), rtol=RTOL)
    # MSIS = mean interval (Winkler) score scaled by the same seasonal error as MASE.
    winkler = column(losses.winkler_score(test, ["model"], level=80), "model")
    # utilsforecast's seasonal scale, recovered as MAE / MASE of an all-zero forecast.
    zero_forecast = test.assign(zero=0.0)
    zero_mase = column(losses.mase(zero_forecast, ["zero"], seasonality=SEASON, train_df=train), "zero")
    scale = column(losses.mae(zero_forecast, ["zero"]), "zero") / zero_mase
    np.testing.assert_allclose(ours["msis"], winkler / scale, rtol=RTOL)


def gluonts_metrics(case: dict, axis: int | None) -> pd.DataFrame:
    """GluonTS's own evaluation (gluonts.ev through evaluate_forecasts) of the case."""
    pytest.importorskip("gluonts")
    from gluonts.dataset.split import split
    from gluonts.ev.metrics import MAE, MAPE, MASE, MSIS, RMSE, SMAPE, Coverage, MeanWeightedSumQuantileLoss
    from gluonts.model.evaluation import evaluate_forecasts
    from gluonts.model.forecast import QuantileForecast as GluonQuantileForecast

    start = pd.Period("2024-01-01 00:00", freq="h")
    dataset = [
        {"item_id": f"s{i}", "start": start, "target": np.concatenate([case["history"][i], case["actual"][i]])}
        for i in range(N_SERIES)
    ]
    _, template = split(dataset, offset=-HORIZON)
    test_data = template.generate_instances(HORIZON)
    forecasts = [
        GluonQuantileForecast(
            np.concatenate([case["quantiles"][i], case["mean"][i][None]]),
            start_date=start + HISTORY,
            forecast_keys=[str(q) for q in LEVELS] + ["mean"],
            item_id=f"s{i}",
        )
        for i in range(N_SERIES)
    ]
    metrics = [
        MAE(),
        RMSE(),
        MASE(),
        SMAPE(),
        MAPE(),
        MeanWeightedSumQuantileLoss(quantile_levels=LEVELS),
        MSIS(alpha=0.2),
        Coverage(0.1),
        Coverage(0.9),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_forecasts(forecasts, test_data=test_data, metrics=metrics, axis=axis, seasonality=SEASON)


@pytest.mark.gluonts
@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing-values"])
def test_metrics_match_gluonts_per_series(missing: bool):
    case = make_case(seed=2, missing=missing)
    ours = our_metrics(case)
    assert np.isfinite(ours.to_numpy()).all()
    theirs = gluonts_metrics(case, axis=1)
    np.testing.assert_allclose(ours["mae"], theirs["MAE[0.5]"], rtol=RTOL)
    np.testing.assert_allclose(ours["rmse"], theirs["RMSE[mean]"], rtol=RTOL)
    np.testing.assert_allclose(ours["mase"], theirs["MASE[0.5]"], rtol=RTOL)
    np.testing.assert_allclose(ours["smape"], theirs["sMAPE[0.5]"], rtol=RTOL)
    np.testing.assert_allclose(ours["mape"], theirs["MAPE[0.5]"], rtol=RTOL)
    np.testing.assert_allclose(ours["wql"], theirs["mean_weighted_sum_quantile_loss"], rtol=RTOL)
    np.testing.assert_allclose(ours["msis"], theirs["MSIS"], rtol=RTOL)
    # GluonTS's Coverage[q] is the share of y <= q-quantile; the 80% interval is their difference.
    np.testing.assert_allclose(ours["coverage"], theirs["coverage[0.9]"] - theirs["coverage[0.1]"], rtol=RTOL)


@pytest.mark.gluonts
def test_aggregation_matches_gluonts_dataset_level():
    case = make_case(seed=3)
    ours = aggregate_metrics(our_metrics(case)).iloc[0]
    theirs = gluonts_metrics(case, axis=None).iloc[0]
    # Same horizon for every series and no missing value: GluonTS's pooled means equal our means
    # of per-series values, and its WQL is the same ratio of sums.
    for name, key in [("mae", "MAE[0.5]"), ("mase", "MASE[0.5]"), ("smape", "sMAPE[0.5]"), ("msis", "MSIS")]:
        assert ours[name] == pytest.approx(theirs[key], rel=RTOL)
    assert ours["wql"] == pytest.approx(theirs["mean_weighted_sum_quantile_loss"], rel=RTOL)
    assert ours["coverage"] == pytest.approx(theirs["coverage[0.9]"] - theirs["coverage[0.1]"], rel=RTOL)


def test_wql_aggregates_as_ratio_of_sums_not_mean_of_ratios():
    rows = pd.DataFrame({"sum_quantile_loss": [1.0, 30.0, np.nan], "sum_abs_target": [10.0, 100.0, 0.0]})
    rows = rows.assign(**{name: np.nan for name in ["mae", "rmse", "mase", "smape", "mape", "msis", "coverage"]})
    assert aggregate_metrics(rows)["wql"].iloc[0] == pytest.approx(31 / 110)
    per_group = aggregate_metrics(rows.assign(item=["a", "b", "b"]), by=["item"])
    np.testing.assert_allclose(per_group["wql"], [0.1, 0.3])


def test_missing_actuals_are_left_out():
    actual = np.array([1.0, np.nan, 3.0, np.nan])
    quantiles = np.tile(np.array([0.0, 2.0, 4.0])[:, None], (1, 4))  # levels 0.1, 0.5, 0.9
    scores = window_metrics(actual, np.full(4, 2.0), quantiles, (0.1, 0.5, 0.9), scale=1.0)
    assert scores["mae"] == pytest.approx(1.0)
    assert scores["coverage"] == 1.0
    all_missing = window_metrics(np.full(4, np.nan), np.full(4, 2.0), quantiles, (0.1, 0.5, 0.9), scale=1.0)
    assert all(math.isnan(value) for value in all_missing.values())


def test_mape_and_smape_edge_cases():
    assert math.isnan(mape(np.array([0.0, 0.0]), np.array([1.0, 2.0])))  # only zeros: undefined
    assert mape(np.array([0.0, 2.0]), np.array([5.0, 1.0])) == pytest.approx(0.5)
    assert smape(np.array([0.0, 2.0]), np.array([0.0, 2.0])) == 0.0  # 0/0 counts as no error
    assert smape(np.array([0.0]), np.array([3.0])) == pytest.approx(2.0)


def test_seasonal_error_falls_back_to_lag_one_for_short_histories():
    history = np.array([1.0, 4.0, 2.0])
    assert seasonal_error(history, 12) == pytest.approx(2.5)  # lag 1: (3 + 2) / 2
    assert seasonal_error(np.array([1.0, np.nan, 5.0, 7.0]), 2) == pytest.approx(4.0)  # the pair (1, 5)
    assert math.isnan(seasonal_error(np.array([3.0]), 1))


def test_window_metrics_needs_median_and_interval_levels():
    with pytest.raises(ValueError, match="0.9"):
        window_metrics(np.ones(3), np.ones(3), np.ones((2, 3)), (0.1, 0.5), scale=1.0)


@pytest.mark.parametrize(
    ("freq", "expected"),
    [("h", 24), ("H", 24), ("2h", 12), ("5h", 1), ("15min", 4), ("T", 60), ("s", 60), ("D", 7),
     ("B", 5), ("W", 52), ("W-SUN", 52), ("MS", 12), ("ME", 12), ("M", 12), ("QE-DEC", 4), ("QS", 4),
     ("YE", 1), ("A-DEC", 1), ("ms", 1), ("unknown", 1), (None, 1)],
)  # fmt: skip
def test_season_length_from_freq(freq, expected):
    assert season_length_from_freq(freq) == expected


@pytest.mark.gluonts
def test_season_length_agrees_with_gluonts_where_documented():
    seasonality = pytest.importorskip("gluonts.time_feature.seasonality")
    for freq in ["h", "2h", "ME", "QE", "B"]:
        assert season_length_from_freq(freq) == seasonality.get_seasonality(freq)
    assert season_length_from_freq(pd.tseries.frequencies.to_offset("6h")) == 4


def test_geometric_mean_ratio_handles_zero_and_missing():
    assert geometric_mean_ratio(np.array([1.0, 4.0]), np.array([2.0, 2.0])) == pytest.approx(math.sqrt(0.5 * 2))
    assert geometric_mean_ratio(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert geometric_mean_ratio(np.array([0.0]), np.array([1.0])) == pytest.approx(0.01)
    assert geometric_mean_ratio(np.array([1.0]), np.array([0.0])) == pytest.approx(100.0)
    assert geometric_mean_ratio(np.array([2.0, np.nan]), np.array([1.0, 1.0])) == pytest.approx(2.0)
    assert math.isnan(geometric_mean_ratio(np.array([np.nan]), np.array([1.0])))
