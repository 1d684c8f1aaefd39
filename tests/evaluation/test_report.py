"""The rich summary table and the best/worst plot of a backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from moirai_cli.evaluation import plot_best_worst, render_summary, run_backtest


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
