"""Several models backtested on the same windows and ranked in one table with the seasonal-naive baseline.

`compare` runs `evaluate` (moirai_cli.evaluation.backtest) for each model in turn. The windows
depend only on the series and the window options, so every model is scored on the same windows,
and so is the baseline. A model given as a loader (a callable that returns a forecaster) is
loaded just before its backtest and released after it, before the next one is loaded, so memory
holds one model at a time. Every model gets the same seed, and each series draws from a stream
keyed by its id, so a model's scores are exactly those `evaluate` gives it alone.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from moirai_cli.forecasting.job import DEFAULT_QUANTILE_LEVELS
from moirai_cli.errors import InputError
from moirai_cli.evaluation.backtest import BASELINE, MODEL, MODEL_COLUMN, BacktestResult, SeriesLike, evaluate
from moirai_cli.evaluation.metrics import INTERVAL_ALPHA, METRIC_INFO, METRIC_NAMES

BASELINE_LABEL = "seasonal naive"
RELATIVE_METRICS = ("mase", "wql")  # relative_<metric>: geometric mean over series of model / baseline
RELATIVE_COLUMNS = tuple(f"relative_{name}" for name in RELATIVE_METRICS)
SCORE_COLUMNS = (*METRIC_NAMES, *RELATIVE_COLUMNS)  # the columns a best value is marked in
NOMINAL_COVERAGE = 1 - INTERVAL_ALPHA  # coverage is best when closest to this

Forecaster = Any  # anything with MoiraiForecaster's predict
ModelSource = Any  # a Forecaster, or a callable with no arguments that loads one


@dataclass
class Leaderboard:
    """Every model's and the baseline's scores on one backtest."""

    # index 'model': the labels in the order given, then BASELINE_LABEL. Columns: family,
    # parameters, seconds (load and backtest), then every metric (aggregated as `evaluate` does),
    # then relative_mase and relative_wql (1 for the baseline).
    table: pd.DataFrame
    per_window: pd.DataFrame  # 'model', the backtest's key columns (series, window, ...), one column per metric
    forecasts: pd.DataFrame  # 'model', series, window, step (...), actual, mean and quantile columns
    skipped: list[str]  # ids of series too short for the windows
    n_series: int
    horizon: int
    windows: int
    stride: int
    season_length: int
    n_zero_actuals: int  # zero actuals MAPE left out (the same for every forecaster)

    @property
    def labels(self) -> list[str]:
        """The models' labels, in the order given (the baseline's not included)."""
        return [label for label in self.table.index if label != BASELINE_LABEL]

    @property
    def best(self) -> dict[str, list[str]]:
        """For each score column, the label(s) of the best row: the lowest error, or coverage closest to 0.80."""
        return best_rows(self.table)


def best_rows(table: pd.DataFrame) -> dict[str, list[str]]:
    """The rows (labels) holding the best value of each score column; a column with no value has none."""
    best: dict[str, list[str]] = {}
    for column in SCORE_COLUMNS:
        values = table[column].astype(float)
        if column in METRIC_INFO and not METRIC_INFO[column].lower_is_better:  # coverage: distance from nominal
            values = (values - NOMINAL_COVERAGE).abs()
        best[column] = [] if values.isna().all() else [str(label) for label in values.index[values == values.min()]]
    return best


def compare(
    models: Mapping[str, ModelSource],
    records: Sequence[SeriesLike],
    horizon: int,
    *,
    windows: int = 1,
    stride: int | None = None,
    freq: str | None = None,
    season_length: int | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    num_samples: int | None = None,
    seed: int | None = None,
    target_names: Sequence[str] | None = None,
    **predict_options: Any,
) -> Leaderboard:
    """Backtest each model, in order, on the same windows of `records`, and rank them with seasonal naive.

    models: label -> a forecaster, or a loader (a callable with no arguments returning one),
    which is called only once the previous model has been released. The other options are those
    of `evaluate`, the same for every model; predict_options (context_length, patch_size,
    decoding, batch_size, progress, ...) go to each forecaster's predict.
    """
    if not models:
        raise InputError("no model to compare: give at least one")
    if BASELINE_LABEL in models:
        raise InputError(f"'{BASELINE_LABEL}' names the baseline; give the model another label")
    options = dict(
        windows=windows,
        stride=stride,
        freq=freq,
        season_length=season_length,
        quantile_levels=quantile_levels,
        num_samples=num_samples,
        seed=seed,
        target_names=target_names,
        **predict_options,
    )
    rows: dict[str, dict[str, Any]] = {}
    per_window: list[pd.DataFrame] = []
    forecasts: list[pd.DataFrame] = []
    first: BacktestResult | None = None
    for label, source in models.items():
        result, rows[label] = _backtest_one(source, records, horizon, options)
        per_window.append(_forecaster_rows(result.per_window, MODEL, label))
        forecasts.append(_forecaster_rows(result.forecasts, MODEL, label))
        if first is None:
            first = result
        del result
        _release_memory()  # the forecaster a loader made is gone before the next one is loaded
    assert first is not None
    rows[BASELINE_LABEL] = {
        "family": "baseline",
        "parameters": None,
        "seconds": None,
        **first.summary[BASELINE].to_dict(),
        **{column: 1.0 for column in RELATIVE_COLUMNS},
    }
    per_window.append(_forecaster_rows(first.per_window, BASELINE, BASELINE_LABEL))
    forecasts.append(_forecaster_rows(first.forecasts, BASELINE, BASELINE_LABEL))
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis(MODEL_COLUMN)
    return Leaderboard(
        table=table[["family", "parameters", "seconds", *SCORE_COLUMNS]],
        per_window=pd.concat(per_window, ignore_index=True),
        forecasts=pd.concat(forecasts, ignore_index=True),
        skipped=first.skipped,
        n_series=first.n_series,
        horizon=first.horizon,
        windows=first.windows,
        stride=first.stride,
        season_length=first.season_length,
        n_zero_actuals=first.n_zero_actuals,
    )


def _backtest_one(
    source: ModelSource, records: Sequence[SeriesLike], horizon: int, options: dict[str, Any]
) -> tuple[BacktestResult, dict[str, Any]]:
    """Load (if `source` is a loader) and backtest one model: its result and its leaderboard row.

    Neither holds the forecaster, so a loaded one is freed when this returns.
    """
    started = time.perf_counter()
    forecaster = source() if _is_loader(source) else source
    result = evaluate(forecaster, records, horizon, **options)
    summary = result.summary
    row = {
        "family": getattr(forecaster, "family_title", None),
        "parameters": getattr(forecaster, "parameter_count", None),
        "seconds": time.perf_counter() - started,
        **summary[MODEL].to_dict(),
        **{f"relative_{name}": summary.loc[name, "relative"] for name in RELATIVE_METRICS},
    }
    return result, row


def _is_loader(source: ModelSource) -> bool:
    """A loader is a callable that is not itself a forecaster (which has predict)."""
    return callable(source) and not hasattr(source, "predict")


def _forecaster_rows(frame: pd.DataFrame, prefix: str, label: str) -> pd.DataFrame:
    """One forecaster's rows of a backtest frame: `model`, the key columns, and its own columns unprefixed."""
    own_prefix = f"{prefix}_"
    keys = [c for c in frame.columns if not str(c).startswith((f"{MODEL}_", f"{BASELINE}_"))]
    own = [c for c in frame.columns if str(c).startswith(own_prefix)]
    rows = frame[keys + own].rename(columns={c: c[len(own_prefix) :] for c in own})
    rows.insert(0, MODEL_COLUMN, label)
    return rows


def _release_memory() -> None:
    """Collect what the last model left (reference cycles included) and hand cached GPU memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
