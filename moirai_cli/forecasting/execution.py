"""How much work each forward pass gets, chosen per device.

A CPU is fastest when a pass's activations stay in its caches, so passes are cut into chunks
of a few thousand tokens. A GPU is fastest with a few very large passes: each small one costs
kernel launches and host round-trips that leave the card idle. Both numbers can be set by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moirai_cli.model.config import MoiraiMoEConfig

CPU_TOKEN_BUDGET = 8192  # tokens per forward chunk on a CPU: measured fastest on 2-core machines
CPU_BATCH_SIZE = 32
ACCELERATOR_BATCH_SIZE = 256
MAX_TOKEN_BUDGET = 1 << 20
ACTIVATION_FLOATS_PER_FEATURE = 8  # measured on the CPU: ~8 floats of activations per (d_model + d_ff) unit per token
MEMORY_SHARE = 0.4  # of the free accelerator memory, for one pass's activations


@dataclass(frozen=True)
class ExecutionPlan:
    """Series per batch, and tokens (rows x tokens per row) per forward pass: bounds activation memory."""

    batch_size: int
    token_budget: int


def bytes_per_token(config: MoiraiMoEConfig, dtype: torch.dtype = torch.float32) -> int:
    """Activation memory one token costs in a forward pass (estimate, with attention rows of up to 128 keys)."""
    floats = ACTIVATION_FLOATS_PER_FEATURE * (config.d_model + config.d_ff) + 3 * config.num_heads * 128
    return floats * max(torch.finfo(dtype).bits // 8, 4)


def plan_for(device: torch.device, config: MoiraiMoEConfig, dtype: torch.dtype = torch.float32) -> ExecutionPlan:
    """The default plan for `device`: cache-sized chunks on a CPU, passes filling part of a GPU's free memory."""
    if device.type == "cpu":
        return ExecutionPlan(CPU_BATCH_SIZE, CPU_TOKEN_BUDGET)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:  # MPS and others: no free-memory query; a moderate size
        free = 8 << 30
    budget = int(free * MEMORY_SHARE) // bytes_per_token(config, dtype)
    budget = max(CPU_TOKEN_BUDGET, min(MAX_TOKEN_BUDGET, budget - budget % CPU_TOKEN_BUDGET))
    return ExecutionPlan(ACCELERATOR_BATCH_SIZE, budget)
