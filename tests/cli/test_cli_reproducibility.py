"""With --seed, a series gets the same forecast whatever else is in the file and however it is batched."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.cli import app
from moirai_cli.data import load_dataset
from moirai_cli.evaluation import evaluate
from moirai_cli.evaluation.forecast import QuantileForecast
from moirai_cli.forecasting.pipeline import MoiraiForecaster

CHECKPOINT = str(Path(__file__).resolve().parents[1] / "fixtures" / "tiny-moe")
OPTIONS = ["-H", "20", "--num-samples", "6", "--context-length", "64", "--seed", "9", "--device", "cpu", "-q",
           "--model", CHECKPOINT]


def series_table(count: int = 6) -> pd.DataFrame:
    """Daily series of different lengths (so that several token lengths are batched), one with a gap."""
    rng = np.random.default_rng(4)
    frames = []
    for i in range(count):
        length = 25 + 17 * i
        values = rng.normal(0, 1, length).cumsum() + 30
        if i == 2:
            values[5:9] = np.nan
        frames.append(pd.DataFrame({"item_id": f"shop-{i}", "date": pd.date_range("2024-01-01", periods=length).astype(str), "y": values}))
    return pd.concat(frames, ignore_index=True)


def run_forecast(runner, table: pd.DataFrame, tmp_path: Path, name: str, *extra: str) -> pd.DataFrame:
    """The forecast of a table (written to CSV first) as a frame sorted by id and date."""
    path = tmp_path / f"{name}.csv"
    table.to_csv(path, index=False)
    result = runner.invoke(app, ["forecast", str(path), *OPTIONS, *extra])
    assert result.exit_code == 0, result.stderr
    return pd.read_csv(io.StringIO(result.stdout)).sort_values(["item_id", "date"]).reset_index(drop=True)


def test_shuffled_split_and_rebatched_files_give_identical_forecasts(runner, tmp_path):
    table = series_table()
    base = run_forecast(runner, table, tmp_path, "base")
    shuffled = table.sample(frac=1, random_state=0)  # rows in any order: read whole, series in another order
    pd.testing.assert_frame_equal(run_forecast(runner, shuffled, tmp_path, "shuffled"), base)
    pd.testing.assert_frame_equal(run_forecast(runner, table, tmp_path, "batch1", "--batch-size", "1"), base)
    ids = table["item_id"].unique()
    halves = [run_forecast(runner, table[table["item_id"].isin(part)], tmp_path, f"half{k}") for k, part in enumerate((ids[:2], ids[2:]))]
    pd.testing.assert_frame_equal(pd.concat(halves).sort_values(["item_id", "date"]).reset_index(drop=True), base)
    # A series dropped from the file (here: one with no observed value) changes no other series.
    emptied = table.copy()
    emptied.loc[emptied["item_id"] == "shop-0", "y"] = np.nan
    without = run_forecast(runner, emptied, tmp_path, "emptied")
    pd.testing.assert_frame_equal(without, base[base["item_id"] != "shop-0"].reset_index(drop=True))


@pytest.mark.parametrize("decoding", ["exact", "cached"])
def test_each_backtest_window_is_the_forecast_of_the_truncated_series(decoding):
    forecaster = MoiraiForecaster.from_pretrained(CHECKPOINT, device="cpu")
    dataset = load_dataset(series_table(4), freq="D")
    horizon, levels = 6, (0.1, 0.5, 0.9)
    options = dict(num_samples=8, seed=5, context_length=64, decoding=decoding)
    result = evaluate(forecaster, dataset.series, horizon, windows=2, stride=4, freq="D", quantile_levels=levels, **options)
    for record in dataset.series:
        for window in (0, 1):
            cutoff = len(record.target) - horizon - (1 - window) * 4
            samples = forecaster.predict([record.target[:cutoff]], horizon, item_ids=[record.item_id], **options).samples
            expected = QuantileForecast.from_samples(samples, levels)
            rows = result.forecasts[(result.forecasts["item_id"] == str(record.item_id)) & (result.forecasts["window"] == window)]
            np.testing.assert_array_equal(rows["model_mean"].to_numpy(), expected.mean[0, :, 0])
            np.testing.assert_array_equal(rows["model_0.5"].to_numpy(), expected.quantiles[0, 1, :, 0])
