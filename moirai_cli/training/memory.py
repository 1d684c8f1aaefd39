"""How much memory a training step needs, checked before a run starts, in the style of forecasting/memory.py.

A step holds, besides the network's weights (a float32 training copy; on a CPU also the base
checkpoint's, read in from its mapped file as they are copied):
- for each trainable parameter its gradient, AdamW's two moments, the best step's copy, and the
  optimiser's temporary (its update is computed over all parameters at once);
- the activations the backward pass reads: per encoder layer and token, about ACTIVATION_FEATURES
  floats per model dimension and FEED_FORWARD_FEATURES per feed-forward unit (twice for Moirai-MoE,
  whose tokens each visit two experts), and the attention's bias and weights, ATTENTION_COPIES floats
  per (row, head, query, key);
- the output head's values at the scored tokens (all tokens for Moirai 1.x) and the loss's
  intermediates, HEAD_COPIES floats per head output.

The constants were measured on the CPU (benchmarks/finetune_benchmark.py compares the estimate with
peak memory). A run that cannot fit is refused with the largest batch size, or context length,
that would.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from moirai_cli.errors import InputError
from moirai_cli.forecasting.memory import ALLOCATOR_SLACK, FIRST_PASS_OVERHEAD, available_bytes, format_bytes, largest_fitting
from moirai_cli.model.config import MOIRAI_1, MOIRAI_2, MOIRAI_MOE, EXPERTS_PER_TOKEN, FamilyConfig
from moirai_cli.model.layers import whole_key_blocks

ACTIVATION_FEATURES = 28  # floats per token and model dimension kept for the backward pass, per layer
FEED_FORWARD_FEATURES = 5  # floats per token and feed-forward unit, per layer and expert visited
ATTENTION_COPIES = 4  # floats per (row, head, query, key): bias, padded bias, weights, their gradient
HEAD_COPIES = 12  # floats per head output value: projections, domain maps, log-probabilities and their gradients
STATE_COPIES = 5  # per trainable parameter: gradient, two AdamW moments, the best step's copy, the update's temporary


@dataclass(frozen=True)
class TrainingRequest:
    """The sizes that drive a training step's memory."""

    batch_size: int  # windows per step
    context_length: int
    horizon: int
    patch_size: int
    variates: int  # target variates
    covariates: int  # known and past covariates (one token per patch each)
    parameters: int  # all weights of the network
    trainable: int  # the weights that train (with the adapters' in LoRA mode)

    @property
    def tokens(self) -> int:
        """Tokens per window: every variate and covariate over the context, the targets over the horizon too."""
        context = math.ceil(self.context_length / self.patch_size) + 1  # +1: a patch split by alignment
        future = math.ceil(self.horizon / self.patch_size)
        return (self.variates + self.covariates) * (context + future)


def training_bytes(config: FamilyConfig, request: TrainingRequest, device: torch.device = torch.device("cpu")) -> int:
    """Bytes a training step needs at its peak on `device` (the host's memory for a CPU)."""
    rows, tokens = request.batch_size, request.tokens
    experts = EXPERTS_PER_TOKEN if config.family == MOIRAI_MOE else 1
    per_token = ACTIVATION_FEATURES * config.d_model + FEED_FORWARD_FEATURES * config.d_ff * experts
    attention = ATTENTION_COPIES * config.num_heads * tokens * whole_key_blocks(tokens)
    activations = config.num_layers * rows * (tokens * per_token + attention) * 4
    future = request.variates * math.ceil(request.horizon / request.patch_size)
    if config.family == MOIRAI_2:
        head = rows * future * config.num_predict_token * config.num_quantiles * config.patch_size
    else:
        scored = tokens if config.family == MOIRAI_1 else future
        head = rows * scored * config.max_patch_size * (len(config.components) + 8)
    activations += HEAD_COPIES * head * 4
    copies = 2 if device.type == "cpu" else 1  # the training copy; on a CPU the base's mapped weights too
    weights = copies * 4 * request.parameters + STATE_COPIES * 4 * request.trainable
    return FIRST_PASS_OVERHEAD + weights + int(ALLOCATOR_SLACK * activations)


def check_training_fits(config: FamilyConfig, request: TrainingRequest, device: torch.device) -> None:
    """InputError, before a run starts, when its training step cannot fit in memory; says what would."""
    have, _ = available_bytes(device)
    need = training_bytes(config, request, device)
    if have is None or need <= have:
        return

    def fits(candidate: TrainingRequest) -> bool:
        return training_bytes(config, candidate, device) <= have

    hints = []
    batch = largest_fitting(lambda b: fits(dataclasses.replace(request, batch_size=b)), request.batch_size)
    if batch:
        hints.append(f"a batch size of at most {batch} fits")
    context = largest_fitting(lambda c: fits(dataclasses.replace(request, context_length=c)), request.context_length)
    if context:
        hints.append(f"{'or ' if hints else ''}a context length of at most {context}")
    advice = ", ".join(hints) if hints else "use the lora or head mode, or a smaller model"
    where = "memory" if device.type == "cpu" else f"{device.type} memory"
    raise InputError(
        f"fine-tuning with batches of {request.batch_size} windows of {request.context_length} + {request.horizon} steps "
        f"needs about {format_bytes(need)} of {where}, {format_bytes(have)} available; {advice}"
    )
