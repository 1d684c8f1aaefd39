"""Show a backtest: a rich summary table, a leaderboard of several models, and a plot of the best and worst series."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from moirai_cli.data.io import atomic_path
from moirai_cli.errors import MoiraiError
from moirai_cli.evaluation.backtest import BASELINE, MODEL, BacktestResult, quantile_columns
from moirai_cli.evaluation.leaderboard import BASELINE_LABEL, NOMINAL_COVERAGE, SCORE_COLUMNS, Leaderboard
from moirai_cli.evaluation.metrics import INTERVAL_LEVELS, MEDIAN_LEVEL, METRIC_INFO, METRIC_NAMES
from moirai_cli.plotting import PLOT_INSTALL_HINT

HISTORY_HORIZONS = 4  # the plot shows this many horizons of history before the last window


def _format(value: float) -> str:
    """A metric value with 4 significant digits, or a dash when undefined."""
    return "-" if value is None or math.isnan(value) else f"{value:.4g}"


def _windows_title(kind: str, run: BacktestResult | Leaderboard) -> str:
    """The title line both backtest tables share: what was scored, over which windows."""
    return (
        f"{kind}: {run.n_series} series, {run.windows} window(s) of {run.horizon} steps, "
        f"stride {run.stride}, season length {run.season_length}"
    )


def _left_out_note(run: BacktestResult | Leaderboard) -> str:
    """The caption's end in both backtest tables: what the scores leave out."""
    return f"{len(run.skipped)} series skipped as too short; {run.n_zero_actuals} zero actuals left out of MAPE"


def render_summary(result: BacktestResult) -> Table:
    """A rich table of the aggregated metrics for the model, the baseline and their ratio."""
    table = Table(
        title=_windows_title("Backtest", result),
        caption=(
            f"mean = over series and windows; relative = geometric mean over series of model / seasonal "
            f"naive (< 1: model better); {_left_out_note(result)}"
        ),
    )
    table.add_column("Metric")
    table.add_column("Model", justify="right")
    table.add_column("Seasonal naive", justify="right")
    table.add_column("Relative", justify="right")
    table.add_column("Aggregation", style="dim")
    for name in METRIC_NAMES:
        model, baseline, relative = result.summary.loc[name, [MODEL, BASELINE, "relative"]]
        style = "" if math.isnan(relative) else ("green" if relative < 1 else "red" if relative > 1 else "")
        relative_text = f"[{style}]{_format(relative)}[/]" if style else _format(relative)
        info = METRIC_INFO[name]
        table.add_row(info.label, _format(model), _format(baseline), relative_text, info.aggregation)
    return table


def render_leaderboard(board: Leaderboard) -> Table:
    """A rich table with a row per model and the baseline, a column per metric, the best of each column marked '*'."""
    table = Table(
        title=_windows_title("Leaderboard", board),
        caption=(
            f"* best in its column (coverage: closest to {NOMINAL_COVERAGE:.2f}); metrics aggregated as for one model "
            f"(moirai evaluate --help); Rel. = geometric mean over series of model / seasonal naive (< 1: better); "
            f"{_left_out_note(board)}"
        ),
    )
    table.add_column("Model")
    table.add_column("Family", style="dim")
    for column in SCORE_COLUMNS:
        label = METRIC_INFO[column].label if column in METRIC_INFO else f"Rel. {METRIC_INFO[column.removeprefix('relative_')].label}"
        table.add_column(label, justify="right")
    table.add_column("Time", justify="right", style="dim")
    best = board.best
    for label, row in board.table.iterrows():
        cells = []
        for column in SCORE_COLUMNS:
            text = _format(row[column])
            cells.append(f"[bold green]{text}*[/]" if label in best[column] else text)
        seconds = row["seconds"]
        time_text = "-" if pd.isna(seconds) else f"{seconds:.1f}s"
        style = "italic" if label == BASELINE_LABEL else None
        table.add_row(escape(str(label)), escape(str(row["family"] or "-")), *cells, time_text, style=style)
    return table


def _ranked_series(result: BacktestResult) -> list[tuple]:
    """Series keys (item_id[, target]) from best to worst by mean model MASE (MAE if no MASE)."""
    keys = ["item_id", "target"] if "target" in result.per_window else ["item_id"]
    scores = result.per_window.groupby(keys, sort=False)[[f"{MODEL}_mase", f"{MODEL}_mae"]].mean()
    metric = f"{MODEL}_mase" if scores[f"{MODEL}_mase"].notna().any() else f"{MODEL}_mae"
    ranked = scores[metric].dropna().sort_values(kind="stable")
    return [key if isinstance(key, tuple) else (key,) for key in ranked.index]


def plot_best_worst(result: BacktestResult, path: str | Path, per_side: int = 2) -> Path:
    """Save a PNG of the last window of the best and worst series by MASE, with both forecasts."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MoiraiError(PLOT_INSTALL_HINT) from error
    ranked = _ranked_series(result)
    if not ranked:
        raise MoiraiError("no series has a defined error to rank for the plot")
    chosen = ranked[:per_side] + [key for key in ranked[-per_side:] if key not in ranked[:per_side]]
    figure = Figure(figsize=(10, 2.6 * len(chosen)), layout="constrained")
    axes = figure.subplots(len(chosen), 1, squeeze=False)[:, 0]
    last = result.forecasts[result.forecasts["window"] == result.windows - 1]
    low, mid, high = quantile_columns(MODEL, (INTERVAL_LEVELS[0], MEDIAN_LEVEL, INTERVAL_LEVELS[1]))
    (baseline_median,) = quantile_columns(BASELINE, (MEDIAN_LEVEL,))
    for rank, (axis, key) in enumerate(zip(axes, chosen)):
        item_id = key[0]
        variate = result.target_names.index(key[1]) if len(key) > 1 else 0
        rows = last[last["item_id"] == item_id]
        if len(key) > 1:
            rows = rows[rows["target"] == key[1]]
        cutoff = len(result.history[item_id]) - result.horizon  # the last window ends the series
        start = max(0, cutoff - HISTORY_HORIZONS * result.horizon)
        history = result.history[item_id][start:cutoff, variate]  # (<= 4H,)
        if result.timestamps is not None:
            times = result.timestamps[item_id]
            x_history, x_future = times[start:cutoff], times[cutoff : cutoff + result.horizon]
        else:
            x_history, x_future = np.arange(start, cutoff), np.arange(cutoff, cutoff + result.horizon)
        axis.plot(x_history, history, color="black", linewidth=1, label="history")
        axis.plot(x_future, rows["actual"], color="black", linestyle=":", label="actual")
        axis.fill_between(x_future, rows[low], rows[high], color="tab:blue", alpha=0.25, label="model 80%")
        axis.plot(x_future, rows[mid], color="tab:blue", label="model median")
        axis.plot(
            x_future, rows[baseline_median], color="tab:orange", linestyle="--", label="seasonal naive"
        )
        side = "best" if rank < min(per_side, len(chosen)) else "worst"
        axis.set_title(f"{side}: {' / '.join(str(part) for part in key)}", fontsize=10, parse_math=False)  # ids as written
    axes[0].legend(loc="upper left", fontsize=8, ncols=5)
    path = Path(path)
    with atomic_path(path) as tmp:  # a failed save leaves no partial file
        figure.savefig(tmp, format="png", dpi=100)
    return path
