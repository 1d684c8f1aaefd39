"""The Moirai networks: packed tokens in, a forecast per token out.

`MoiraiNetwork` holds what the three families share: the packed scaler, the transformer
stack (attention with rotary time, a binary variate bias and per-head q/k norms, RMSNorm,
pre-norm residual layers) and how a pass runs over tokens. The families differ only in:

| | input projection | feed-forward | attention | output |
|---|---|---|---|---|
| `Moirai1` (1.0-R, 1.1-R) | one linear per patch size; a learned mask vector replaces tokens to predict | dense | whole sample, both directions | mixture per value |
| `MoiraiMoE` | per patch size: silu(in) -> feat, plus a residual linear | 32 experts, 2 per token | causal in time | mixture per value |
| `Moirai2` (2.0-R) | residual block on [scaled values, observed flags] | dense | causal in time | `num_predict_token` patches x quantile levels |
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from moirai_cli.model.config import HEAD_DIM, FamilyConfig, Moirai1Config, Moirai2Config, MoiraiMoEConfig
from moirai_cli.model.distribution import MixtureDistribution
from moirai_cli.model.layers import (
    Encoder,
    MixtureOfExperts,
    ParamProjection,
    PatchSizeLinear,
    ResidualBlock,
    RotaryEmbedding,
    rowwise,
    whole_key_blocks,
)

MINIMUM_VARIANCE = 1e-5


@dataclass
class PackedTokens:
    """A batch of token sequences; every token is one patch of one variate of one series.

    Values sit left-aligned in rows of width M (the largest patch size). A row holds one
    series: its tokens have sample_id 1; tokens with sample_id 0 are padding and never interact
    with real tokens. Every variate of a row has at least one token, so variate ids (and time
    ids, which count the row's patch positions) are below the row length L: the network sizes
    its tables from L instead of reading the ids back from the device. Every token of a batch has
    the same patch size, known on the host: the layers that depend on it use only its weights.
    """

    target: torch.Tensor  # (B, L, M) float
    observed: torch.Tensor  # (B, L, M) bool
    sample_id: torch.Tensor  # (B, L) long
    time_id: torch.Tensor  # (B, L) long
    variate_id: torch.Tensor  # (B, L) long
    prediction_mask: torch.Tensor  # (B, L) bool: value still to be forecast
    patch_size: int  # of every token: one of the checkpoint's sizes

    def map(self, fn) -> "PackedTokens":
        """Apply `fn` to every tensor (indexing, repeating, moving to a device); the patch size stays."""
        tensors = {f.name: fn(getattr(self, f.name)) for f in fields(self) if f.name != "patch_size"}
        return PackedTokens(**tensors, patch_size=self.patch_size)


def packed_std_scaler(
    target: torch.Tensor,  # (B, L, M)
    weight: torch.Tensor,  # (B, L, M) bool: observed and not to be predicted
    sample_id: torch.Tensor,  # (B, L)
    variate_id: torch.Tensor,  # (B, L)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per (sequence, sample_id, variate_id) group, (B, L, 1) each.

    Computed in float64 with a scatter over groups (linear in tokens); the variance uses
    Bessel's correction, a zero denominator is replaced by one, padding gets loc 0, scale 1.
    Group numbers come from the shapes alone (sample ids 0 or 1, variate ids below L; see
    PackedTokens), so nothing is read back from the device.
    """
    batch, length, _ = target.shape
    target = target.double()
    weight = weight.double()
    groups_per_row = 2 * length
    group = sample_id * length + variate_id + torch.arange(batch, device=target.device).unsqueeze(1) * groups_per_row
    group = group.flatten()  # (B*L,)
    num_groups = batch * groups_per_row

    def group_sum(per_token: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(num_groups, dtype=torch.float64, device=target.device)
        return sums.index_add_(0, group, per_token.flatten())[group].view(batch, length, 1)

    count = group_sum((weight).sum(-1))
    loc = group_sum((target * weight).sum(-1)) / torch.where(count == 0, 1.0, count)
    squares = group_sum((((target - loc) ** 2) * weight).sum(-1))
    dof = count - 1
    variance = squares / torch.where(dof == 0, 1.0, dof)
    scale = torch.sqrt(variance + MINIMUM_VARIANCE)
    padding = (sample_id == 0).unsqueeze(-1)
    loc = torch.where(padding, 0.0, loc)
    scale = torch.where(padding, 1.0, scale)
    return loc.float(), scale.float()


def attention_structure(
    query_sample: torch.Tensor,  # (B, Lq)
    query_time: torch.Tensor,
    query_variate: torch.Tensor,
    key_sample: torch.Tensor,  # (B, Lk)
    key_time: torch.Tensor,
    key_variate: torch.Tensor,
    causal: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which keys each query sees (same sample and, when causal, not later in time) and which share its variate."""
    visible = query_sample.unsqueeze(-1) == key_sample.unsqueeze(-2)
    if causal:
        visible = visible & (key_time.unsqueeze(-2) <= query_time.unsqueeze(-1))
    same_variate = query_variate.unsqueeze(-1) == key_variate.unsqueeze(-2)
    return visible, same_variate


def gather_rows(tensor: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per-row token selection: tensor (B, L, ...), positions (B, Q) -> (B, Q, ...)."""
    rows = torch.arange(positions.shape[0], device=positions.device).unsqueeze(1)
    return tensor[rows, positions]


@dataclass
class KeyValueCache:
    """Keys/values of every layer for a shared prefix (one row per series) and per-path suffixes.

    Prefix tensors have one row per series; suffix rows are sample paths, paths of series b
    occupying rows b*S .. b*S + S - 1. Each step attends over whole blocks of KEY_BLOCK keys
    (padding hidden from every query), so that every matrix of scores starts aligned (see
    `moirai_cli.model.layers.rowwise`). The prefix is stored padded to whole blocks. The suffix
    store holds exactly `suffix_capacity` tokens per path, path after path, then one block of
    zeros; a step reads each path's filled tokens as a view of whole blocks that runs on into the
    next path's store (or the zeros), hidden like padding. So no path stores padding, and the
    store is allocated once and filled in place (no copy of what is cached).
    """

    prefix: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (B, H, Lp, E) keys, values
    prefix_visible: torch.Tensor  # (B, Lp) bool: keys any later token may see
    prefix_variate: torch.Tensor  # (B, Lp)
    suffix_capacity: int  # tokens per path the store holds
    paths_per_series: int = 1
    suffix: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per layer: flat keys, values
    suffix_variate: torch.Tensor | None = None  # (R, capacity in whole key blocks), -1 past the filled tokens
    suffix_length: int = 0  # tokens per path stored so far

    @classmethod
    def for_prefix(
        cls,
        prefix: list[tuple[torch.Tensor, torch.Tensor]],
        visible: torch.Tensor,
        variate: torch.Tensor,
        suffix_tokens: int,
        paths_per_series: int,
    ) -> "KeyValueCache":
        """A cache over a computed prefix, padded to whole key blocks, with room for `suffix_tokens` per path."""
        extra = whole_key_blocks(visible.shape[1]) - visible.shape[1]

        def padded(t: torch.Tensor) -> torch.Tensor:  # keys and values of the CPU's encode come padded already
            missing = whole_key_blocks(t.shape[2]) - t.shape[2]
            return F.pad(t, (0, 0, 0, missing)) if missing else t

        prefix = [(padded(key), padded(value)) for key, value in prefix]
        return cls(
            prefix=prefix,
            prefix_visible=F.pad(visible, (0, extra), value=False),
            prefix_variate=F.pad(variate, (0, extra), value=-1),
            suffix_capacity=suffix_tokens,
            paths_per_series=paths_per_series,
        )

    def append(self, index: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer `index`'s keys/values of the new tokens (R, H, n, E) after the cached ones.

        Returns views (R, H, T, E) of that layer's store, T the stored tokens per path rounded up
        to whole key blocks: slots past a path's filled ones hold finite values no query may see.
        Every layer appends the same step, so the caller advances `suffix_length` after the last.
        """
        rows, heads, new, width = key.shape
        start, end = self.suffix_length, self.suffix_length + new
        if end > self.suffix_capacity:
            raise ValueError(f"key/value cache holds {self.suffix_capacity} tokens per path, {end} needed")
        if index == len(self.suffix):
            size = (rows * heads * self.suffix_capacity + whole_key_blocks(self.suffix_capacity) - self.suffix_capacity) * width
            self.suffix.append((key.new_zeros(size), value.new_zeros(size)))  # zeros: whatever a view reads is finite
        stores = self.suffix[index]
        for store, new_part in zip(stores, (key, value)):
            self.per_path(store, rows, heads, width, self.suffix_capacity)[:, :, start:end] = new_part
        keys, values = (self.per_path(store, rows, heads, width, whole_key_blocks(end)) for store in stores)
        return keys, values

    def per_path(self, store: torch.Tensor, rows: int, heads: int, width: int, slots: int) -> torch.Tensor:
        """The flat store as (R, H, slots, E); with more slots than the capacity, each path's view runs into the next."""
        capacity = self.suffix_capacity
        return store.as_strided((rows, heads, slots, width), (heads * capacity * width, capacity * width, width, 1))


class MoiraiNetwork(nn.Module):
    """What every family shares: scaler, transformer stack, final norm, and how a pass runs.

    A family adds its input projection (`embed_tokens`) and its output (`head`), and says
    whether attention is causal in time and whether its feed-forward is a mixture of experts.
    """

    causal = True  # may a token see later time steps of its sample? (Moirai 1.x: yes)
    output_kind = "samples"  # the forecast's form: "samples" (a distribution) or "quantiles"

    def __init__(self, config: FamilyConfig, experts: bool):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.d_model, config.d_ff, config.num_layers, experts)
        self.rotary = RotaryEmbedding(HEAD_DIM // 2)

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the encoder's attention and experts compute in (float32, or bfloat16 via `set_compute_dtype`)."""
        return self.encoder.layers[0].self_attn.dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> None:
        """Attention and experts (nearly all the work) in `dtype`; the rest keeps its precision.

        Embeddings, norms, the residual stream, the parameter heads and the routing distances
        stay in float32 and the scaler and centroids in float64, so bfloat16 costs the
        forecasts as little precision as it can.
        """
        for layer in self.encoder.layers:
            layer.self_attn.to(dtype)
            layer.ffn.to(dtype)

    def use_grouped_experts(self) -> None:
        """Run every layer's experts as grouped products (no host round-trip per layer; for GPUs)."""
        for layer in self.encoder.layers:
            if isinstance(layer.ffn, MixtureOfExperts):
                layer.ffn.use_grouped_products()

    def scale(self, tokens: PackedTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaler statistics (B, L, 1) from the observed, non-predicted values."""
        if not self.config.scaling:
            ones = torch.ones_like(tokens.target[..., :1])
            return torch.zeros_like(ones), ones
        weight = tokens.observed & ~tokens.prediction_mask.unsqueeze(-1)
        return packed_std_scaler(tokens.target, weight, tokens.sample_id, tokens.variate_id)

    def standardise(self, target: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(target - loc) / scale, (B, L, M), in float32: input projections keep float32 (see set_compute_dtype)."""
        return (target - loc) / scale

    def embed_tokens(self, tokens: PackedTokens, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The family's input projection of every token: (B, L, D)."""
        raise NotImplementedError

    def head(self, hidden: torch.Tensor, patch_size: int, loc: torch.Tensor, scale: torch.Tensor):
        """The family's output from final representations (..., D) of tokens of one patch size and their scaler statistics."""
        raise NotImplementedError

    def encode(
        self,
        hidden: torch.Tensor,
        tokens: PackedTokens,
        query_positions: torch.Tensor | None = None,
        keep_kv: list | None = None,
    ) -> torch.Tensor:
        """All encoder layers, then the final norm: (B, L, D) -> (B, L, D).

        With `query_positions` (B, Q), the last layer computes only those tokens, whose
        outputs are all a forecast reads: (B, Q, D). With `keep_kv`, each layer's keys and
        values are appended to it (for cached decoding).
        """
        visible, same_variate = attention_structure(
            tokens.sample_id, tokens.time_id, tokens.variate_id, tokens.sample_id, tokens.time_id, tokens.variate_id,
            causal=self.causal,
        )
        keys = None
        if hidden.is_cpu:  # keys in whole blocks (see pad_keys), their padding hidden once for every layer
            keys = whole_key_blocks(visible.shape[-1])
            visible, same_variate = (F.pad(mask, (0, keys - mask.shape[-1]), value=False) for mask in (visible, same_variate))
        rotary = self.rotary.tables(tokens.time_id, self.dtype, bound=tokens.time_id.shape[1])
        query_rotary = rotary
        last = len(self.encoder.layers) - 1
        for index, layer in enumerate(self.encoder.layers):
            attention = layer.self_attn
            normed = layer.norm1(hidden)
            key, value = attention.key_value(normed, rotary, keys)
            if keep_kv is not None:
                keep_kv.append((key, value))
            if index == last and query_positions is not None:
                hidden, normed = gather_rows(hidden, query_positions), gather_rows(normed, query_positions)
                visible, same_variate = gather_rows(visible, query_positions), gather_rows(same_variate, query_positions)
                query_rotary = tuple(gather_rows(t.squeeze(1), query_positions).unsqueeze(1) for t in rotary)
            bias = attention.var_attn_bias(same_variate, visible, attention.dtype)
            hidden = hidden + attention.attend(attention.query(normed, query_rotary), key, value, bias)
            hidden = hidden + self.encoder.feed_forward(index, layer.norm2(hidden))
        return self.encoder.norm(hidden)

    def extend(
        self,
        hidden: torch.Tensor,  # (R, n, D) embedded new tokens, one row per sample path
        time_id: torch.Tensor,  # (R, n)
        variate_id: torch.Tensor,  # (R, n)
        cache: KeyValueCache,
    ) -> torch.Tensor:
        """Run new tokens (all at one time step) against the cache and append their keys/values.

        The new tokens see the visible prefix, every earlier suffix token and each other.
        Returns their final-normed representations (R, n, D).
        """
        paths = cache.paths_per_series
        rows, new = hidden.shape[0], hidden.shape[1]
        series = rows // paths
        # New tokens' time ids stay below the prefix length plus the future steps the store holds.
        rotary = self.rotary.tables(time_id, self.dtype, bound=cache.prefix_visible.shape[1] + cache.suffix_capacity)
        # Bias against the prefix depends only on the series and the new tokens' variates.
        prefix_same = variate_id[::paths].unsqueeze(-1) == cache.prefix_variate.unsqueeze(-2)  # (B, n, Lp)
        prefix_visible = cache.prefix_visible.unsqueeze(1).expand(-1, new, -1)
        if cache.suffix_variate is None:
            cache.suffix_variate = variate_id.new_full((rows, whole_key_blocks(cache.suffix_capacity)), -1)
        length = cache.suffix_length + new
        span = whole_key_blocks(length)  # the suffix keys each step attends over, filled ones first
        cache.suffix_variate[:, cache.suffix_length : length] = variate_id
        suffix_same = variate_id.unsqueeze(-1) == cache.suffix_variate[:, :span].unsqueeze(-2)  # (R, n, span)
        filled = torch.arange(span, device=hidden.device) < length
        suffix_visible = filled.expand_as(suffix_same)
        for index, layer in enumerate(self.encoder.layers):
            attention = layer.self_attn
            normed = layer.norm1(hidden)
            key, value = cache.append(index, *attention.key_value(normed, rotary))  # (R, H, span, E)
            query = attention.query(normed, rotary)  # (R, H, n, E)
            heads, width = query.shape[1], query.shape[-1]
            prefix_key, prefix_value = cache.prefix[index]  # (B, H, Lp, E)
            # Queries of all paths of a series share that series' prefix keys: one batched product.
            grouped = query.view(series, paths, heads, new, width).transpose(1, 2).reshape(series, heads, paths * new, width)
            prefix_scores = grouped @ prefix_key.transpose(-1, -2) / math.sqrt(width)  # (B, H, S*n, Lp)
            prefix_bias = attention.var_attn_bias(prefix_same, prefix_visible, query.dtype)  # (B, H, n, Lp)
            prefix_scores = prefix_scores.view(series, heads, paths, new, -1) + prefix_bias.unsqueeze(2)
            suffix_scores = query @ key.transpose(-1, -2) / math.sqrt(width)  # (R, H, n, span)
            suffix_scores = suffix_scores + attention.var_attn_bias(suffix_same, suffix_visible, query.dtype)
            prefix_scores = prefix_scores.permute(0, 2, 1, 3, 4).reshape(rows, heads, new, -1)
            weights = torch.softmax(torch.cat([prefix_scores, suffix_scores], -1), dim=-1, dtype=torch.float32).to(query.dtype)
            prefix_length = prefix_key.shape[2]
            prefix_weights = weights[..., :prefix_length].reshape(series, paths, heads, new, prefix_length)
            prefix_weights = prefix_weights.transpose(1, 2).reshape(series, heads, paths * new, prefix_length)
            out = (prefix_weights @ prefix_value).view(series, heads, paths, new, width).permute(0, 2, 1, 3, 4)
            out = out.reshape(rows, heads, new, width) + weights[..., prefix_length:] @ value
            hidden = hidden + rowwise(attention.out_proj, out.transpose(1, 2).flatten(-2))
            hidden = hidden + self.encoder.feed_forward(index, layer.norm2(hidden))
        cache.suffix_length = length
        return self.encoder.norm(hidden)

    def forward(self, tokens: PackedTokens, positions: torch.Tensor | None = None):
        """The family's output at every token (batch shape (B, L)), or with `positions` (B, Q) at those tokens only."""
        loc, scale = self.scale(tokens)
        return self.forward_scaled(tokens, loc, scale, positions)

    def forward_scaled(
        self,
        tokens: PackedTokens,
        loc: torch.Tensor,  # (B, L, 1) scaler statistics, computed by the caller
        scale: torch.Tensor,
        positions: torch.Tensor | None = None,
        keep_kv: list | None = None,
    ):
        """`forward` after the scaler, for callers that keep the statistics (cached decoding)."""
        hidden = self.embed_tokens(tokens, loc, scale)
        hidden = self.encode(hidden, tokens, query_positions=positions, keep_kv=keep_kv)
        if positions is not None:
            loc, scale = gather_rows(loc, positions), gather_rows(scale, positions)
        return self.head(hidden, tokens.patch_size, loc, scale)


class MixtureNetwork(MoiraiNetwork):
    """A network whose output is a four-component mixture per value (Moirai 1.x and Moirai-MoE)."""

    def __init__(self, config: Moirai1Config | MoiraiMoEConfig, experts: bool):
        super().__init__(config, experts)
        self.param_proj = ParamProjection(config.d_model, config.patch_sizes, config.components)

    def distribution(self, hidden: torch.Tensor, patch_size: int, loc: torch.Tensor, scale: torch.Tensor) -> MixtureDistribution:
        """Mixture per value from final representations: batch shape (..., M)."""
        logits, params = self.param_proj(hidden, patch_size)
        width = logits.shape[-2]
        params = [{name: t.float() for name, t in p.items()} for p in params]
        return MixtureDistribution(
            self.config.components,
            logits.float(),
            params,
            loc.expand(*loc.shape[:-1], width),
            scale.expand(*scale.shape[:-1], width),
        )

    def head(self, hidden: torch.Tensor, patch_size: int, loc: torch.Tensor, scale: torch.Tensor) -> MixtureDistribution:
        return self.distribution(hidden, patch_size, loc, scale)


class MoiraiMoE(MixtureNetwork):
    """Moirai-MoE: per-patch-size residual input projection, experts routed by centroid distance, causal attention."""

    def __init__(self, config: MoiraiMoEConfig):
        super().__init__(config, experts=True)
        sizes, width, dim = config.patch_sizes, config.max_patch_size, config.d_model
        self.in_proj = PatchSizeLinear(width, dim, sizes, mask="in")
        self.res_proj = PatchSizeLinear(width, dim, sizes, mask="in")
        self.feat_proj = PatchSizeLinear(dim, dim, sizes, mask=None)

    def embed(self, target: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, patch_size: int) -> torch.Tensor:
        """Standardise the values of tokens of one patch size and project each to d_model: (B, L, M) -> (B, L, D)."""
        scaled = self.standardise(target, loc, scale)
        hidden = self.feat_proj(F.silu(self.in_proj(scaled, patch_size)), patch_size)
        return hidden + self.res_proj(scaled, patch_size)

    def embed_tokens(self, tokens: PackedTokens, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens.target, loc, scale, tokens.patch_size)


class Moirai1(MixtureNetwork):
    """Moirai 1.0-R / 1.1-R: a masked encoder. Tokens to predict enter as a learned mask vector and
    every token of a sample sees every other, so one pass predicts all future patches at once."""

    causal = False

    def __init__(self, config: Moirai1Config):
        super().__init__(config, experts=False)
        self.mask_encoding = nn.Embedding(1, config.d_model)
        self.in_proj = PatchSizeLinear(config.max_patch_size, config.d_model, config.patch_sizes, mask="in")

    def embed_tokens(self, tokens: PackedTokens, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        hidden = self.in_proj(self.standardise(tokens.target, loc, scale), tokens.patch_size)
        return torch.where(tokens.prediction_mask.unsqueeze(-1), self.mask_encoding.weight[0].to(hidden.dtype), hidden)


class Moirai2(MoiraiNetwork):
    """Moirai 2.0-R: decoder-only with one patch size; each token's output holds the quantiles of the
    next `num_predict_token` patches, in the values' own units."""

    output_kind = "quantiles"

    def __init__(self, config: Moirai2Config):
        super().__init__(config, experts=False)
        size, dim = config.patch_size, config.d_model
        self.in_proj = ResidualBlock(2 * size, dim, dim)
        self.out_proj = ResidualBlock(dim, dim, config.num_predict_token * config.num_quantiles * size)

    def embed_tokens(self, tokens: PackedTokens, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        scaled = self.standardise(tokens.target, loc, scale)
        return self.in_proj(torch.cat([scaled, tokens.observed.to(scaled.dtype)], dim=-1))

    def head(self, hidden: torch.Tensor, patch_size: int, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Quantiles (..., num_predict_token, Q, P) of the patches after each token, in original units."""
        config = self.config
        out = self.out_proj(hidden).float() * scale + loc  # (..., NPT * Q * P)
        return out.unflatten(-1, (config.num_predict_token, config.num_quantiles, config.patch_size))


NETWORK_CLASSES: dict[str, type[MoiraiNetwork]] = {
    Moirai1Config.family: Moirai1,
    MoiraiMoEConfig.family: MoiraiMoE,
    Moirai2Config.family: Moirai2,
}


def build_network(config: FamilyConfig) -> MoiraiNetwork:
    """An (uninitialised) network of the family `config` describes."""
    return NETWORK_CLASSES[config.family](config)
