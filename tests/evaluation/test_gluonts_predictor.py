"""MoiraiPredictor inside GluonTS's own backtest and evaluation functions."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gluonts
pytest.importorskip("gluonts")
warnings.filterwarnings("ignore", message="Using `json`-module", category=UserWarning)

from gluonts.dataset.common import ListDataset
from gluonts.dataset.split import split
from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
from gluonts.evaluation import Evaluator, MultivariateEvaluator
from gluonts.evaluation.backtest import backtest_metrics, make_evaluation_predictions
from gluonts.model import evaluate_model
from gluonts.model.forecast import QuantileForecast, SampleForecast

from moirai_cli.evaluation.gluonts_predictor import MoiraiPredictor

HORIZON = 5


@dataclass
class FakeForecast:
    samples: np.ndarray  # (N, S, H, V)


class FakeMoirai:
    """Same predict signature as MoiraiForecaster; samples are the last value plus noise."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def predict(
        self, target, horizon, *, num_samples=100, seed=None, past_covariates=None, known_covariates=None, **options
    ):
        self.calls.append(
            {
                "target": target,
                "past": past_covariates,
                "known": known_covariates,
                "num_samples": num_samples,
                **options,
            }
        )
        rng = np.random.default_rng(seed)
        last = np.stack([np.atleast_1d(t[-1]) for t in target])  # (N, V)
        return FakeForecast(
            last[:, None, None, :] + rng.normal(size=(len(target), num_samples, horizon, last.shape[1]))
        )


def univariate_dataset() -> ListDataset:
    rng = np.random.default_rng(0)
    return ListDataset(
        [
            {"item_id": f"s{i}", "start": "2024-01-01", "target": 20 + rng.normal(size=length).cumsum()}
            for i, length in enumerate([30, 41, 25, 36])
        ],
        freq="D",
    )


def test_make_evaluation_predictions_and_evaluator():
    fake = FakeMoirai()
    predictor = MoiraiPredictor(fake, HORIZON, batch_size=3, context_length=64, seed=0)
    forecast_iter, ts_iter = make_evaluation_predictions(univariate_dataset(), predictor, num_samples=40)
    forecasts, series = list(forecast_iter), list(ts_iter)
    assert [len(call["target"]) for call in fake.calls] == [3, 1]  # batches of batch_size entries
    assert fake.calls[0]["num_samples"] == 40 and fake.calls[0]["context_length"] == 64
    for forecast, ts, length, item in zip(forecasts, series, [30, 41, 25, 36], ["s0", "s1", "s2", "s3"]):
        assert isinstance(forecast, SampleForecast)
        assert forecast.samples.shape == (40, HORIZON)
        assert forecast.item_id == item
        assert forecast.start_date == pd.Period("2024-01-01", freq="D") + (length - HORIZON)
        assert forecast.start_date == ts.index[-HORIZON]
    aggregate, per_item = Evaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(series, forecasts)
    assert np.isfinite([aggregate["MASE"], aggregate["mean_wQuantileLoss"]]).all()
    assert len(per_item) == 4


def test_backtest_metrics_and_evaluate_model():
    predictor = MoiraiPredictor(FakeMoirai(), HORIZON, num_samples=30)
    aggregate, _ = backtest_metrics(univariate_dataset(), predictor, evaluator=Evaluator(num_workers=0))
    assert np.isfinite(aggregate["RMSE"])
    _, template = split(univariate_dataset(), offset=-HORIZON)
    metrics = evaluate_model(
        predictor,
        test_data=template.generate_instances(HORIZON),
        metrics=[MASE(), MeanWeightedSumQuantileLoss(quantile_levels=[0.1, 0.5, 0.9])],
    )
    assert np.isfinite(metrics.to_numpy()).all()


def test_multivariate_targets_give_three_dimensional_samples():
    rng = np.random.default_rng(1)
    dataset = ListDataset(
        [{"start": "2024-01-01 00:00", "target": rng.normal(size=(2, 40))} for _ in range(3)],
        freq="h",
        one_dim_target=False,
    )
    fake = FakeMoirai()
    forecast_iter, ts_iter = make_evaluation_predictions(dataset, MoiraiPredictor(fake, HORIZON), num_samples=10)
    forecasts, series = list(forecast_iter), list(ts_iter)
    assert all(call_target.shape == (35, 2) for call_target in fake.calls[0]["target"])  # (T, V) to the model
    assert forecasts[0].samples.shape == (10, HORIZON, 2)
    assert forecasts[0].start_date == pd.Period("2024-01-02 11:00", freq="h")
    aggregate, _ = MultivariateEvaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(series, forecasts)
    assert np.isfinite([aggregate["0_mean_wQuantileLoss"], aggregate["1_MASE"]]).all()


def test_covariates_are_passed_as_past_and_known():
    rng = np.random.default_rng(2)
    dataset = ListDataset(
        [
            {
                "start": "2024-01-01",
                "target": rng.normal(size=30),
                "feat_dynamic_real": rng.normal(size=(2, 30)),
                "past_feat_dynamic_real": rng.normal(size=(1, 30)),
            }
        ],
        freq="D",
    )
    fake = FakeMoirai()
    list(make_evaluation_predictions(dataset, MoiraiPredictor(fake, HORIZON), num_samples=5)[0])
    call = fake.calls[0]
    assert call["target"][0].shape == (25,)
    assert call["known"][0].shape == (30, 2)  # the horizon's values of known covariates come along
    assert call["past"][0].shape == (25, 1)


def test_real_forecaster_in_a_gluonts_backtest(real_forecaster):
    predictor = MoiraiPredictor(real_forecaster, HORIZON, num_samples=20, context_length=64, seed=0)
    forecast_iter, ts_iter = make_evaluation_predictions(univariate_dataset(), predictor, num_samples=20)
    forecasts, series = list(forecast_iter), list(ts_iter)
    assert forecasts[0].samples.shape == (20, HORIZON)
    aggregate, _ = Evaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(series, forecasts)
    assert np.isfinite(aggregate["mean_wQuantileLoss"])


def test_a_quantile_model_gives_gluonts_quantile_forecasts(moirai2_checkpoint):
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    forecaster = MoiraiForecaster.from_pretrained(str(moirai2_checkpoint), device="cpu")
    predictor = MoiraiPredictor(forecaster, HORIZON, context_length=64)
    forecast_iter, ts_iter = make_evaluation_predictions(univariate_dataset(), predictor)
    forecasts, series = list(forecast_iter), list(ts_iter)
    assert isinstance(forecasts[0], QuantileForecast)
    assert forecasts[0].forecast_keys == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    expected = forecaster.predict([np.asarray(e["target"], np.float32)[:-HORIZON] for e in univariate_dataset()], HORIZON, context_length=64)
    np.testing.assert_array_equal(forecasts[0].quantile(0.9), expected.values[0, 8, :, 0])
    np.testing.assert_array_equal(forecasts[0].mean, expected.mean[0, :, 0])
    aggregate, _ = Evaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(series, forecasts)
    assert np.isfinite(aggregate["mean_wQuantileLoss"])


def test_a_start_that_is_not_a_period_fails_before_the_model_runs():
    fake = FakeMoirai()
    entries = [{"start": "2024-01-01", "target": np.arange(20.0)}]  # a plain list, not a GluonTS dataset
    with pytest.raises(TypeError, match="entry 'start' must be a pandas Period"):
        list(MoiraiPredictor(fake, HORIZON).predict(entries))
    assert fake.calls == []
