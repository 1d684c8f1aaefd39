"""Autoregressive decoding: one patch per pass, drawn values fed back as observations.

`decode_exact` repeats the reference: pass 1 runs once per series and draws S first
patches; every later pass runs on S copies of each series, writes the newly drawn patch
into the next future token and clears its prediction flag, so drawn values enter the
scaler statistics (loc/scale) of all later passes. Only what cannot change the result is
skipped: future tokens later than the one being read, and the last layer's work on tokens
whose output is not read.

`decode_cached` freezes the scaler at the context's statistics. Then nothing computed for
earlier tokens changes from pass to pass, so each pass only runs the new time step's tokens
against cached keys and values: the context once per series, the drawn patches per path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from moirai_cli.forecasting.packing import TokenBatch
from moirai_cli.model.distribution import MixtureDistribution
from moirai_cli.model.network import KeyValueCache, MoiraiMoE, PackedTokens, gather_rows

# Upper bound on tokens per forward pass (rows x tokens), to keep activations bounded.
DEFAULT_TOKEN_BUDGET = 8192


def write_patch(tokens: PackedTokens, positions: torch.Tensor, values: torch.Tensor) -> None:
    """Store drawn patches at positions (R, V) as observed history: values (R, V, M)."""
    rows = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1)
    tokens.target[rows, positions] = values.to(tokens.target.dtype)
    tokens.prediction_mask[rows, positions] = False


def drop_later_tokens(tokens: PackedTokens, positions: torch.Tensor) -> tuple[PackedTokens, torch.Tensor]:
    """Remove token columns later in time than every read position (causality hides them)."""
    read_time = gather_rows(tokens.time_id, positions).max(dim=1).values  # (R,)
    needed = ((tokens.time_id <= read_time.unsqueeze(1)) & (tokens.sample_id > 0)).any(dim=0)  # (L,)
    if bool(needed.all()):
        return tokens, positions
    new_index = torch.cumsum(needed, 0) - 1
    return tokens.map(lambda t: t[:, needed]), new_index[positions]


def next_patch_distribution(model: MoiraiMoE, tokens: PackedTokens, positions: torch.Tensor, token_budget: int) -> MixtureDistribution:
    """The distributions at `positions` (R, V), computed over row chunks of bounded size."""
    tokens, positions = drop_later_tokens(tokens, positions)
    rows_per_chunk = max(1, token_budget // tokens.sample_id.shape[1])
    return MixtureDistribution.concatenate([
        model(tokens.map(lambda t: t[start : start + rows_per_chunk]), positions[start : start + rows_per_chunk])
        for start in range(0, positions.shape[0], rows_per_chunk)
    ])


def patches_to_horizon(values: torch.Tensor, patch_size: int, horizon: int) -> torch.Tensor:
    """Future patches (R, V, F, M) laid end to end, cut to the horizon: (R, H, V)."""
    return values[..., :patch_size].flatten(-2)[..., :horizon].transpose(1, 2)


def decode_exact(
    model: MoiraiMoE,
    batch: TokenBatch,
    horizon: int,
    num_samples: int,
    generators: Sequence[torch.Generator],
    token_budget: int = DEFAULT_TOKEN_BUDGET,
) -> torch.Tensor:
    """Sample paths (B, S, H, V) by the reference's exact autoregressive procedure.

    `generators` holds one random generator per series: every draw of series b comes from generator b.
    """
    num_series = batch.last_context.shape[0]
    num_future = batch.future.shape[-1]
    first = next_patch_distribution(model, batch.tokens, batch.last_context, token_budget).sample(num_samples, generators)
    first = first.transpose(0, 1).flatten(0, 1)  # (S, B, V, M) -> rows ordered series-major: row = b * S + s
    tokens = batch.tokens.map(lambda t: t.repeat_interleave(num_samples, dim=0))
    future = batch.future.repeat_interleave(num_samples, dim=0)  # (R, V, F)
    write_patch(tokens, future[:, :, 0], first)
    for step in range(1, num_future):
        distribution = next_patch_distribution(model, tokens, future[:, :, step - 1], token_budget)
        write_patch(tokens, future[:, :, step], distribution.sample(1, generators)[0])  # (R, V, M)
    rows = torch.arange(future.shape[0], device=future.device)[:, None, None]
    paths = patches_to_horizon(tokens.target[rows, future], batch.patch_size, horizon)  # (B*S, H, V)
    return paths.unflatten(0, (num_series, num_samples))


def decode_cached(
    model: MoiraiMoE, batch: TokenBatch, horizon: int, num_samples: int, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Sample paths (B, S, H, V) with the scaler frozen at the context and a key/value cache (one generator per series)."""
    tokens = batch.tokens
    num_series, num_variates = batch.last_context.shape
    num_future = batch.future.shape[-1]
    loc, scale = model.scale(tokens)  # (B, L, 1): context statistics, kept for every pass
    prefix_kv: list = []
    distribution = model.forward_scaled(tokens, loc, scale, batch.last_context, keep_kv=prefix_kv)
    drawn = distribution.sample(num_samples, generators).transpose(0, 1).flatten(0, 1)  # (R, V, M)

    origin_time = gather_rows(tokens.time_id, batch.last_context).max(dim=1, keepdim=True).values  # (B, 1)
    slots_per_step = num_variates + batch.future_covariates.shape[1]  # new tokens per path at each step
    cache = KeyValueCache.for_prefix(
        prefix_kv,
        visible=(tokens.sample_id > 0) & (tokens.time_id <= origin_time),
        variate=tokens.variate_id,
        suffix_tokens=(num_future - 1) * slots_per_step,
        paths_per_series=num_samples,
    )
    per_token = {"target": tokens.target, "loc": loc, "scale": scale, "patch_size": tokens.patch_size,
                 "time_id": tokens.time_id, "variate_id": tokens.variate_id}
    paths = [drawn]
    for step in range(num_future - 1):
        # The new time step: each target variate's drawn patch, then the known covariates.
        slot = torch.cat([batch.future[:, :, step], batch.future_covariates[:, :, step]], dim=1)  # (B, K)
        new = {name: gather_rows(t, slot).repeat_interleave(num_samples, dim=0) for name, t in per_token.items()}  # (R, K, ...)
        new["target"][:, :num_variates] = drawn.to(new["target"].dtype)
        hidden = model.embed(new["target"], new["loc"], new["scale"], new["patch_size"])
        out = model.extend(hidden, new["time_id"], new["variate_id"], cache)
        targets = slice(0, num_variates)
        distribution = model.distribution(out[:, targets], new["patch_size"][:, targets], new["loc"][:, targets], new["scale"][:, targets])
        drawn = distribution.sample(1, generators)[0]  # (R, V, M)
        paths.append(drawn)
    values = patches_to_horizon(torch.stack(paths, dim=2), batch.patch_size, horizon)  # (R, H, V)
    return values.unflatten(0, (num_series, num_samples))
