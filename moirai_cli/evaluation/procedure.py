"""The per-chunk step of a backtest, and the one entry point engines call for any job (`run_chunk`).

A backtest chunk is scored exactly as `moirai evaluate` scores a table: series too short for the windows
are set aside (and reported), the others go through `evaluate`; its per-window scores and forecasts
are the chunk's tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from moirai_cli.evaluation.backtest import evaluate, has_backtest_history, quantile_columns, MODEL
from moirai_cli.forecasting.job import BacktestJob, ForecastJob
from moirai_cli.forecasting.procedure import ChunkResult, forecast_chunk, model_notices, read_findings

if TYPE_CHECKING:
    from moirai_cli.data import SeriesDataset
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

PER_WINDOW, FORECASTS = "per_window", "forecasts"  # the tables of a backtest chunk


def run_chunk(
    forecaster: "MoiraiForecaster",
    dataset: "SeriesDataset",
    job: ForecastJob,
    *,
    samples: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Forecast or backtest (as the job says) one chunk of whole series."""
    if isinstance(job, BacktestJob):
        return backtest_chunk(forecaster, dataset, job, progress=progress)
    return forecast_chunk(forecaster, dataset, job, samples=samples, progress=progress)


def backtest_chunk(
    forecaster: "MoiraiForecaster",
    dataset: "SeriesDataset",
    job: BacktestJob,
    *,
    progress: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Backtest every series of `dataset` long enough for the job's windows: per-window scores and forecasts."""
    result = read_findings(dataset)
    usable = [has_backtest_history(r.target, job.horizon, job.windows, job.step) for r in dataset.series]
    result.too_short = [r.item_id for r, ok in zip(dataset.series, usable) if not ok]
    records = [r for r, ok in zip(dataset.series, usable) if ok]
    if not records:
        return result
    result.notices += model_notices(forecaster, dataset, job)
    settings = job.predict
    options = settings.predict_options()
    backtest = evaluate(
        forecaster,
        records,
        job.horizon,
        windows=job.windows,
        stride=job.step,
        freq=dataset.freq,
        season_length=job.season_length,
        quantile_levels=settings.quantile_levels,
        num_samples=options.pop("num_samples", None),
        seed=settings.seed,
        target_names=dataset.target_names,
        progress=progress,
        **options,
    )
    result.tables = {PER_WINDOW: backtest.per_window, FORECASTS: backtest.forecasts}
    result.series, result.rows = backtest.n_series, len(backtest.forecasts)
    model_quantiles = backtest.forecasts[quantile_columns(MODEL, sorted(backtest.quantile_levels))].to_numpy()
    result.crossing = int((model_quantiles[:, 1:] < model_quantiles[:, :-1]).any(axis=1).sum()) if model_quantiles.shape[1] > 1 else 0
    result.detail = backtest
    return result
