"""Each family's fine-tuning loss on packed training windows.

A window is a series cut at some row, packed as the forecast packs it with its last `horizon`
rows as the future (`pack_series(..., holdout=True)`): the future tokens hold the true values,
observed, and are flagged as predictions, so the scaler sees the context only, as at a forecast.
Every loss is a mean over the observed future values of each (window, target variate) group,
then a mean over the groups: uni2ts's `PackedLoss` reduction, so a short or gappy series weighs
as much as a long one.

- Moirai 1.x (masked encoder): the mixture's negative log-likelihood of the future tokens, which
  enter as the learned mask vector, from one pass (uni2ts's `MoiraiFinetune.training_step` with
  `PackedNLLLoss`).
- Moirai-MoE (decoder-only): each token from the last context token on gives the distribution of
  the next patch; the loss is that distribution's negative log-likelihood of the true next patch,
  which enters the following token as an observed patch (teacher forcing, as drawn patches enter
  a decoding pass).
- Moirai 2.0 (decoder-only, quantile head): each of those tokens predicts the quantiles of its next
  `num_predict_token` patches; the loss is the pinball loss averaged over the head's levels, of
  every future patch each token predicts, in standardised units (the reference's training mode
  returns scaled predictions and targets: (q - loc) / scale against (y - loc) / scale).

For both decoder families the scaler stays at the context's statistics for the whole horizon,
as `--decoding cached` keeps it; exact decoding also lets each drawn patch into the statistics of
the later passes. The first future patch is scored exactly as the forecast's first pass sees it.
"""

from __future__ import annotations

import torch

from moirai_cli.forecasting.packing import TokenBatch
from moirai_cli.model.config import MOIRAI_1, MOIRAI_2
from moirai_cli.model.network import Moirai1, Moirai2, MoiraiMoE, MoiraiNetwork, PackedTokens, gather_rows


def group_means(
    loss: torch.Tensor,  # (B, L, M) summed loss per value position
    count: torch.Tensor,  # (B, L, M) how many loss terms each position holds (0 where nothing is scored)
    predicted: torch.Tensor,  # (B, L) bool: tokens whose values are predicted
    sample_id: torch.Tensor,  # (B, L) 0 or 1
    variate_id: torch.Tensor,  # (B, L)
) -> torch.Tensor:
    """The mean loss of each (row, sample, variate) group that has a predicted token: (G,), in float64.

    A group with predicted tokens but nothing observed counts, with mean 0 (as uni2ts's reduction
    has it: its mean over groups divides by every group with prediction tokens).
    """
    batch, length = sample_id.shape
    group = (sample_id * length + variate_id + torch.arange(batch, device=loss.device).unsqueeze(1) * 2 * length).flatten()
    groups = batch * 2 * length

    def per_group(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(groups, dtype=torch.float64, device=loss.device).index_add_(0, group, values.flatten())

    totals = per_group(loss.double().sum(-1))
    counts = per_group(count.double().sum(-1))
    has_predictions = per_group(predicted.double()) > 0
    means = totals / torch.where(counts > 0, counts, 1.0)
    return means[has_predictions]


def masked_prediction_nll(model: Moirai1, tokens: PackedTokens, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Moirai 1.x: per-group mean negative log-likelihood of the observed values of the prediction tokens (G,).

    With `positions` (B, Q), every prediction token of each row, the head runs at those tokens only
    (the same values, less work); without, at every token.
    """
    predicted = tokens.prediction_mask
    if positions is None:
        distribution = model(tokens)  # batch shape (B, L, M)
        values, counted = tokens.target, tokens.observed & predicted.unsqueeze(-1)
    else:
        distribution = model(tokens, positions)  # batch shape (B, Q, M)
        values, counted = gather_rows(tokens.target, positions), gather_rows(tokens.observed, positions)
    nll = torch.where(counted, -distribution.log_prob(values), 0.0)
    if positions is not None:  # back to token positions, for the groups
        rows = torch.arange(nll.shape[0], device=nll.device).unsqueeze(1)
        nll = torch.zeros(tokens.target.shape, dtype=nll.dtype, device=nll.device).index_put((rows, positions), nll)
        counted = torch.zeros_like(tokens.observed).index_put((rows, positions), counted)
    return group_means(nll, counted, predicted, tokens.sample_id, tokens.variate_id)


def reading_positions(batch: TokenBatch) -> torch.Tensor:
    """(B, V, F) the token before each future patch: the last context token, then the future tokens but the last."""
    return torch.cat([batch.last_context.unsqueeze(-1), batch.future[..., :-1]], dim=-1)


def scatter_to_future(batch: TokenBatch, per_patch: torch.Tensor) -> torch.Tensor:
    """Values (B, V, F, M) of the future patches placed at their tokens in a (B, L, M) tensor of zeros."""
    tokens = batch.tokens
    out = torch.zeros(tokens.target.shape, dtype=per_patch.dtype, device=per_patch.device)
    rows = torch.arange(out.shape[0], device=out.device)[:, None, None]
    return out.index_put((rows, batch.future), per_patch)


def future_groups(batch: TokenBatch, loss: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Group means (G,) of per-future-patch loss sums and term counts, each (B, V, F, M)."""
    tokens = batch.tokens
    predicted = torch.zeros_like(tokens.prediction_mask).index_put(
        (torch.arange(loss.shape[0], device=loss.device)[:, None, None], batch.future), torch.tensor(True, device=loss.device)
    )
    return group_means(scatter_to_future(batch, loss), scatter_to_future(batch, count), predicted, tokens.sample_id, tokens.variate_id)


def next_patch_nll(model: MoiraiMoE, batch: TokenBatch) -> torch.Tensor:
    """Moirai-MoE: per-group mean negative log-likelihood of each future patch under the previous token's distribution (G,)."""
    tokens = batch.tokens
    reads = reading_positions(batch)  # (B, V, F)
    distribution = model(tokens, reads.flatten(1))  # batch shape (B, V*F, M)
    future = batch.future.flatten(1)
    values, observed = gather_rows(tokens.target, future), gather_rows(tokens.observed, future)
    nll = torch.where(observed, -distribution.log_prob(values), 0.0)
    shape = batch.future.shape + (tokens.target.shape[-1],)
    return future_groups(batch, nll.view(shape), observed.view(shape))


def pinball(quantiles: torch.Tensor, actual: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Pinball loss averaged over levels: quantiles (..., Q, P), actual (..., P), levels (Q,) -> (..., P)."""
    error = actual.unsqueeze(-2) - quantiles
    weight = torch.where(error > 0, levels[:, None], 1 - levels[:, None])
    return (weight * error.abs()).mean(dim=-2)


def next_patches_pinball(model: Moirai2, batch: TokenBatch) -> torch.Tensor:
    """Moirai 2.0: per-group mean pinball loss of every future patch each token's quantile head predicts (G,).

    The token before future patch i predicts patches i .. i + num_predict_token - 1; each prediction
    that falls inside the horizon is scored, in units of the series' scale.
    """
    tokens = batch.tokens
    config = model.config
    reads = reading_positions(batch)  # (B, V, F)
    num_future = reads.shape[-1]
    loc, scales = model.scale(tokens)  # once: the forward pass and the loss's units share them
    out = model.forward_scaled(tokens, loc, scales, reads.flatten(1)).unflatten(1, reads.shape[1:])  # (B, V, F, NPT, Q, P)
    future = batch.future.flatten(1)
    shape = batch.future.shape + (config.patch_size,)
    width = config.patch_size
    values = gather_rows(tokens.target, future)[..., :width].reshape(shape)
    observed = gather_rows(tokens.observed, future)[..., :width].reshape(shape)
    scale = gather_rows(scales, future).reshape(batch.future.shape + (1,))
    levels = torch.tensor(config.quantile_levels, dtype=out.dtype, device=out.device)
    loss = torch.zeros(shape, dtype=out.dtype, device=out.device)
    count = torch.zeros(shape, dtype=out.dtype, device=out.device)
    for offset in range(min(config.num_predict_token, num_future)):
        predicted = slice(offset, num_future)  # patches predicted `offset + 1` patches ahead
        readers = slice(0, num_future - offset)
        terms = pinball(out[:, :, readers, offset], values[:, :, predicted], levels) / scale[:, :, predicted]
        kept = observed[:, :, predicted]
        loss[:, :, predicted] += torch.where(kept, terms, 0.0)
        count[:, :, predicted] += kept
    widen = (0, tokens.target.shape[-1] - width)
    return future_groups(batch, torch.nn.functional.pad(loss, widen), torch.nn.functional.pad(count, widen))


def window_group_losses(model: MoiraiNetwork, batch: TokenBatch) -> torch.Tensor:
    """The family's loss of each (window, target variate) group of a batch of packed windows: (G,)."""
    if model.family == MOIRAI_1:
        return masked_prediction_nll(model, batch.tokens, batch.future.flatten(1))
    if model.family == MOIRAI_2:
        return next_patches_pinball(model, batch)
    return next_patch_nll(model, batch)
