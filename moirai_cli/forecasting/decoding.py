"""Autoregressive decoding: one patch per pass, drawn values fed back as observations.

Exact decoding repeats the reference: pass 1 runs once per series and draws S first
patches; every later pass runs on S copies of each series, writes the newly drawn patch
into the next future token and clears its prediction flag, so drawn values enter the
scaler statistics (loc/scale) of all later passes.
"""

from __future__ import annotations

import torch

from moirai_cli.forecasting.packing import TokenBatch
from moirai_cli.model.distribution import MixtureDistribution
from moirai_cli.model.network import MoiraiMoE, PackedTokens

# Upper bound on tokens per forward pass (rows x tokens), to keep activations bounded.
DEFAULT_TOKEN_BUDGET = 65536


def select_tokens(distribution: MixtureDistribution, positions: torch.Tensor) -> MixtureDistribution:
    """Pick tokens per row: distribution (R, L, M), positions (R, V) -> distribution (R, V, M)."""
    rows = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1)
    return distribution.map(lambda t: t[rows, positions])


def write_patch(tokens: PackedTokens, positions: torch.Tensor, values: torch.Tensor) -> None:
    """Store drawn patches at positions (R, V) as observed history: values (R, V, M)."""
    rows = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1)
    tokens.target[rows, positions] = values.to(tokens.target.dtype)
    tokens.prediction_mask[rows, positions] = False


def next_patch_distribution(
    model: MoiraiMoE, tokens: PackedTokens, positions: torch.Tensor, token_budget: int
) -> list[MixtureDistribution]:
    """Run the network over row chunks and keep the distributions at `positions` (R, V)."""
    rows_per_chunk = max(1, token_budget // tokens.sample_id.shape[1])
    parts = []
    for start in range(0, positions.shape[0], rows_per_chunk):
        chunk = tokens.map(lambda t: t[start : start + rows_per_chunk])
        parts.append(select_tokens(model(chunk), positions[start : start + rows_per_chunk]))
    return parts


def read_forecast(tokens: PackedTokens, future: torch.Tensor, patch_size: int, horizon: int) -> torch.Tensor:
    """Values of the future tokens: tokens (R, L, M), future (R, V, F) -> (R, H, V)."""
    rows = torch.arange(future.shape[0], device=future.device)[:, None, None]
    values = tokens.target[rows, future, :patch_size]  # (R, V, F, P)
    values = values.flatten(-2)[..., :horizon]  # (R, V, H)
    return values.transpose(1, 2)


def decode_exact(
    model: MoiraiMoE,
    batch: TokenBatch,
    horizon: int,
    num_samples: int,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> torch.Tensor:
    """Sample paths (B, S, H, V) by the reference's exact autoregressive procedure."""
    num_series = batch.last_context.shape[0]
    num_future = batch.future.shape[-1]
    first = torch.cat([d.sample(num_samples) for d in next_patch_distribution(model, batch.tokens, batch.last_context, token_budget)], dim=1)
    # (S, B, V, M) -> rows ordered series-major: row = b * S + s
    first = first.transpose(0, 1).flatten(0, 1)
    tokens = batch.tokens.map(lambda t: t.repeat_interleave(num_samples, dim=0))
    future = batch.future.repeat_interleave(num_samples, dim=0)  # (R, V, F)
    write_patch(tokens, future[:, :, 0], first)
    for step in range(1, num_future):
        parts = next_patch_distribution(model, tokens, future[:, :, step - 1], token_budget)
        drawn = torch.cat([d.sample(1)[0] for d in parts], dim=0)  # (R, V, M)
        write_patch(tokens, future[:, :, step], drawn)
    paths = read_forecast(tokens, future, batch.patch_size, horizon)  # (B*S, H, V)
    return paths.unflatten(0, (num_series, num_samples))
