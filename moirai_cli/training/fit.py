"""Fine-tuning a forecaster on a table, as the command line reads it: `MoiraiForecaster.fit` and `moirai finetune`."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from moirai_cli.data import SeriesDataset, load_dataset
from moirai_cli.forecasting.job import ModelSpec, ReadOptions
from moirai_cli.forecasting.pipeline import MoiraiForecaster, fetch_checkpoint, load_forecaster
from moirai_cli.forecasting.procedure import read_findings, report_to_python
from moirai_cli.training.output import BaseModel
from moirai_cli.training.settings import FinetuneSettings
from moirai_cli.training.trainer import FinetuneResult, TrainingProgress, finetune

READ_OPTIONS = frozenset(field.name for field in dataclasses.fields(ReadOptions)) - {"future"}
SETTINGS = frozenset(field.name for field in dataclasses.fields(FinetuneSettings))


def split_options(options: dict[str, Any]) -> tuple[ReadOptions, FinetuneSettings]:
    """How to read the table and how to train, from options named as the Python API names them."""
    unknown = sorted(set(options) - READ_OPTIONS - SETTINGS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*READ_OPTIONS, *SETTINGS], n=1)
        raise TypeError(f"unknown option {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    read = ReadOptions(**{name: value for name, value in options.items() if name in READ_OPTIONS})
    return read, FinetuneSettings(**{name: value for name, value in options.items() if name in SETTINGS})


def fit(
    forecaster: MoiraiForecaster,
    df: pd.DataFrame,
    horizon: int,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[TrainingProgress], None] | None = None,
    **options: Any,
) -> MoiraiForecaster:
    """A new forecaster fine-tuned on `df` (read as `predict_df` reads it) for forecasts of `horizon` steps.

    `options` are `predict_df`'s reading options and `FinetuneSettings`' (steps, learning_rate, mode, ...);
    with `output_dir`, the tuned checkpoint is also written there, with its model card.
    """
    read, settings = split_options(options)
    dataset = load_dataset(df, **read.table)
    report_to_python(read_findings(dataset), dataset.source)
    result = finetune(
        forecaster, dataset.series, horizon, settings, output_dir, freq=dataset.freq, resume=resume, progress=progress
    )
    return result.forecaster()


def finetune_checkpoint(
    spec: ModelSpec,
    dataset: SeriesDataset,
    horizon: int,
    settings: FinetuneSettings,
    output_dir: str | Path,
    *,
    resume: bool = False,
    progress: Callable[[TrainingProgress], None] | None = None,
    download_progress: bool = False,
) -> FinetuneResult:
    """Fine-tune the checkpoint `spec` names (fetched first, loaded in float32) and keep the result in `output_dir`.

    The model card names the base as the Hub names it: repo id, the commit fetched, its licence.
    """
    folder = fetch_checkpoint(spec, progress=download_progress)
    forecaster = load_forecaster(dataclasses.replace(spec, model=str(folder), revision=None, dtype="float32"))
    return finetune(
        forecaster, dataset.series, horizon, settings, output_dir, base=BaseModel.from_checkpoint(spec.model, folder),
        freq=dataset.freq, resume=resume, progress=progress,
    )


def run_to_resume(folder: str | Path, horizon: int | None, given: dict[str, Any]) -> tuple[FinetuneSettings, int]:
    """The settings and horizon to continue the stopped run in `folder`: its own, `steps` the only one that may change.

    `given` holds the settings asked for now (None: not given); any other than steps is refused.
    """
    from moirai_cli.errors import InputError, option
    from moirai_cli.training.trainer import run_settings

    settings, saved_horizon = run_settings(folder)
    if horizon is not None and horizon != saved_horizon:
        raise InputError(f"{folder}: the run was trained for {option('horizon')} {saved_horizon}, not {horizon}; leave it out to resume")
    changed = sorted(name for name, value in given.items() if value is not None and name != "steps")
    if changed:
        raise InputError(f"{folder}: a run resumes with its own settings; only {option('steps')} may change, not {option(changed[0])}")
    if given.get("steps") is not None:
        settings = dataclasses.replace(settings, steps=given["steps"])
    return settings, saved_horizon
