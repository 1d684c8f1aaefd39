"""compare(): several models on the same windows, loaded one at a time, in one table with seasonal naive."""

from __future__ import annotations

import weakref
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import load_dataset
from moirai_cli.errors import InputError
from moirai_cli.evaluation import BASELINE_LABEL, METRIC_NAMES, compare, evaluate
from moirai_cli.evaluation.leaderboard import best_rows
from moirai_cli.forecasting.pipeline import Forecast, MoiraiForecaster

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
STOCKS = load_dataset(str(SAMPLES / "stocks.csv"))  # 5 monthly series
OPTIONS = dict(windows=2, freq=STOCKS.freq, seed=3, num_samples=16)


class StubForecaster:
    """A seeded forecaster: last value + bias + noise from a stream keyed by (seed, series id), like the real one."""

    family_title = "Stub"
    parameter_count = 7

    def __init__(self, bias: float, spread: float = 5.0) -> None:
        self.bias, self.spread = bias, spread
        self.cycle = self  # a reference cycle: only a collection frees it

    def predict(self, target, horizon, *, item_ids, seed=None, num_samples=None, progress=None, **options) -> Forecast:
        samples = []
        for series, item_id in zip(target, item_ids):
            rng = np.random.default_rng([seed or 0, zlib.crc32(str(item_id).encode())])
            last = series.reshape(len(series), -1)[-1]  # (V,)
            noise = rng.normal(scale=self.spread, size=(num_samples or 100, horizon, last.shape[0]))
            samples.append(last + self.bias + noise)
        if progress is not None:
            progress(len(target))
        return Forecast(np.stack(samples))


def test_each_model_is_loaded_only_after_the_previous_one_is_freed():
    created: list[tuple[str, weakref.ref]] = []
    seen_alive: dict[str, list[str]] = {}

    def loader(name: str, bias: float) -> StubForecaster:
        seen_alive[name] = [other for other, ref in created if ref() is not None]
        forecaster = StubForecaster(bias)
        created.append((name, weakref.ref(forecaster)))
        return forecaster

    models = {name: partial(loader, name, bias) for name, bias in (("a", 0.0), ("b", 1.0), ("c", 2.0))}
    board = compare(models, STOCKS.series, 6, **OPTIONS)
    assert [name for name, _ in created] == ["a", "b", "c"]  # loaded in the order given
    assert seen_alive == {"a": [], "b": [], "c": []}  # none alive when the next loads
    assert all(ref() is None for _, ref in created)  # and the board keeps none
    assert board.labels == ["a", "b", "c"]


def test_every_model_and_the_baseline_are_scored_on_the_same_windows():
    board = compare({"good": StubForecaster(0.0), "biased": StubForecaster(40.0)}, STOCKS.series, 6, **OPTIONS)
    keys = ["item_id", "window", "cutoff"]
    per_model = {label: rows[keys].reset_index(drop=True) for label, rows in board.per_window.groupby("model", sort=False)}
    assert list(per_model) == ["good", "biased", BASELINE_LABEL]
    assert len(per_model["good"]) == 5 * 2
    for rows in per_model.values():
        pd.testing.assert_frame_equal(rows, per_model["good"])
    assert list(board.per_window.columns[:4]) == ["model", *keys]
    assert set(METRIC_NAMES) <= set(board.per_window.columns)
    assert not any(str(c).startswith(("model_", "baseline_")) for c in board.per_window.columns)
    assert set(board.forecasts["model"]) == {"good", "biased", BASELINE_LABEL}
    assert len(board.forecasts) == 3 * 5 * 2 * 6 and {"actual", "mean", "0.5"} <= set(board.forecasts.columns)


def test_scores_are_those_each_model_gets_alone_with_the_same_seed():
    models = {"a": StubForecaster(0.0), "b": StubForecaster(3.0, spread=1.0)}
    board = compare(models, STOCKS.series, 6, **OPTIONS)
    reversed_board = compare(dict(reversed(models.items())), STOCKS.series, 6, **OPTIONS)
    for label, forecaster in models.items():
        alone = evaluate(forecaster, STOCKS.series, 6, **OPTIONS)
        rows = board.per_window[board.per_window["model"] == label].reset_index(drop=True)
        for name in METRIC_NAMES:
            np.testing.assert_array_equal(rows[name], alone.per_window[f"model_{name}"], err_msg=name)
        summary = board.table.loc[label]
        for name in METRIC_NAMES:
            np.testing.assert_equal(summary[name], alone.summary.loc[name, "model"])
        assert summary["relative_mase"] == alone.summary.loc["mase", "relative"]
        assert summary["relative_wql"] == alone.summary.loc["wql", "relative"]
        pd.testing.assert_series_equal(  # as floats: pandas 3 types a selection of float columns, pandas 2 keeps objects
            summary[list(METRIC_NAMES)].astype(float),
            reversed_board.table.loc[label, list(METRIC_NAMES)].astype(float),
            check_names=False,
        )
    baseline = board.table.loc[BASELINE_LABEL]
    alone = evaluate(models["a"], STOCKS.series, 6, **OPTIONS)
    assert [baseline[name] for name in METRIC_NAMES] == list(alone.summary["baseline"])
    assert baseline["relative_mase"] == baseline["relative_wql"] == 1.0


def test_the_table_has_a_row_per_model_then_the_baseline_and_marks_the_best():
    board = compare({"close": StubForecaster(0.0, spread=2.0), "far": StubForecaster(500.0)}, STOCKS.series, 6, **OPTIONS)
    table = board.table
    assert list(table.index) == ["close", "far", BASELINE_LABEL] and table.index.name == "model"
    assert list(table.columns) == ["family", "parameters", "seconds", *METRIC_NAMES, "relative_mase", "relative_wql"]
    assert table.loc["close", "family"] == "Stub" and table.loc["close", "parameters"] == 7
    assert table.loc["close", "seconds"] > 0 and pd.isna(table.loc[BASELINE_LABEL, "seconds"])
    assert table.loc["far", "mae"] > table.loc["close", "mae"]
    best = board.best
    for name in ("mae", "mase", "wql", "relative_wql"):
        assert best[name] == [table[name].astype(float).idxmin()], name
    assert "far" not in best["mae"]
    distance = (table["coverage"] - 0.8).abs()
    assert best["coverage"] == [distance.idxmin()]


def test_best_rows_ties_coverage_and_undefined_columns():
    table = pd.DataFrame(
        {
            **{name: [2.0, 1.0, 1.0] for name in METRIC_NAMES},
            "coverage": [0.95, 0.5, 0.7],
            "mape": [np.nan, np.nan, np.nan],
            "relative_mase": [0.9, 1.2, 1.0],
            "relative_wql": [0.9, 0.9, 1.0],
        },
        index=["x", "y", BASELINE_LABEL],
    )
    best = best_rows(table)
    assert best["mae"] == ["y", BASELINE_LABEL]  # a tie marks both
    assert best["coverage"] == [BASELINE_LABEL]  # 0.7 is closest to 0.8 (0.95 is 0.15 away)
    assert best["mape"] == []
    assert best["relative_mase"] == ["x"] and best["relative_wql"] == ["x", "y"]


@pytest.mark.parametrize(
    "models, message",
    [({}, "no model to compare"), ({BASELINE_LABEL: StubForecaster(0.0)}, "names the baseline")],
)
def test_bad_model_sets_are_refused(models, message):
    with pytest.raises(InputError, match=message):
        compare(models, STOCKS.series, 6, **OPTIONS)


def test_three_families_in_one_leaderboard(family_checkpoints):
    loaders = {
        family: partial(MoiraiForecaster.from_pretrained, str(folder), device="cpu")
        for family, folder in family_checkpoints.items()
    }
    options = dict(OPTIONS, windows=1, context_length=64, patch_size=16)
    board = compare(loaders, STOCKS.series, 6, **options)
    assert list(board.table.index) == ["moirai-1", "moirai-moe", "moirai-2", BASELINE_LABEL]
    assert list(board.table["family"]) == ["Moirai 1.x", "Moirai-MoE", "Moirai 2.0", "baseline"]
    assert np.isfinite(board.table[list(METRIC_NAMES)].to_numpy(dtype=float)).all()
    for family, folder in family_checkpoints.items():  # each as `evaluate` scores it alone
        alone = evaluate(MoiraiForecaster.from_pretrained(str(folder), device="cpu"), STOCKS.series, 6, **options)
        rows = board.per_window[board.per_window["model"] == family].reset_index(drop=True)
        np.testing.assert_array_equal(rows["wql"], alone.per_window["model_wql"], err_msg=family)
    # Moirai 2.0 takes no samples: the number asked for changes nothing, as with one model.
    fewer = compare({"moirai-2": loaders["moirai-2"]}, STOCKS.series, 6, **dict(options, num_samples=3))
    pd.testing.assert_series_equal(
        fewer.table.loc["moirai-2", list(METRIC_NAMES)], board.table.loc["moirai-2", list(METRIC_NAMES)]
    )


def test_an_option_a_family_lacks_is_refused_by_its_predict(family_checkpoints):
    loaders = {f: partial(MoiraiForecaster.from_pretrained, str(family_checkpoints[f]), device="cpu") for f in ("moirai-1", "moirai-moe")}
    with pytest.raises(InputError, match="decoding 'cached' is not available for Moirai 1.x"):
        compare(loaders, STOCKS.series, 6, **dict(OPTIONS, context_length=64, decoding="cached"))
