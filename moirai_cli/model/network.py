"""The Moirai-MoE network: packed tokens in, a predictive distribution per value out."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from moirai_cli.model.config import HEAD_DIM, MoiraiMoEConfig
from moirai_cli.model.distribution import MixtureDistribution
from moirai_cli.model.layers import Encoder, ParamProjection, PatchSizeLinear, RotaryEmbedding

MINIMUM_VARIANCE = 1e-5


@dataclass
class PackedTokens:
    """A batch of token sequences; every token is one patch of one variate of one series.

    Values sit left-aligned in rows of width M (the largest patch size). Tokens with
    sample_id 0 are padding and never interact with real tokens.
    """

    target: torch.Tensor  # (B, L, M) float
    observed: torch.Tensor  # (B, L, M) bool
    sample_id: torch.Tensor  # (B, L) long
    time_id: torch.Tensor  # (B, L) long
    variate_id: torch.Tensor  # (B, L) long
    prediction_mask: torch.Tensor  # (B, L) bool: value still to be forecast
    patch_size: torch.Tensor  # (B, L) long

    def map(self, fn) -> "PackedTokens":
        """Apply `fn` to every field (indexing, repeating, moving to a device)."""
        return PackedTokens(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str) -> "PackedTokens":
        return self.map(lambda t: t.to(device))


def packed_std_scaler(
    target: torch.Tensor,  # (B, L, M)
    weight: torch.Tensor,  # (B, L, M) bool: observed and not to be predicted
    sample_id: torch.Tensor,  # (B, L)
    variate_id: torch.Tensor,  # (B, L)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per (sequence, sample_id, variate_id) group, (B, L, 1) each.

    Computed in float64 with a scatter over groups (linear in tokens); the variance uses
    Bessel's correction, a zero denominator is replaced by one, padding gets loc 0, scale 1.
    """
    batch, length, _ = target.shape
    target = target.double()
    weight = weight.double()
    num_variates = int(variate_id.max()) + 1
    groups_per_row = (int(sample_id.max()) + 1) * num_variates
    group = sample_id * num_variates + variate_id + torch.arange(batch, device=target.device).unsqueeze(1) * groups_per_row
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which keys each query sees (same sample, not later in time) and which share its variate."""
    visible = (query_sample.unsqueeze(-1) == key_sample.unsqueeze(-2)) & (
        key_time.unsqueeze(-2) <= query_time.unsqueeze(-1)
    )
    same_variate = query_variate.unsqueeze(-1) == key_variate.unsqueeze(-2)
    return visible, same_variate


def attention_bias(layer_bias: nn.Module, visible: torch.Tensor, same_variate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, Lq, Lk) additive bias: the layer's variate bias, -inf where a key is hidden."""
    bias = layer_bias(same_variate).to(dtype)
    return bias.masked_fill(~visible.unsqueeze(1), float("-inf"))


class MoiraiMoE(nn.Module):
    """Scaler, patch embedding, causal any-variate encoder with MoE, mixture head."""

    def __init__(self, config: MoiraiMoEConfig):
        super().__init__()
        self.config = config
        sizes, width, dim = config.patch_sizes, config.max_patch_size, config.d_model
        self.in_proj = PatchSizeLinear(width, dim, sizes, mask="in")
        self.res_proj = PatchSizeLinear(width, dim, sizes, mask="in")
        self.feat_proj = PatchSizeLinear(dim, dim, sizes, mask=None)
        self.encoder = Encoder(dim, config.d_ff, config.num_layers)
        self.param_proj = ParamProjection(dim, sizes, config.components)
        self.rotary = RotaryEmbedding(HEAD_DIM // 2)

    @property
    def dtype(self) -> torch.dtype:
        return self.in_proj.weight.dtype

    def scale(self, tokens: PackedTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaler statistics (B, L, 1) from the observed, non-predicted values."""
        if not self.config.scaling:
            ones = torch.ones_like(tokens.target[..., :1])
            return torch.zeros_like(ones), ones
        weight = tokens.observed & ~tokens.prediction_mask.unsqueeze(-1)
        return packed_std_scaler(tokens.target, weight, tokens.sample_id, tokens.variate_id)

    def embed(self, target: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, patch_size: torch.Tensor) -> torch.Tensor:
        """Standardise the values and project each token to d_model: (B, L, M) -> (B, L, D)."""
        scaled = ((target - loc) / scale).to(self.dtype)
        hidden = self.feat_proj(F.silu(self.in_proj(scaled, patch_size)), patch_size)
        return hidden + self.res_proj(scaled, patch_size)

    def encode(self, hidden: torch.Tensor, tokens: PackedTokens) -> torch.Tensor:
        """All encoder layers over full sequences, then the final norm: (B, L, D)."""
        visible, same_variate = attention_structure(
            tokens.sample_id, tokens.time_id, tokens.variate_id, tokens.sample_id, tokens.time_id, tokens.variate_id
        )
        for index, layer in enumerate(self.encoder.layers):
            bias = attention_bias(layer.self_attn.var_attn_bias, visible, same_variate, hidden.dtype)
            hidden = hidden + layer.self_attn(layer.norm1(hidden), tokens.time_id, self.rotary, bias)
            hidden = hidden + layer.ffn(layer.norm2(hidden), self.encoder.centroid[index])
        return self.encoder.norm(hidden)

    def distribution(self, hidden: torch.Tensor, patch_size: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> MixtureDistribution:
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

    def forward(self, tokens: PackedTokens) -> MixtureDistribution:
        """The predictive distribution of every value of every token, batch shape (B, L, M)."""
        loc, scale = self.scale(tokens)
        hidden = self.embed(tokens.target, loc, scale, tokens.patch_size)
        hidden = self.encode(hidden, tokens)
        return self.distribution(hidden, tokens.patch_size, loc, scale)
