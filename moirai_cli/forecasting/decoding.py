"""Decoding: from packed tokens to forecasts, as each family's reference forecast procedure does.

Moirai-MoE decodes autoregressively, one patch per pass, drawn values fed back as observations.
`decode_exact` repeats the reference: pass 1 runs once per series and draws S first
patches; every later pass runs on S copies of each series, writes the newly drawn patch
into the next future token and clears its prediction flag, so drawn values enter the
scaler statistics (loc/scale) of all later passes. Only what cannot change the result is
skipped: future tokens later than the one being read (after the scaler has seen them, as known
covariates' future values count in the reference's statistics), and the last layer's work on
tokens whose output is not read.

`decode_cached` freezes the scaler at the context's statistics. Then nothing computed for
earlier tokens changes from pass to pass, so each pass only runs the new time step's tokens
against cached keys and values: the context once per series, the drawn patches per path.

Moirai 1.x (`decode_one_pass`) is a masked encoder: one pass gives the distribution of every
future patch, and each sample path draws every value from it independently.

Moirai 2.0 (`decode_quantiles`) outputs quantiles, not a distribution: one pass predicts the
next `num_predict_token` patches. Beyond those, each of the Q quantile paths is fed back as if
observed (one copy of the series per level), and each later patch's quantiles are the Q
levels of the pooled Q x Q predictions of all copies. Nothing is random.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from moirai_cli.forecasting.execution import CPU_TOKEN_BUDGET, chunk_workers, map_chunks, row_chunks
from moirai_cli.forecasting.packing import TokenBatch
from moirai_cli.model.distribution import MixtureDistribution
from moirai_cli.model.network import KeyValueCache, Moirai1, Moirai2, MoiraiMoE, MoiraiNetwork, PackedTokens, gather_rows


def write_patch(tokens: PackedTokens, positions: torch.Tensor, values: torch.Tensor) -> None:
    """Store drawn patches at positions (R, V) as observed history: values (R, V, M)."""
    rows = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1)
    tokens.target[rows, positions] = values.to(tokens.target.dtype)
    tokens.prediction_mask[rows, positions] = False


def forward_at(
    model: MoiraiNetwork,
    tokens: PackedTokens,
    positions: torch.Tensor,
    token_budget: int,
    plan: tuple[np.ndarray, np.ndarray] | None = None,
):
    """The network's output at `positions` (R, Q), computed over row chunks of at most `token_budget` tokens
    (side by side on a CPU with several threads, see execution.py).

    The scaler statistics come from every token: known covariates' future values enter
    them, as in the reference. Then, with a `plan` (`TokenBatch.pass_plan`: the columns the
    pass needs and its read positions among them, known on the host), a causal network leaves
    out the token columns later in time than what it reads, as they cannot change it; nothing
    is read back from the device to decide that.
    """
    loc, scale = model.scale(tokens)
    if plan is not None and model.causal:
        columns, read = plan
        index = torch.from_numpy(columns).to(positions.device)
        tokens = tokens.map(lambda t: t.index_select(1, index))
        loc, scale = loc.index_select(1, index), scale.index_select(1, index)
        positions = torch.from_numpy(read).to(positions.device).expand(positions.shape[0], -1)
    workers = chunk_workers(positions.device)
    chunks = row_chunks(positions.shape[0], tokens.sample_id.shape[1], token_budget, workers)

    def run(rows: slice):
        return model.forward_scaled(tokens.map(lambda t: t[rows]), loc[rows], scale[rows], positions[rows])

    outputs = map_chunks(run, chunks, workers)
    if isinstance(outputs[0], MixtureDistribution):
        return MixtureDistribution.concatenate(outputs)
    return torch.cat(outputs)


def patches_to_horizon(values: torch.Tensor, patch_size: int, horizon: int) -> torch.Tensor:
    """Future patches (R, V, F, M) laid end to end, cut to the horizon: (R, H, V)."""
    return values[..., :patch_size].flatten(-2)[..., :horizon].transpose(1, 2)


def decode_exact(
    model: MoiraiMoE,
    batch: TokenBatch,
    horizon: int,
    num_samples: int,
    generators: Sequence[torch.Generator],
    token_budget: int = CPU_TOKEN_BUDGET,
) -> torch.Tensor:
    """Sample paths (B, S, H, V) by the reference's exact autoregressive procedure.

    `generators` holds one random generator per series: every draw of series b comes from generator b.
    """
    num_series = batch.last_context.shape[0]
    num_future = batch.future.shape[-1]
    first = forward_at(model, batch.tokens, batch.last_context, token_budget, batch.pass_plan(0))
    first = first.sample(num_samples, generators).transpose(0, 1).flatten(0, 1)  # (S, B, V, M) -> row = b * S + s
    tokens = batch.tokens.map(lambda t: t.repeat_interleave(num_samples, dim=0))
    future = batch.future.repeat_interleave(num_samples, dim=0)  # (R, V, F)
    write_patch(tokens, future[:, :, 0], first)
    for step in range(1, num_future):
        distribution = forward_at(model, tokens, future[:, :, step - 1], token_budget, batch.pass_plan(step))
        write_patch(tokens, future[:, :, step], distribution.sample(1, generators)[0])  # (R, V, M)
    rows = torch.arange(future.shape[0], device=future.device)[:, None, None]
    paths = patches_to_horizon(tokens.target[rows, future], batch.patch_size, horizon)  # (B*S, H, V)
    return paths.unflatten(0, (num_series, num_samples))


def decode_cached(
    model: MoiraiMoE, batch: TokenBatch, horizon: int, num_samples: int, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Sample paths (B, S, H, V) with the scaler frozen at the context and a key/value cache (one generator per series).

    On a CPU with several compute threads, groups of series decode side by side, one thread each
    (execution.py): a step's many small operations then never wait for the other threads.
    """
    num_series = batch.last_context.shape[0]
    workers = chunk_workers(batch.last_context.device)
    groups = row_chunks(num_series, 1, num_series, workers)

    def run(rows: slice) -> torch.Tensor:
        return decode_cached_group(model, batch.select(rows), horizon, num_samples, generators[rows])

    return torch.cat(map_chunks(run, groups, workers))


def decode_cached_group(
    model: MoiraiMoE, batch: TokenBatch, horizon: int, num_samples: int, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """`decode_cached` for one group of series, all its steps at once."""
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
    per_token = {"target": tokens.target, "loc": loc, "scale": scale, "time_id": tokens.time_id, "variate_id": tokens.variate_id}
    paths = [drawn]
    for step in range(num_future - 1):
        # The new time step: each target variate's drawn patch, then the known covariates.
        slot = torch.cat([batch.future[:, :, step], batch.future_covariates[:, :, step]], dim=1)  # (B, K)
        new = {name: gather_rows(t, slot).repeat_interleave(num_samples, dim=0) for name, t in per_token.items()}  # (R, K, ...)
        new["target"][:, :num_variates] = drawn.to(new["target"].dtype)
        hidden = model.embed(new["target"], new["loc"], new["scale"], tokens.patch_size)
        out = model.extend(hidden, new["time_id"], new["variate_id"], cache)
        targets = slice(0, num_variates)
        distribution = model.distribution(out[:, targets], tokens.patch_size, new["loc"][:, targets], new["scale"][:, targets])
        drawn = distribution.sample(1, generators)[0]  # (R, V, M)
        paths.append(drawn)
    values = patches_to_horizon(torch.stack(paths, dim=2), batch.patch_size, horizon)  # (R, H, V)
    return values.unflatten(0, (num_series, num_samples))


def decode_one_pass(
    model: Moirai1,
    batch: TokenBatch,
    horizon: int,
    num_samples: int,
    generators: Sequence[torch.Generator],
    token_budget: int = CPU_TOKEN_BUDGET,
) -> torch.Tensor:
    """Sample paths (B, S, H, V) as Moirai 1.x's reference draws them: every future value from one pass.

    `generators` holds one random generator per series: every draw of series b comes from generator b.
    """
    width = batch.patch_size
    distribution = forward_at(model, batch.tokens, batch.future.flatten(1), token_budget)  # batch shape (B, V*F, M)
    drawn = distribution.map(lambda t: t[:, :, :width]).sample(num_samples, generators)  # (S, B, V*F, P)
    drawn = drawn.transpose(0, 1).unflatten(2, batch.future.shape[1:])  # (B, S, V, F, P)
    paths = patches_to_horizon(drawn.flatten(0, 1), width, horizon)  # (B*S, H, V)
    return paths.unflatten(0, drawn.shape[:2])


def decode_quantiles(model: Moirai2, batch: TokenBatch, horizon: int, token_budget: int = CPU_TOKEN_BUDGET) -> torch.Tensor:
    """Quantiles (B, Q, H, V) at the model's levels, by Moirai 2.0's reference procedure."""
    config = model.config
    per_pass, levels = config.num_predict_token, config.quantile_levels
    num_series, num_variates, num_future = batch.future.shape
    first = forward_at(model, batch.tokens, batch.last_context, token_budget, batch.pass_plan(0))  # (B, V, per_pass, Q, P)
    quantiles = first.new_empty(num_series, num_variates, num_future, len(levels), config.patch_size)
    filled = min(num_future, per_pass)
    quantiles[:, :, :filled] = first[:, :, :filled]
    if num_future > per_pass:
        # Copy q of series b (row b * Q + q) continues from the level-q path.
        tokens = batch.tokens.map(lambda t: t.repeat_interleave(len(levels), dim=0))
        future = batch.future.repeat_interleave(len(levels), dim=0)  # (B*Q, V, F)
        level_tensor = torch.tensor(levels, dtype=first.dtype, device=first.device)
        paths = first[:, :, :filled].permute(0, 3, 1, 2, 4).flatten(0, 1)  # (B*Q, V, filled, P)
        while filled < num_future:
            for step in range(paths.shape[2]):
                write_patch(tokens, future[:, :, filled - paths.shape[2] + step], paths[:, :, step])
            count = min(per_pass, num_future - filled)
            plan = batch.pass_plan(filled)
            out = forward_at(model, tokens, future[:, :, filled - 1], token_budget, plan)[:, :, :count]  # (B*Q, V, count, Q, P)
            pooled = out.unflatten(0, (num_series, len(levels))).permute(0, 2, 3, 1, 4, 5).flatten(3, 4)  # (B, V, count, Q*Q, P)
            step_quantiles = torch.quantile(pooled, level_tensor, dim=3)  # (Q, B, V, count, P)
            quantiles[:, :, filled : filled + count] = step_quantiles.permute(1, 2, 3, 0, 4)
            paths = step_quantiles.transpose(0, 1).flatten(0, 1)  # (B*Q, V, count, P)
            filled += count
    values = patches_to_horizon(quantiles.permute(0, 3, 1, 2, 4).flatten(0, 1), config.patch_size, horizon)  # (B*Q, H, V)
    return values.unflatten(0, (num_series, len(levels)))
