"""Training and validation windows: where they are cut, how they are drawn, how they are packed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from moirai_cli.data import SeriesRecord
from moirai_cli.errors import InputError
from moirai_cli.evaluation.backtest import run_backtest
from moirai_cli.forecasting.numerics import condition_inputs
from moirai_cli.forecasting.packing import pack_series
from moirai_cli.training.windows import TrainingWindows, Window, WindowPacker, validation_windows


def record(item_id: str, values: np.ndarray, known: np.ndarray | None = None, past: np.ndarray | None = None) -> SeriesRecord:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return SeriesRecord(item_id, pd.date_range("2021-01-01", periods=len(values), freq="D"), values, past, known)


def test_validation_windows_are_the_backtests_windows():
    rng = np.random.default_rng(0)
    records = [record(f"s{i}", rng.normal(size=length)) for i, length in enumerate([40, 25, 9, 31])]
    horizon, count = 6, 3
    windows = validation_windows(records, horizon, count)
    backtest = run_backtest([r.target for r in records], horizon, lambda c, h, **_: np.zeros((len(c), 1, h, 1)),
                            windows=count, item_ids=[r.item_id for r in records])
    starts = sorted((row.item_id, row.window_start_row) for row in backtest.per_window.itertuples())
    assert sorted((records[w.series].item_id, w.end - horizon) for w in windows) == starts
    assert "s2" in backtest.skipped and all(records[w.series].item_id != "s2" for w in windows)


def test_validation_windows_without_an_observed_value_are_left_out():
    values = np.arange(30.0)
    values[-5:] = np.nan
    assert [w.end for w in validation_windows([record("a", values)], 5, 2)] == [25]


def test_training_windows_end_before_the_validation_windows_and_see_observed_values():
    values = np.arange(60.0)
    values[:10] = np.nan  # nothing observed before row 10
    values[30:38] = np.nan  # a horizon inside this gap has nothing to score
    records = [record("a", values), record("b", np.arange(20.0))]
    windows = TrainingWindows(records, horizon=8, validation_windows=2)
    drawn = [w for step in range(200) for w in windows.draw(seed=1, step=step, count=8)]
    ends = {(w.series, w.end) for w in drawn}
    for series, end in ends:
        target = records[series].target[:, 0]
        assert end <= len(target) - 2 * 8  # the future lies before the last two horizons
        assert not np.isnan(target[: end - 8]).all()  # an observed value in the context
        assert not np.isnan(target[end - 8 : end]).all()  # and one to predict
    # every admissible end of series a is drawn: 19 (the first row with an observed context) .. 44 (60 - 16), but the gap's
    admissible = {e for e in range(19, 45) if not np.isnan(values[e - 8 : e]).all()}
    assert {end for series, end in ends if series == 0} == admissible
    assert not any(series == 1 for series, _ in ends)  # 20 rows: none left once 16 are held out and 9 needed
    assert windows.series_with_windows == 1


def test_draws_depend_on_the_seed_and_the_step_only():
    records = [record(f"s{i}", np.arange(50.0 + 10 * i)) for i in range(4)]
    windows = TrainingWindows(records, horizon=5, validation_windows=1)
    again = TrainingWindows(list(reversed(records))[::-1], horizon=5, validation_windows=1)
    assert windows.draw(3, 7, 16) == again.draw(3, 7, 16)
    assert windows.draw(3, 7, 16) != windows.draw(3, 8, 16)
    assert windows.draw(3, 7, 16) != windows.draw(4, 7, 16)


def test_draws_are_uniform_over_series_and_end_rows():
    """A series with twice the admissible end rows is drawn about twice as often."""
    records = [record("short", np.arange(40.0)), record("long", np.arange(70.0))]
    windows = TrainingWindows(records, horizon=4, validation_windows=1)
    assert windows.candidates == (36 - 5 + 1) + (66 - 5 + 1)
    drawn = [w.series for step in range(400) for w in windows.draw(0, step, 32)]
    share = np.mean(drawn)
    assert share == pytest.approx(62 / 94, abs=0.02)


def test_a_history_of_missing_futures_is_refused():
    values = np.full(40, np.nan)
    values[0] = 1.0  # an observed context, and never anything to predict after it
    windows = TrainingWindows([record("a", values)], horizon=4, validation_windows=0)
    with pytest.raises(InputError, match="no window with an observed value in its 4 steps to predict"):
        windows.draw(0, 1, 4)


@pytest.mark.parametrize("causal_mean", [True, False])
def test_a_window_is_packed_as_the_forecast_packs_its_context(causal_mean):
    """Context tokens equal those of a forecast from the context alone; the future tokens hold the true values, flagged."""
    rng = np.random.default_rng(3)
    values = rng.normal(10, 2, 80)
    values[50:53] = np.nan
    known = rng.normal(size=(80, 1))
    past = rng.normal(size=(80, 2)) * 1e-6  # tiny: conditioned to unit scale, as numerics.py does before a forecast
    series = record("a", values, known=known, past=past)
    horizon, context, end = 12, 40, 70
    packer = WindowPacker([series], horizon, context, 16, 32, causal_mean, torch.device("cpu"))
    window = packer.tokens(Window(0, end))
    targets, pasts, knowns, _ = condition_inputs([series.target[: end - horizon]], [past[: end - horizon]], [known[:end]], context)
    forecast = pack_series(targets[0], horizon, context, 16, 32, knowns[0], pasts[0], causal_mean_target=causal_mean)
    assert np.array_equal(window.last_context, forecast.last_context) and np.array_equal(window.future, forecast.future)
    future = window.future.ravel()
    for name, array in forecast.tokens.items():
        others = np.setdiff1d(np.arange(len(array)), future)
        np.testing.assert_array_equal(window.tokens[name][others], array[others], err_msg=name)
    assert window.tokens["prediction_mask"][future].all()
    np.testing.assert_array_equal(window.tokens["target"][future, :16].ravel()[:horizon], values[end - horizon : end].astype(np.float32))
