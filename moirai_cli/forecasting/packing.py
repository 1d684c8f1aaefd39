"""From series (numpy arrays with NaN for missing values) to packed tokens, as the reference does.

Each series is laid out on a context window of C values (left-padded) and a horizon of H
values, both cut into patches of P values aligned at the forecast origin. Tokens that the
reference marks as padding (sample_id 0) cannot influence any real token, so we drop them
and collate series of different lengths into one rectangular batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from moirai_cli.model.network import PackedTokens


def causal_mean_impute(values: np.ndarray) -> np.ndarray:
    """Replace each NaN by the mean of all earlier values of the forward-filled series.

    Leading NaNs take the first observed value; a series of one value or with no observed
    value becomes zeros where missing. Means are taken in float64, the result is float32.
    """
    values = np.asarray(values, dtype=np.float32).copy()
    missing = np.isnan(values)
    if not missing.any():
        return values
    if len(values) == 1 or missing.all():
        values[missing] = 0.0
        return values
    positions = np.arange(len(values))
    last_observed = np.maximum.accumulate(np.where(missing, 0, positions))
    filled = values[last_observed]
    first = np.flatnonzero(~missing)[0]
    filled[:first] = values[first]  # leading gap: the first observed value
    running = np.concatenate(([0.0], np.cumsum(filled[:-1], dtype=np.float64)))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = running / positions
    values[missing] = means[missing]
    values[0] = filled[0]
    return values


def impute(values: np.ndarray, univariate_target: bool) -> tuple[np.ndarray, np.ndarray]:
    """(filled float32 values, observed flags) for a (T, K) array.

    With `univariate_target` the causal mean fills the gaps (the reference's rule for a
    univariate target of Moirai-MoE and 2.0); otherwise zeros do (every other array, and
    every target of Moirai 1.x).
    """
    observed = ~np.isnan(values)
    if univariate_target:
        filled = causal_mean_impute(values[:, 0])[:, None]
    else:
        filled = np.where(observed, values, 0.0).astype(np.float32)
    return filled, observed


@dataclass
class SeriesTokens:
    """The tokens of one series (sample_id 1 only) and where its forecasts are read."""

    tokens: dict[str, np.ndarray]  # field -> (L,) or (L, M)
    last_context: np.ndarray  # (V,) token index of each target variate's last context patch
    future: np.ndarray  # (V, F) token indices of each target variate's future patches
    future_covariates: np.ndarray  # (Ck, F) token indices of known covariates' future patches


def window(values: np.ndarray, length: int, before: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Last `length` rows ending `before` rows from the end, left-padded; and the pad flags."""
    end = max(len(values) - before, 0)
    piece = values[max(0, end - length) : end]
    pad = length - len(piece)
    padded = np.concatenate([np.zeros((pad,) + values.shape[1:], dtype=values.dtype), piece])
    return padded, np.arange(length) < pad


def patches(values: np.ndarray, patch_size: int, left: bool) -> np.ndarray:
    """(T, K) -> (K, ceil(T / P), P): pad to whole patches on the left or right with zeros."""
    pad = -len(values) % patch_size
    widths = ((pad, 0) if left else (0, pad),) + ((0, 0),) * (values.ndim - 1)
    padded = np.pad(values, widths)
    return padded.reshape(-1, patch_size, *values.shape[1:]).transpose(2, 0, 1)


def context_needed(context_length: int, rows: int, patch_size: int) -> int:
    """The shortest context that packs a series of `rows` rows into the same tokens as `context_length` does.

    Beyond the series, the context is padding: padding patches are dropped, except one covariate token that
    the alignment pad (context_length % patch_size) makes real (a reference quirk). A context between
    rows + P and rows + 2P with the same alignment keeps that token and drops the rest alike, so memory and
    work never grow with the context beyond the series' length.
    """
    spare = context_length - rows - patch_size
    if spare <= 0:
        return context_length
    return context_length - patch_size * (spare // patch_size)


def pack_series(
    target: np.ndarray,  # (T, V) with NaN
    horizon: int,
    context_length: int,
    patch_size: int,
    max_patch_size: int,
    known_covariates: np.ndarray | None = None,  # (T + H, Ck) with NaN; (T, Ck) with `holdout`
    past_covariates: np.ndarray | None = None,  # (T, Cp) with NaN
    holdout: bool = False,
    causal_mean_target: bool = True,
) -> SeriesTokens:
    """Tokens of one series for a forecast of `horizon` values after its last row.

    With `holdout`, the last `horizon` rows of the series (and of its covariates) become
    the future tokens, observed, so that the network scores them (used to pick a patch size).
    As in the reference, the hold-out window is left-padded when the series is shorter than
    the horizon. `causal_mean_target` picks how a univariate target's gaps are filled (see
    `impute`).
    """
    context_length = context_needed(context_length, len(target), patch_size)
    num_variates = target.shape[1]
    filled, observed = impute(target, univariate_target=num_variates == 1 and causal_mean_target)
    before = horizon if holdout else 0  # rows after the context window
    if holdout:
        future_values, future_pad = window(filled, horizon)
        future_flags = window(observed, horizon)[0]
    else:
        future_values = np.zeros((horizon, num_variates), np.float32)
        future_flags = np.ones((horizon, num_variates), bool)
        future_pad = np.zeros(horizon, bool)

    def history_patches(values: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The context window of (T, K) values and observed flags, as (K, C/P, P) patches each."""
        return (
            patches(window(values, context_length, before)[0], patch_size, left=True),
            patches(window(flags, context_length, before)[0], patch_size, left=True),
        )

    is_pad = window(filled, context_length, before)[1]
    past_value_patches, past_flag_patches = history_patches(filled, observed)

    context_patches = math.ceil(context_length / patch_size)
    future_patches = math.ceil(horizon / patch_size)
    # sample_id per past patch: 1 when the patch holds any real value (alignment pad counts as pad).
    pad_for_target = np.concatenate([np.ones(-context_length % patch_size, bool), is_pad])
    target_sample = (~pad_for_target).reshape(-1, patch_size).any(-1)
    # The reference treats the alignment pad of covariates as real: a quirk we keep.
    pad_for_covariates = np.concatenate([np.zeros(-context_length % patch_size, bool), is_pad])
    covariate_sample = (~pad_for_covariates).reshape(-1, patch_size).any(-1)
    # time_id: 0 up to the first patch with an observed value, then counting up.
    any_observed = past_flag_patches.any(axis=(0, 2))
    past_time = np.maximum(np.cumsum(np.maximum.accumulate(any_observed)) - 1, 0)
    future_time = past_time.max() + 1 + np.arange(future_patches)

    fields: dict[str, list[np.ndarray]] = {k: [] for k in ("target", "observed", "sample_id", "time_id", "variate_id", "prediction_mask")}

    def add(values, flags, sample, time, variate, predict):
        count = values.shape[0]
        fields["target"].append(values)
        fields["observed"].append(flags)
        fields["sample_id"].append(np.broadcast_to(sample, (count,)).astype(np.int64))
        fields["time_id"].append(np.broadcast_to(time, (count,)).astype(np.int64))
        fields["variate_id"].append(np.full(count, variate, np.int64))
        fields["prediction_mask"].append(np.full(count, predict, bool))

    future_value_patches = patches(future_values, patch_size, left=False)
    future_flag_patches = patches(future_flags, patch_size, left=False)
    # A future patch of nothing but hold-out padding (alignment pad included) has sample_id 0.
    pad_for_future = np.concatenate([future_pad, np.ones(-horizon % patch_size, bool)])
    future_sample = (~pad_for_future).reshape(-1, patch_size).any(-1)
    for v in range(num_variates):
        add(past_value_patches[v], past_flag_patches[v], target_sample, past_time, v, False)
    for v in range(num_variates):
        add(future_value_patches[v], future_flag_patches[v], future_sample, future_time, v, True)
    next_variate = num_variates
    known_future_start = []

    if known_covariates is not None:
        # Their last `horizon` rows are the future; the context window ends where those start.
        cov_filled, cov_observed = impute(known_covariates, univariate_target=False)
        past_v, past_f = (patches(window(a, context_length, horizon)[0], patch_size, True) for a in (cov_filled, cov_observed))
        fut_v, fut_f = (patches(window(a, horizon)[0], patch_size, False) for a in (cov_filled, cov_observed))
        for k in range(known_covariates.shape[1]):
            add(past_v[k], past_f[k], covariate_sample, past_time, next_variate + k, False)
        for k in range(known_covariates.shape[1]):
            known_future_start.append(sum(len(part) for part in fields["sample_id"]))
            add(fut_v[k], fut_f[k], 1, future_time, next_variate + k, False)  # sample_id 1 even for padding (reference)
        next_variate += known_covariates.shape[1]

    if past_covariates is not None:
        past_v, past_f = history_patches(*impute(past_covariates, univariate_target=False))
        for k in range(past_covariates.shape[1]):
            add(past_v[k], past_f[k], covariate_sample, past_time, next_variate + k, False)

    tokens = {name: np.concatenate(parts) for name, parts in fields.items()}
    # Widen patches to the checkpoint's largest patch size (extra columns: zero, unobserved).
    widen = ((0, 0), (0, max_patch_size - patch_size))
    tokens["target"] = np.pad(tokens["target"].astype(np.float32), widen)
    tokens["observed"] = np.pad(tokens["observed"], widen)

    # Positions before dropping padding tokens, then remap. Future target tokens stay even
    # when they are hold-out padding: as sample_id 0 tokens they touch no real token, and
    # they keep one read position per future patch.
    past_start = np.arange(num_variates) * context_patches
    future_start = num_variates * context_patches + np.arange(num_variates) * future_patches
    keep = tokens["sample_id"] == 1
    keep[num_variates * context_patches : num_variates * (context_patches + future_patches)] = True
    new_index = np.cumsum(keep) - 1
    tokens = {name: array[keep] for name, array in tokens.items()}
    last_context = new_index[past_start + context_patches - 1]
    steps = np.arange(future_patches)[None, :]
    future = new_index[future_start[:, None] + steps]
    future_covariates = new_index[np.asarray(known_future_start, dtype=np.int64).reshape(-1, 1) + steps]
    return SeriesTokens(tokens, last_context, future, future_covariates)


@dataclass
class TokenBatch:
    """Series tokens collated into one padded batch, with the positions to read forecasts."""

    tokens: PackedTokens  # (B, L, ...)
    last_context: torch.Tensor  # (B, V)
    future: torch.Tensor  # (B, V, F)
    future_covariates: torch.Tensor  # (B, Ck, F)
    # When every row has the same token layout (the forecaster batches only such series), the
    # layout on the host, so that decoding can plan each pass without reading the device.
    shared_layout: SeriesTokens | None = None

    @property
    def patch_size(self) -> int:
        """The patch size of every token of the batch."""
        return self.tokens.patch_size

    def select(self, rows: slice) -> "TokenBatch":
        """The series `rows` of the batch, as a batch of their own."""
        return TokenBatch(
            self.tokens.map(lambda t: t[rows]), self.last_context[rows], self.future[rows], self.future_covariates[rows],
            self.shared_layout,
        )

    def pass_plan(self, step: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(columns a pass needs, read positions (V,) among them) for the pass that draws future patch `step`.

        That pass reads each target variate's token before the new patch (its last context token
        for step 0) and needs no token of a later time: future tokens from `step` on (targets and
        known covariates) are left out. None when rows differ in layout (then nothing is left out).
        """
        layout = self.shared_layout
        if layout is None:
            return None
        length = len(layout.tokens["sample_id"])
        later = np.concatenate([layout.future[:, step:].ravel(), layout.future_covariates[:, step:].ravel()])
        columns = np.setdiff1d(np.arange(length), later)
        read = layout.last_context if step == 0 else layout.future[:, step - 1]
        return columns, np.searchsorted(columns, read)


def same_layout(series: list[SeriesTokens]) -> bool:
    """Whether every series has the same number of tokens and reads its forecasts at the same positions."""
    first = series[0]
    return all(
        len(s.tokens["sample_id"]) == len(first.tokens["sample_id"])
        and np.array_equal(s.last_context, first.last_context)
        and np.array_equal(s.future, first.future)
        and np.array_equal(s.future_covariates, first.future_covariates)
        for s in series[1:]
    )


def collate(series: list[SeriesTokens], patch_size: int, device: torch.device | str = "cpu") -> TokenBatch:
    """Right-pad every series with sample_id 0 tokens to the longest one."""
    length = max(len(s.tokens["sample_id"]) for s in series)
    width = series[0].tokens["target"].shape[1]
    batch = len(series)
    arrays = {
        "target": np.zeros((batch, length, width), np.float32),
        "observed": np.zeros((batch, length, width), bool),
        "sample_id": np.zeros((batch, length), np.int64),
        "time_id": np.zeros((batch, length), np.int64),
        "variate_id": np.zeros((batch, length), np.int64),
        "prediction_mask": np.zeros((batch, length), bool),
    }
    for row, item in enumerate(series):
        count = len(item.tokens["sample_id"])
        for name, array in arrays.items():
            array[row, :count] = item.tokens[name]
    tensors = {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}
    return TokenBatch(
        PackedTokens(**tensors, patch_size=patch_size),
        torch.from_numpy(np.stack([s.last_context for s in series])).to(device),
        torch.from_numpy(np.stack([s.future for s in series])).to(device),
        torch.from_numpy(np.stack([s.future_covariates for s in series])).to(device),
        shared_layout=series[0] if same_layout(series) else None,
    )
