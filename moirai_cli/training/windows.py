"""Training and validation windows cut from series, packed exactly as a forecast packs them.

A window is a series cut after row `end`: its last `horizon` rows are the future to predict, the
rows before are the context (the last `context_length` of them reach the network). Validation
windows are the last K horizons of each series, as `moirai evaluate --windows K` cuts them (stride:
the horizon). Training windows end anywhere before the first of those, drawn uniformly over every
(series, end row) pair, so each time step of the history is as likely to be predicted as any other.
The draws of step s depend only on the seed and s, so a resumed run draws what an uninterrupted
one would.

Packing reuses the forecast's: the same conditioning of tiny or huge values (numerics.py, fitted
on the window's context), the same imputation of gaps and the same tokens (`pack_series` with the
future held out), so the network is trained on exactly what it sees when it forecasts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from moirai_cli.data import SeriesRecord
from moirai_cli.errors import InputError
from moirai_cli.evaluation.backtest import has_backtest_history
from moirai_cli.forecasting.numerics import fit_scaling
from moirai_cli.forecasting.packing import SeriesTokens, TokenBatch, collate, pack_series

MAX_DRAWS_PER_WINDOW = 100  # draws before giving up on finding windows with an observed future


@dataclass(frozen=True)
class Window:
    """Rows [0, end) of series `series` (an index into the records); the last `horizon` of them are predicted."""

    series: int
    end: int


def observed_rows(record: SeriesRecord) -> np.ndarray:
    """(T,) whether any target variate of the series is observed at each row."""
    return ~np.isnan(np.asarray(record.target, dtype=np.float64)).all(axis=1)


def validation_windows(records: Sequence[SeriesRecord], horizon: int, count: int) -> list[Window]:
    """The last `count` horizons of every series long enough for them (as a backtest cuts them), oldest first.

    Windows with no observed value to predict are left out: they have nothing to score.
    """
    windows = []
    for index, record in enumerate(records):
        if count == 0 or not has_backtest_history(record.target, horizon, count, horizon):
            continue
        observed = observed_rows(record)
        length = len(observed)
        for k in range(count):
            end = length - (count - 1 - k) * horizon
            if observed[end - horizon : end].any():
                windows.append(Window(index, end))
    return windows


class TrainingWindows:
    """Where training windows can end in each series, and seeded draws of them.

    A window may end at row e of a series of T rows when its future [e - horizon, e) lies before the
    validation windows (e <= T - validation_windows * horizon) and its context holds an observed value.
    """

    def __init__(self, records: Sequence[SeriesRecord], horizon: int, validation_windows: int):
        self.horizon = horizon
        self.observed_before: list[np.ndarray] = []  # per series, (T + 1,) observed rows before each row
        first_end, last_end = [], []
        for record in records:
            observed = observed_rows(record)
            self.observed_before.append(np.concatenate([[0], np.cumsum(observed, dtype=np.int64)]))
            first = int(np.argmax(observed)) if observed.any() else len(observed)
            first_end.append(first + 1 + horizon)
            last_end.append(len(observed) - validation_windows * horizon)
        self.first_end = np.asarray(first_end, dtype=np.int64)
        counts = np.maximum(0, np.asarray(last_end, dtype=np.int64) - self.first_end + 1)
        self.cumulative = np.cumsum(counts)  # candidate (series, end) pairs up to each series

    @property
    def candidates(self) -> int:
        """How many (series, end row) pairs a window can be cut at."""
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    @property
    def series_with_windows(self) -> int:
        """How many series have at least one training window."""
        return int(np.count_nonzero(np.diff(self.cumulative, prepend=0)))

    def draw(self, seed: int, step: int, count: int) -> list[Window]:
        """`count` windows for training step `step`, uniform over the candidates; each with an observed future value."""
        rng = np.random.default_rng([seed, step])
        windows: list[Window] = []
        for _ in range(MAX_DRAWS_PER_WINDOW):
            picks = rng.integers(0, self.candidates, size=count)
            series = np.searchsorted(self.cumulative, picks, side="right")
            before = np.where(series > 0, self.cumulative[series - 1], 0)
            ends = self.first_end[series] + picks - before
            for index, end in zip(series.tolist(), ends.tolist()):
                seen = self.observed_before[index]
                if seen[end] - seen[end - self.horizon] > 0:
                    windows.append(Window(index, end))
            if len(windows) >= count:
                return windows[:count]
        raise InputError(
            f"the training history holds almost no window with an observed value in its {self.horizon} steps to predict; "
            "check for missing values, or lower the horizon"
        )


@dataclass(frozen=True)
class WindowPacker:
    """Packs windows of the records as the forecaster of a family packs a series it forecasts."""

    records: Sequence[SeriesRecord]
    horizon: int
    context_length: int
    patch_size: int
    max_patch_size: int
    causal_mean_target: bool  # the family's gap filling (forecasting.pipeline.PROCEDURES)
    device: torch.device

    def tokens(self, window: Window) -> SeriesTokens:
        """One window's tokens: its future held out, values conditioned on its context (numerics.py)."""
        record = self.records[window.series]
        end, context_end = window.end, window.end - self.horizon

        def conditioned(values: np.ndarray | None) -> np.ndarray | None:
            if values is None:
                return None
            values = np.asarray(values, dtype=np.float64)[:end]
            return fit_scaling(values[:context_end], self.context_length).apply(values)

        return pack_series(
            conditioned(record.target),
            self.horizon,
            self.context_length,
            self.patch_size,
            self.max_patch_size,
            known_covariates=conditioned(record.known_covariates),
            past_covariates=conditioned(record.past_covariates),
            holdout=True,
            causal_mean_target=self.causal_mean_target,
        )

    def batch(self, windows: Sequence[Window]) -> TokenBatch:
        """The windows collated into one batch on the device (rows of fewer tokens padded)."""
        return collate([self.tokens(window) for window in windows], self.patch_size, self.device)

    def batches(self, windows: Sequence[Window], batch_size: int) -> Iterator[TokenBatch]:
        """The windows in batches of up to `batch_size` windows of the same number of tokens (no padding)."""
        pending: dict[int, list[SeriesTokens]] = {}
        for window in windows:
            packed = self.tokens(window)
            group = pending.setdefault(len(packed.tokens["sample_id"]), [])
            group.append(packed)
            if len(group) == batch_size:
                yield collate(group, self.patch_size, self.device)
                group.clear()
        for group in pending.values():
            if group:
                yield collate(group, self.patch_size, self.device)
