"""Low-rank adapters (LoRA) on the encoder's linear layers, merged into the weights when a run is saved.

Each linear layer of every encoder layer (attention's q, k, v and output projections, the
feed-forward's three products, every Moirai-MoE expert's included) computes
W x + (alpha / rank) B A x, with W frozen, A (rank x in) drawn at random and B (out x rank)
starting at zero, so training starts from the base model exactly. Only A and B train.

Saved checkpoints hold W + (alpha / rank) B A in place of W: a plain checkpoint of the family's
layout that every loader (moirai-cli's, uni2ts's) reads without knowing about adapters, and that
forecasts at the base model's speed. The adapters themselves are not kept.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from moirai_cli.model.checkpoint import skipped_weight_init


class LoRALinear(nn.Linear):
    """An nn.Linear (same weight, bias and state-dict names) plus a trainable low-rank update."""

    @classmethod
    def wrapping(cls, layer: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> "LoRALinear":
        """An adapter around `layer`'s parameters (shared, not copied); A drawn from `generator`, B zero."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight, new.bias = layer.weight, layer.bias
        new.scaling = alpha / rank
        bound = 1 / math.sqrt(layer.in_features)  # nn.Linear's own initial range, as LoRA's A uses
        a = (torch.rand(rank, layer.in_features, generator=generator) * 2 - 1) * bound
        new.lora_A = nn.Parameter(a.to(device=layer.weight.device, dtype=layer.weight.dtype))
        new.lora_B = nn.Parameter(torch.zeros(layer.out_features, rank, device=layer.weight.device, dtype=layer.weight.dtype))
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B)
        return nn.functional.linear(x, self.weight, self.bias) + self.scaling * update

    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / rank) B A, the weight of a plain layer computing what this one computes."""
        return self.weight + self.scaling * (self.lora_B @ self.lora_A)


def add_adapters(model: nn.Module, rank: int, alpha: float, seed: int) -> int:
    """Wrap every nn.Linear inside the model's encoder layers in a LoRALinear; returns how many.

    The adapters are created in a fixed order from one generator seeded with `seed`, so a run is repeatable.
    """
    generator = torch.Generator().manual_seed(seed)
    wrapped = 0
    for parent in list(model.encoder.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, LoRALinear.wrapping(child, rank, alpha, generator))
                wrapped += 1
    return wrapped


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every adapter merged into the weight it adapts (names as without adapters).

    Only the adapted weights are new tensors; every other entry is the model's own.
    """
    state = model.state_dict()
    for path, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{path}.weight"] = module.merged_weight()
            del state[f"{path}.lora_A"], state[f"{path}.lora_B"]
    return state


@torch.no_grad()
def merge_adapters(model: nn.Module) -> int:
    """Replace every LoRALinear by a plain nn.Linear holding its merged weight; returns how many."""
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                with skipped_weight_init():  # no draw from torch's global generator: its values are overwritten
                    plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                      device=child.weight.device, dtype=child.weight.dtype)
                plain.weight.copy_(child.merged_weight())
                if child.bias is not None:
                    plain.bias.copy_(child.bias)
                setattr(parent, name, plain)
                merged += 1
    return merged
