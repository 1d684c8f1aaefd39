"""Backtesting and scoring of probabilistic forecasts against a seasonal-naive baseline.

The GluonTS predictor lives in ``moirai_cli.evaluation.gluonts_predictor`` (optional extra).
"""

from moirai_cli.evaluation.backtest import BacktestResult, ForecastFn, evaluate, run_backtest
from moirai_cli.evaluation.baseline import seasonal_naive
from moirai_cli.evaluation.forecast import QuantileForecast
from moirai_cli.evaluation.leaderboard import BASELINE_LABEL, Leaderboard, compare
from moirai_cli.evaluation.metrics import METRIC_INFO, METRIC_NAMES, season_length_from_freq
from moirai_cli.evaluation.report import plot_best_worst, render_leaderboard, render_summary

__all__ = [
    "METRIC_INFO",
    "METRIC_NAMES",
    "BASELINE_LABEL",
    "BacktestResult",
    "ForecastFn",
    "Leaderboard",
    "QuantileForecast",
    "compare",
    "evaluate",
    "plot_best_worst",
    "render_leaderboard",
    "render_summary",
    "run_backtest",
    "season_length_from_freq",
    "seasonal_naive",
]
