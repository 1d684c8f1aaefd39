"""The one step every surface runs on a chunk of series: forecast it, lay it out as tables, say what the user should know.

`predict_df`, the local engine, the Ray actors and the Spark workers all call `forecast_chunk` (backtests:
`moirai_cli.evaluation.procedure.backtest_chunk`) with the same `ForecastJob`; they differ only in how rows
reach it and where its tables go. What the user should be told comes back as `Notice`s and lists of
skipped series in the `ChunkResult`, which each surface renders its own way (stderr lines on the command
line, Python warnings in a notebook), so no engine prints anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Literal


import logging
import warnings

from moirai_cli.errors import InputError, option, render
from moirai_cli.forecasting.job import DEFAULT_CONTEXT_LENGTH, ForecastJob

if TYPE_CHECKING:
    import pandas as pd

    from moirai_cli.data import SeriesDataset
    from moirai_cli.forecasting.pipeline import CheckpointTraits, MoiraiForecaster

FORECAST, SAMPLES = "forecast", "samples"  # the tables of a forecast chunk


@dataclass(frozen=True)
class Notice:
    """One thing to tell the user: a `note` (hidden by --quiet) or a `warning` (always shown). Text may hold option references."""

    kind: Literal["note", "warning"]
    text: str


@dataclass
class ChunkResult:
    """What one chunk of series gave: output tables by name, and what to tell the user about it."""

    tables: dict[str, "pd.DataFrame"] = field(default_factory=dict)
    series: int = 0  # series forecast (or backtested)
    skipped: list[Hashable] = field(default_factory=list)  # series with no observed target value
    too_short: list[Hashable] = field(default_factory=list)  # series too short for a backtest's windows
    rows: int = 0  # rows of the main output table
    crossing: int = 0  # of those, rows whose quantiles decrease as the level rises
    notices: list[Notice] = field(default_factory=list)
    detail: Any = None  # for a local caller only: (dataset, forecast), or a backtest's BacktestResult


def forecast_chunk(
    forecaster: "MoiraiForecaster",
    dataset: "SeriesDataset",
    job: ForecastJob,
    *,
    samples: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Forecast every series of `dataset` as `job` says: the forecast table (and the sample paths with `samples`)."""
    from moirai_cli.data import forecast_frame, samples_frame

    result = read_findings(dataset)
    if not dataset.series:
        return result
    result.notices += model_notices(forecaster, dataset, job)
    settings = job.predict
    forecast = forecaster.predict_dataset(dataset, job.horizon, seed=settings.seed, progress=progress, **settings.predict_options())
    table = forecast_frame(dataset, forecast, settings.quantile_levels)
    result.tables[FORECAST] = table
    if samples:
        result.tables[SAMPLES] = samples_frame(dataset, forecast)
    result.series, result.rows = len(dataset.series), len(table)
    result.crossing = crossing_rows(table, settings.quantile_levels)
    result.detail = (dataset, forecast)
    return result


def read_findings(dataset: "SeriesDataset") -> ChunkResult:
    """What reading a chunk found, before any forecast: series with no observed value, and the reader's warnings."""
    return ChunkResult(skipped=list(dataset.skipped), notices=[Notice("warning", text) for text in dataset.findings])


def crossing_rows(table: "pd.DataFrame", levels: tuple[float, ...]) -> int:
    """Rows of a forecast table whose quantile columns decrease somewhere as the level rises."""
    import numpy as np

    from moirai_cli.data import quantile_column

    if len(levels) < 2 or not len(table):
        return 0
    values = table[[quantile_column(level) for level in sorted(levels)]].to_numpy(dtype=np.float64)
    return int((np.diff(values, axis=1) < 0).any(axis=1).sum())


def crossing_notice(rows: int, total: int, label: str | None = None) -> Notice:
    """The one warning for a run whose output has `rows` rows (of `total`) with crossing quantiles (`label`: which model)."""
    which = "" if label is None else f"model '{label}': "
    return Notice(
        "warning",
        f"{which}{rows} of {total} forecast rows have crossing quantiles (a lower level above a higher one), as the model "
        f"predicted them; pass {option('sort_quantiles', True)} to sort each row's quantiles",
    )


def skipped_message(source: str, ids: list[Hashable], reason: str, shown: int = 10) -> str:
    """One line for many skipped series: how many, why, and the first few ids."""
    names = ", ".join(f"'{item}'" for item in ids[:shown]) + (", ..." if len(ids) > shown else "")
    return f"{source}: skipped {len(ids)} series {reason}: {names}"


NO_OBSERVED_REASON = "with no observed target value"
TOO_SHORT_REASON = "too short for the windows"


def report_to_python(result: ChunkResult, source: str) -> None:
    """Tell a Python caller what a run found: warnings as Python warnings (skipped series in one line each), notes in the log."""
    seen: set[str] = set()
    for notice in result.notices:
        text = render(notice.text)
        if text in seen:
            continue
        seen.add(text)
        if notice.kind == "warning":
            warnings.warn(text, stacklevel=3)
        else:
            logging.getLogger("moirai_cli").info(text)
    for ids, reason in ((result.skipped, NO_OBSERVED_REASON), (result.too_short, TOO_SHORT_REASON)):
        if ids:
            warnings.warn(skipped_message(source, sorted(ids, key=str), reason), stacklevel=3)
    if result.crossing:
        warnings.warn(render(crossing_notice(result.crossing, result.rows).text), stacklevel=3)


def check_forecaster(
    job: ForecastJob, forecaster: "MoiraiForecaster | CheckpointTraits", *, samples: bool = False, label: str | None = None
) -> None:
    """Refuse, before any output, what the model's family cannot do (a decoding, sample paths, a patch size).

    `label` names the model among several (a leaderboard); checkpoints' traits can be checked before loading them.
    """
    title, offered, settings = forecaster.family_title, forecaster.decodings, job.predict
    if settings.decoding not in offered:
        which = f"{title} checkpoints offer" if label is None else f"'{label}' is a {title} checkpoint and offers"
        raise InputError(f"{option('decoding')} {settings.decoding}: {which} only {' or '.join(offered)}")
    if samples and forecaster.output_kind == "quantiles":
        raise InputError(f"{option('samples_output')}: {title} predicts quantiles, not sample paths; leave {option('samples_output')} out")
    size = settings.patch_size
    sizes = getattr(forecaster, "patch_sizes", None)
    if label is not None and size not in (None, "auto") and sizes is not None and size not in sizes:
        raise InputError(
            f"{option('patch_size')} {size} is not one of the sizes of '{label}' ({title}): {list(sizes)}; "
            f"leave {option('patch_size')} out to use each model's default"
        )


def model_notices(forecaster: "MoiraiForecaster", dataset: "SeriesDataset", job: ForecastJob, label: str | None = None) -> list[Notice]:
    """What the user should know about running this model on these series: options it ignores, a context too long."""
    notices = []
    if forecaster.output_kind == "quantiles" and job.predict.num_samples is not None:
        which = forecaster.family_title if label is None else f"'{label}' ({forecaster.family_title})"
        notices.append(Notice("note", f"note: {which} predicts quantiles directly; {option('num_samples')} does not apply"))
    longest = context_beyond_training(forecaster, dataset, job)
    if longest is not None:
        notices.append(longest)
    return notices


def context_beyond_training(forecaster: "MoiraiForecaster", dataset: "SeriesDataset", job: ForecastJob) -> Notice | None:
    """A warning when the context (as long as the data allows) makes sequences longer than the checkpoint was trained on."""
    config = getattr(getattr(forecaster, "model", None), "config", None)
    if config is None or not dataset.series:
        return None
    record = dataset.series[0]
    tokens_per_step = sum(
        0 if values is None else values.shape[1] for values in (record.target, record.past_covariates, record.known_covariates)
    )
    size = job.predict.patch_size or forecaster.default_patch_size
    smallest = min(config.patch_sizes) if size == "auto" else int(size)
    context = job.predict.context_length
    used = min(context, max(len(r.target) for r in dataset.series))
    longest = config.longest_context(job.horizon, smallest, tokens_per_step)
    if used <= longest:
        return None
    given = f"{option('context_length')} {context}" if context != DEFAULT_CONTEXT_LENGTH else f"the default context of {context} steps"
    return Notice(
        "warning",
        f"{given} gives sequences longer than this checkpoint's {config.max_seq_len} tokens (at most {longest} steps "
        f"of context with horizon {job.horizon}, patch size {smallest} and {tokens_per_step} token(s) per step); "
        f"forecasts may degrade: use a shorter {option('context_length')}",
    )
