"""Building blocks of the Moirai networks (1.x, MoE and 2.0).

Parameter names and shapes follow the official checkpoints, so a state dict loads as is.
Shapes: B = sequences, L = tokens, D = d_model, M = max patch size, H = heads, E = head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moirai_cli.model.config import EXPERTS_PER_TOKEN, HEAD_DIM, NUM_EXPERTS

# --- Batch invariance on the CPU ---------------------------------------------------------------
# A series' forecast must not depend on which other series share its batch. Every operation here
# is row-wise, so in exact arithmetic it does not; CPU kernels round differently in two places:
# - BLAS switches to another kernel for products of fewer than MIN_ROWS rows;
# - vectorised elementwise kernels with a polynomial approximation (silu, softplus, sigmoid)
#   compute the last few elements of a tensor with scalar code;
# - in a batched product, a matrix whose output does not start on a 64-byte boundary is
#   computed by another code path.
# Products and those functions therefore see at least MIN_ROWS rows and whole blocks of
# ELEMENT_BLOCK elements (zero rows are appended, then dropped), and attention pads its keys to
# whole blocks of KEY_BLOCK so that every matrix of scores starts aligned.
MIN_ROWS = 16
ELEMENT_BLOCK = 64
KEY_BLOCK = 16


def whole_key_blocks(count: int) -> int:
    """`count` keys rounded up to whole KEY_BLOCKs, as attention and the key/value cache pad them."""
    return count + (-count % KEY_BLOCK)


def rowwise(fn, x: torch.Tensor, *row_args: torch.Tensor, widths: tuple[int, ...] = ()) -> torch.Tensor:
    """`fn(x, *row_args)` over the rows of x (..., D), each row's result independent of the others.

    `row_args` share x's leading dimensions (e.g. a patch size per token). `widths` are the
    last-dimension sizes of the tensors inside `fn` that an approximated elementwise function
    sees; their row count is made a multiple of whole element blocks. Off the CPU (where kernels
    are not batch-invariant anyway) `fn` runs as is.
    """
    x = x.contiguous()  # a strided view takes another BLAS path
    lead = x.shape[:-1]
    rows = lead.numel()
    step = math.lcm(1, *(ELEMENT_BLOCK // math.gcd(width, ELEMENT_BLOCK) for width in widths))
    padded = max(MIN_ROWS, rows)
    padded += -padded % step
    if padded == rows or not x.is_cpu:
        return fn(x, *row_args)

    def pad(t: torch.Tensor) -> torch.Tensor:
        flat = t.reshape(rows, *t.shape[len(lead) :])
        return torch.cat([flat, flat.new_zeros(padded - rows, *flat.shape[1:])])

    out = fn(pad(x), *(pad(t) for t in row_args))
    return out[:rows].reshape(*lead, out.shape[-1])


def pad_keys(key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys and values (..., Lk, E) and their bias (..., Lq, Lk) padded to whole KEY_BLOCKs of hidden keys
    (as they are, when they come in whole blocks)."""
    extra = whole_key_blocks(key.shape[-2]) - key.shape[-2]
    if not extra:
        return key, value, bias
    pad = (0, 0, 0, extra)
    return F.pad(key, pad), F.pad(value, pad), F.pad(bias, (0, extra), value=float("-inf"))


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension, with a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)).mul_(self.weight)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding on the first `width` dims of each head, interleaved pairs.

    Pair (2i, 2i+1) turns by angle position * base^(-2i/width); the other dims are untouched.
    The sine table holds -sin, sin for each pair (see `rotate`).
    """

    def __init__(self, width: int, base: int = 10000):
        super().__init__()
        self.width = width
        inv_freq = 1.0 / torch.pow(base, torch.arange(0, width, 2, dtype=torch.float) / width)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cos = self._sin = None

    def tables(self, position: torch.Tensor, dtype: torch.dtype, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for every token, (B, 1, L, width), computed in float32 then cast.

        `bound` is an upper bound on the positions known on the host, so the table is sized
        without reading the positions back from the device.
        """
        if self._cos is None or self._cos.shape[0] < bound or self._cos.device != self.inv_freq.device:
            size = bound + (-bound % 512)  # whole blocks: every entry is computed alike (see rowwise)
            angles = torch.outer(torch.arange(size, dtype=torch.float, device=self.inv_freq.device), self.inv_freq)
            angles = angles.repeat_interleave(2, dim=-1)  # (size, width)
            signs = torch.tensor([-1.0, 1.0], device=angles.device).repeat(self.width // 2)
            self._cos, self._sin = torch.cos(angles), torch.sin(angles) * signs
        return self._cos[position].unsqueeze(1).to(dtype), self._sin[position].unsqueeze(1).to(dtype)


def training(x: torch.Tensor) -> bool:
    """Whether gradients flow through `x` (fine-tuning): writes into preallocated tensors (`out=`) must then be avoided."""
    return torch.is_grad_enabled() and x.requires_grad


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Apply rotary tables (B, 1, L, w) to the first w dims of x (B, H, L, E), into `out` (by default a new tensor).

    Pair (a, b) becomes (a cos - b sin, b cos + a sin): the pairs swapped, times the signed sine table.
    While training (gradients on), the same arithmetic without writing into `out`, which autograd cannot follow.
    """
    width = cos.shape[-1]
    rotated = x[..., :width]
    pairs = rotated.unflatten(-1, (-1, 2))
    swapped = torch.stack((pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2).mul_(sin)
    if training(x):
        result = torch.cat((rotated * cos + swapped, x[..., width:]), dim=-1)
        return result if out is None else out.copy_(result)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    torch.mul(rotated, cos, out=out[..., :width]).add_(swapped)
    out[..., width:] = x[..., width:]
    return out


class VariateBias(nn.Module):
    """Per-head additive attention bias: one value for the same variate, one for another."""

    def __init__(self, num_heads: int):
        super().__init__()
        self.emb = nn.Embedding(2, num_heads)

    def forward(self, same_variate: torch.Tensor, visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, Lq, Lk) bool masks -> (B, H, Lq, Lk) bias, -inf where the key is hidden."""
        other, same = self.emb.weight[0].to(dtype), self.emb.weight[1].to(dtype)  # (H,)
        bias = torch.where(same_variate.unsqueeze(1), same[:, None, None], other[:, None, None])
        return bias.masked_fill(~visible.unsqueeze(1), float("-inf"))


class Attention(nn.Module):
    """Multi-head attention with per-head q/k RMSNorm, rotary time and a variate bias."""

    def __init__(self, d_model: int):
        super().__init__()
        self.num_heads = d_model // HEAD_DIM
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.q_norm = RMSNorm(HEAD_DIM)
        self.k_norm = RMSNorm(HEAD_DIM)
        self.var_attn_bias = VariateBias(self.num_heads)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype attention computes in (its weights'); inputs are cast to it."""
        return self.q_proj.weight.dtype

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, H, L, E)."""
        return x.unflatten(-1, (self.num_heads, HEAD_DIM)).transpose(1, 2)

    def query(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Normed, rotated queries (B, H, L, E)."""
        return rotate(self.q_norm(self.heads(rowwise(self.q_proj, x.to(self.dtype)))), *rotary)

    def key_value(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normed, rotated keys and values, each (B, H, L, E); with `length`, written into
        tensors of `length` >= L keys whose last ones are zeros (whole key blocks, see pad_keys)."""
        x = x.to(self.dtype)
        key = self.k_norm(self.heads(rowwise(self.k_proj, x)))
        value = self.heads(rowwise(self.v_proj, x))
        if length is None:
            return rotate(key, *rotary), value
        count = value.shape[2]
        if training(key) or training(value):  # the same values, by operations autograd follows
            return F.pad(rotate(key, *rotary), (0, 0, 0, length - count)), F.pad(value, (0, 0, 0, length - count))
        keys, values = (t.new_empty(*t.shape[:2], length, t.shape[3]) for t in (key, value))
        for padded in (keys, values):
            padded[:, :, count:] = 0
        rotate(key, *rotary, out=keys[:, :, :count])
        values[:, :, :count] = value
        return keys, values

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Softmax attention and the output projection: (B, H, Lq, E) -> (B, Lq, D).

        On the CPU as plain products and a softmax: torch's fused CPU kernel splits short
        queries across threads by batch size, so a row's result would depend on the others.
        """
        if query.is_cpu:
            key, value, bias = pad_keys(key, value, bias)
            scores = query @ key.transpose(-1, -2) / math.sqrt(HEAD_DIM) + bias
            out = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1 / math.sqrt(HEAD_DIM))
        return rowwise(self.out_proj, out.transpose(1, 2).flatten(-2))


class GatedFeedForward(nn.Module):
    """Gated (SwiGLU) feed-forward block without biases: one MoE expert, or a dense layer's whole feed-forward."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=False)
        self.fc_gate = nn.Linear(d_model, d_ff, bias=False)
        self.fc2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., D) in any float dtype -> (..., D) in the weights' dtype."""
        return rowwise(self._swiglu, x.to(self.fc1.weight.dtype), widths=(self.fc1.out_features,))

    def _swiglu(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.fc_gate(x), inplace=True).mul_(self.fc1(x))  # in place: inference only
        return self.fc2(hidden)


def centroid_distance(x: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, K) from tokens x (N, D) to centroids (K, D).

    The same arithmetic as torch.cdist's matrix-product path, which the checkpoints were
    routed with: one product of [-2x, |x|^2, 1] and [c, 1, |c|^2], clamped, square-rooted.
    Near-ties between experts resolve as they do there. Unlike cdist on a batch, the
    centroids are not copied once per sequence.
    """
    x_norm = x.pow(2).sum(-1, keepdim=True)
    c_norm = centroid.pow(2).sum(-1, keepdim=True)
    x_padded = torch.cat([x * -2, x_norm, torch.ones_like(x_norm)], dim=-1)
    c_padded = torch.cat([centroid, torch.ones_like(c_norm), c_norm], dim=-1)
    return rowwise(lambda rows: rows @ c_padded.T, x_padded).clamp_min_(1e-30).sqrt_()


class MixtureOfExperts(nn.Module):
    """Token-wise mixture of experts routed by distance to fixed centroids.

    Each token goes to the two experts whose centroids are *farthest* (largest Euclidean
    distance), weighted by a softmax over those two distances, as the checkpoints were trained.
    Distances are computed in float32 at least, so a bfloat16 network routes as a float32 one
    except on near-ties.
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.experts = nn.ModuleList(GatedFeedForward(d_model, d_ff) for _ in range(NUM_EXPERTS))
        self.stacked: dict[str, torch.Tensor] | None = None  # set by use_grouped_products

    def use_grouped_products(self) -> None:
        """Run the experts as three grouped products over all tokens instead of a loop over experts.

        The loop needs each expert's token count on the host, a device round-trip per layer;
        grouped products take the group boundaries as a device tensor. Each weight kind of the
        experts is stacked into one tensor, and the experts' parameters become views of it.
        """
        self.stacked = {}
        for name in ("fc_gate", "fc1", "fc2"):
            stacked = torch.stack([getattr(expert, name).weight.detach() for expert in self.experts])  # (E, out, in)
            for index, expert in enumerate(self.experts):
                getattr(expert, name).weight = nn.Parameter(stacked[index], requires_grad=False)
            self.stacked[name] = stacked.transpose(1, 2)  # (E, in, out)

    def forward(self, x: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D); centroid: (NUM_EXPERTS, D) in float64."""
        flat = x.reshape(-1, x.shape[-1])  # (N, D)
        route_dtype = torch.promote_types(x.dtype, torch.float32)
        distance = centroid_distance(flat.to(route_dtype), centroid.to(device=x.device, dtype=route_dtype))  # (N, E)
        top_distance, top_expert = torch.topk(distance, EXPERTS_PER_TOKEN)
        weights = torch.softmax(top_distance, dim=1, dtype=torch.float).to(x.dtype)  # (N, 2)

        # Sort the (token, slot) pairs by expert: each expert then reads one contiguous block.
        experts = top_expert.flatten()  # (2N,)
        order = torch.argsort(experts, stable=True)
        grouped = flat.index_select(0, order // EXPERTS_PER_TOKEN).to(self.experts[0].fc1.weight.dtype)  # (2N, D)
        slot_weights = weights.flatten()[order].unsqueeze(-1)  # (2N, 1): the routing weight of each sorted row
        # Where each expert's block ends, from the sorted ids (static shapes: no read-back).
        ends = torch.searchsorted(experts[order], torch.arange(NUM_EXPERTS, device=x.device), right=True)
        if self.stacked is not None:
            outputs = self.grouped_experts(grouped, ends.to(torch.int32)).to(x.dtype).mul_(slot_weights)
        else:
            # Each expert's block is weighted, in x's dtype, as it is written (while it is still in cache).
            outputs = grouped.new_empty(grouped.shape, dtype=x.dtype)
            start = 0
            for expert, count in zip(self.experts, torch.diff(ends, prepend=ends.new_zeros(1)).tolist()):
                if count:
                    block = slice(start, start + count)
                    mapped = expert(grouped[block])
                    if training(mapped):
                        outputs[block] = mapped * slot_weights[block]
                    else:
                        torch.mul(mapped, slot_weights[block], out=outputs[block])
                start += count
        # Back to (token, slot) order with a gather (several times faster than scattering into place).
        slot_of = torch.empty_like(order)
        slot_of[order] = torch.arange(order.numel(), device=order.device)
        per_slot = outputs.index_select(0, slot_of).view(-1, EXPERTS_PER_TOKEN, flat.shape[-1])  # (N, 2, D)
        # Two terms in either order give the same float sum, so this equals expert-by-expert accumulation.
        return (per_slot[:, 0] + per_slot[:, 1]).view_as(x)

    def grouped_experts(self, rows: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """Every expert on its block of rows (2N, D), blocks ending at `ends` (E,): three grouped products."""
        weight = self.stacked
        gate = torch._grouped_mm(rows, weight["fc_gate"], offs=ends)  # (2N, d_ff)
        hidden = F.silu(gate, inplace=True).mul_(torch._grouped_mm(rows, weight["fc1"], offs=ends))
        return torch._grouped_mm(hidden, weight["fc2"], offs=ends)


def grouped_products_work(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch runs the grouped products of `use_grouped_products` on `device` in `dtype`."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        rows = torch.ones(32, 64, device=device, dtype=dtype)
        weight = torch.ones(2, 64, 32, device=device, dtype=dtype)
        out = torch._grouped_mm(rows, weight, offs=torch.tensor([16, 32], device=device, dtype=torch.int32))
        return bool(out[0, 0] == 64)
    except (RuntimeError, NotImplementedError, TypeError):
        return False


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: attention then a feed-forward (mixture of experts or dense), both residual."""

    def __init__(self, d_model: int, d_ff: int, experts: bool):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = Attention(d_model)
        self.norm2 = RMSNorm(d_model)
        self.ffn = MixtureOfExperts(d_model, d_ff) if experts else GatedFeedForward(d_model, d_ff)


class Encoder(nn.Module):
    """The stack of layers, the MoE routing centroids (MoE only) and the final norm."""

    def __init__(self, d_model: int, d_ff: int, num_layers: int, experts: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, d_ff, experts) for _ in range(num_layers))
        centroid = torch.zeros(num_layers, NUM_EXPERTS, d_model, dtype=torch.float64) if experts else None
        self.register_buffer("centroid", centroid)
        self.norm = RMSNorm(d_model)

    def feed_forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Layer `index`'s feed-forward of its normed input x (B, L, D); experts route by that layer's centroids."""
        ffn = self.layers[index].ffn
        return ffn(x) if self.centroid is None else ffn(x, self.centroid[index])


class ResidualBlock(nn.Module):
    """Two-layer perceptron with a linear shortcut, all with biases: out(silu(hidden(x))) + residual(x).

    Moirai 2.0 reads its input patches and writes its quantiles through one each.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.hidden_layer = nn.Linear(in_features, hidden_features)
        self.output_layer = nn.Linear(hidden_features, out_features)
        self.residual_layer = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rowwise(self._block, x, widths=(self.hidden_layer.out_features,))

    def _block(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(F.silu(self.hidden_layer(x))) + self.residual_layer(x)


class PatchSizeLinear(nn.Module):
    """A linear map with one weight per patch size; tokens use the weight of their size.

    `in_mask`/`out_mask` restrict the weight to the first `factor * P` inputs or outputs of
    size P, as the checkpoints store every size in a tensor wide enough for the largest.
    A call maps tokens of one size (a batch holds one), with that size's weight only.
    """

    def __init__(self, in_features: int, out_features: int, patch_sizes: tuple[int, ...], mask: str | None, factor: int = 1):
        super().__init__()
        self.patch_sizes = patch_sizes
        self.weight = nn.Parameter(torch.zeros(len(patch_sizes), out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(len(patch_sizes), out_features))
        keep = torch.ones(len(patch_sizes), out_features, in_features, dtype=torch.bool)
        for index, size in enumerate(patch_sizes):
            if mask == "in":
                keep[index, :, factor * size :] = False
            elif mask == "out":
                keep[index, factor * size :, :] = False
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, x: torch.Tensor, patch_size: int) -> torch.Tensor:
        """x: (..., in), every token of size `patch_size` -> (..., out)."""
        if patch_size not in self.patch_sizes:
            raise ValueError(f"patch size {patch_size} is not one of {list(self.patch_sizes)}")
        index = self.patch_sizes.index(patch_size)
        weight, bias = self.weight[index] * self.keep[index], self.bias[index]
        return rowwise(lambda rows: F.linear(rows, weight, bias), x)


class ParamProjection(nn.Module):
    """Heads from token representations to mixture logits and component parameters."""

    def __init__(self, d_model: int, patch_sizes: tuple[int, ...], components):
        super().__init__()
        max_patch = max(patch_sizes)
        self.max_patch = max_patch
        self.components = components
        self.proj = nn.Module()
        self.proj.weights_logits = PatchSizeLinear(d_model, len(components) * max_patch, patch_sizes, "out", len(components))
        self.proj.components = nn.ModuleList()
        for spec in components:
            heads = nn.ModuleDict({name: PatchSizeLinear(d_model, max_patch, patch_sizes, "out") for name in spec.params})
            self.proj.components.append(heads)

    def unflatten(self, out: torch.Tensor, width: int) -> torch.Tensor:
        """(..., width * M) read row-major as (width, M) -> (..., M, width)."""
        return out.unflatten(-1, (width, self.max_patch)).transpose(-1, -2)

    def forward(self, x: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Raw logits (..., M, K) and domain-mapped parameters, each (..., M), of tokens of size `patch_size`."""
        num_components, width = len(self.components), self.max_patch
        widths = (num_components * width, width)
        outputs = rowwise(lambda rows: self._project(rows, patch_size), x, widths=widths)  # (..., K*M + one M per parameter)
        logits = self.unflatten(outputs[..., : num_components * width], num_components)
        params, start = [], num_components * width
        for spec in self.components:
            params.append({})
            for name in spec.params:
                params[-1][name] = outputs[..., start : start + width]
                start += width
        return logits, params

    def _project(self, x: torch.Tensor, patch_size: int) -> torch.Tensor:
        """Every head's output side by side: raw logits, then each parameter mapped to its domain."""
        outputs = [self.proj.weights_logits(x, patch_size)]
        for spec, heads in zip(self.components, self.proj.components):
            outputs.extend(domain_map(name, heads[name](x, patch_size)) for name in spec.params)
        return torch.cat(outputs, dim=-1)


def domain_map(name: str, raw: torch.Tensor) -> torch.Tensor:
    """Map an unconstrained head output to its parameter's domain."""
    eps = torch.finfo(raw.dtype).eps
    if name == "df":
        return 2.0 + F.softplus(raw)
    if name == "total_count":
        return F.softplus(raw)
    if name == "scale":
        return F.softplus(raw).clamp_min(eps)
    return raw  # loc, logits
