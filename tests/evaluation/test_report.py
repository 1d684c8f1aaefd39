"""The rich summary table and the best/worst plot of a backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from moirai_cli.evaluation import plot_best_worst, render_leaderboard, render_summary, run_backtest


def small_result(timestamps: bool = False):
    """A two-window backtest of four series against a last-value forecaster."""
    rng = np.random.default_rng(0)
    series = [10 + np.sin(np.arange(t) * np.pi / 6) + rng.normal(0, 0.3, t) for t in (48, 60, 40, 10)]
    stamps = [pd.date_range("2024-01-01", periods=len(s), freq="MS") for s in series] if timestamps else None

    def last_value(contexts, horizon, item_ids):
        return np.stack([c[-1] + rng.normal(0, 0.5, size=(30, horizon, 1)) for c in contexts])

    return run_backtest(
        series, 6, last_value, windows=2, season_length=12, item_ids=["a", "b", "c", "d"], timestamps=stamps
    )


def test_render_summary_lists_every_metric_and_the_skipped_count():
    console = Console(record=True, width=160)
    console.print(render_summary(small_result()))
    text = console.export_text()
    for label in ["MAE", "RMSE", "MASE", "sMAPE", "MAPE", "WQL", "MSIS", "Coverage 80%"]:
        assert label in text
    assert "3 series, 2 window(s) of 6 steps" in text
    assert "1 series skipped" in text


@pytest.mark.parametrize("timestamps", [False, True])
def test_plot_best_worst_writes_a_png(tmp_path, timestamps):
    pytest.importorskip("matplotlib")
    path = plot_best_worst(small_result(timestamps), tmp_path / "backtest.png", per_side=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_leaderboard_has_a_row_per_model_and_stars_the_best_of_each_column():
    from moirai_cli.evaluation.leaderboard import BASELINE_LABEL, Leaderboard

    table = pd.DataFrame(
        {
            "family": ["Moirai-MoE", "Moirai 2.0", "baseline"],
            "parameters": [117_025_800, 11_387_208, None],
            "seconds": [12.34, 1.5, None],
            "mae": [1.0, 2.0, 3.0],
            "rmse": [2.5, 2.0, 3.0],
            "mase": [0.5, 0.7, 1.0],
            "smape": [0.1, 0.2, 0.3],
            "mape": [np.nan, np.nan, np.nan],
            "wql": [0.05, 0.04, 0.1],
            "msis": [4.0, 5.0, 6.0],
            "coverage": [0.95, 0.75, 0.5],
            "relative_mase": [0.5, 0.7, 1.0],
            "relative_wql": [0.5, 0.4, 1.0],
        },
        index=pd.Index(["[moe]", "two", BASELINE_LABEL], name="model"),
    )
    board = Leaderboard(table, pd.DataFrame(), pd.DataFrame(), ["short"], 4, 6, 2, 6, 12, 0)
    console = Console(record=True, width=250)
    console.print(render_leaderboard(board))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "Model" in line)
    for label in ["Family", "MAE", "RMSE", "MASE", "sMAPE", "MAPE", "WQL", "MSIS", "Coverage 80%", "Rel. MASE", "Rel. WQL", "Time"]:
        assert label in header
    cells = {label: [cell.strip() for cell in line.split("│")[1:-1]] for label in table.index for line in lines if f"│ {label} " in line}
    assert cells["[moe]"] == ["[moe]", "Moirai-MoE", "1*", "2.5", "0.5*", "0.1*", "-", "0.05", "4*", "0.95", "0.5*", "0.5", "12.3s"]
    assert cells["two"] == ["two", "Moirai 2.0", "2", "2*", "0.7", "0.2", "-", "0.04*", "5", "0.75*", "0.7", "0.4*", "1.5s"]
    assert cells[BASELINE_LABEL] == [BASELINE_LABEL, "baseline", "3", "3", "1", "0.3", "-", "0.1", "6", "0.5", "1", "1", "-"]
    text = "\n".join(lines)
    assert "Leaderboard: 4 series, 2 window(s) of 6 steps, stride 6, season length 12" in text
    assert "* best in its column (coverage: closest to 0.80)" in text and "1 series skipped" in text


def test_plot_best_worst_shows_ids_with_dollar_signs_as_written(tmp_path):
    # An id containing `$...$` was read as mathtext: the plot crashed.
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    series = [10 + rng.normal(0, 1, 40) for _ in range(3)]

    def last_value(contexts, horizon, item_ids):
        return np.stack([c[-1] + rng.normal(0, 0.5, size=(30, horizon, 1)) for c in contexts])

    result = run_backtest(series, 6, last_value, windows=1, season_length=1, item_ids=[r"$\frac{$", "US$ 5$", "c"])
    path = plot_best_worst(result, tmp_path / "backtest.png", per_side=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
