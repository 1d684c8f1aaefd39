"""How much work each forward pass gets, chosen per device, and how its chunks run.

A CPU is fastest when a pass's activations stay in its caches, so passes are cut into chunks
of a few thousand tokens. A GPU is fastest with a few very large passes: each small one costs
kernel launches and host round-trips that leave the card idle. Both numbers can be set by hand.

On a CPU with several compute threads, the chunks of a pass run side by side, one thread each,
instead of one after the other with every thread on each operation: a chunk's products are large
enough to keep a core busy, and its element-wise work and small products then no longer wait for
the other threads at every step (benchmarks/README.md: 11-17% faster on 2 cores). Each chunk is then
computed as with one thread, so forecasts do not depend on the number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, TypeVar

import torch

from moirai_cli.model.config import MoiraiMoEConfig

CPU_TOKEN_BUDGET = 8192  # tokens in flight on a CPU with one or two threads: measured fastest on 2-core machines
CPU_CHUNK_TOKENS = 4096  # tokens per chunk when chunks run side by side, one per thread (as fast as 8,192 on one)
CPU_MAX_TOKEN_BUDGET = 16 * CPU_CHUNK_TOKENS  # about 2 GiB of activations (small model); more threads get smaller chunks
CPU_BATCH_SIZE = 32
ACCELERATOR_BATCH_SIZE = 256
MAX_TOKEN_BUDGET = 1 << 20
ACTIVATION_FLOATS_PER_FEATURE = 8  # measured on the CPU: ~8 floats of activations per (d_model + d_ff) unit per token
MEMORY_SHARE = 0.4  # of the free accelerator memory, for one pass's activations


@dataclass(frozen=True)
class ExecutionPlan:
    """Series per batch, and tokens (rows x tokens per row) in flight at once in a forward pass: bounds activation memory."""

    batch_size: int
    token_budget: int


def bytes_per_token(config: MoiraiMoEConfig, dtype: torch.dtype = torch.float32) -> int:
    """Activation memory one token costs in a forward pass (estimate, with attention rows of up to 128 keys)."""
    floats = ACTIVATION_FLOATS_PER_FEATURE * (config.d_model + config.d_ff) + 3 * config.num_heads * 128
    return floats * max(torch.finfo(dtype).bits // 8, 4)


def plan_for(device: torch.device, config: MoiraiMoEConfig, dtype: torch.dtype = torch.float32) -> ExecutionPlan:
    """The default plan for `device`: cache-sized chunks on a CPU (one per thread), passes filling part of a GPU's free memory."""
    if device.type == "cpu":
        in_flight = CPU_CHUNK_TOKENS * chunk_workers(device)
        return ExecutionPlan(CPU_BATCH_SIZE, max(CPU_TOKEN_BUDGET, min(CPU_MAX_TOKEN_BUDGET, in_flight)))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:  # MPS and others: no free-memory query; a moderate size
        free = 8 << 30
    budget = int(free * MEMORY_SHARE) // bytes_per_token(config, dtype)
    budget = max(CPU_TOKEN_BUDGET, min(MAX_TOKEN_BUDGET, budget - budget % CPU_TOKEN_BUDGET))
    return ExecutionPlan(ACCELERATOR_BATCH_SIZE, budget)


Chunk = TypeVar("Chunk")


def chunk_workers(device: torch.device) -> int:
    """How many chunks of a pass run at once: one per compute thread on a CPU, one elsewhere."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


def row_chunks(rows: int, tokens_per_row: int, token_budget: int, workers: int = 1) -> list[slice]:
    """Row ranges for `workers` running side by side with at most `token_budget` tokens in flight
    (at least one row each), as even as possible.

    The number of chunks is rounded up to a multiple of `workers`, so that the workers finish together.
    """
    count = -(-rows // max(1, token_budget // workers // max(1, tokens_per_row)))
    count += -count % workers
    per_chunk = -(-rows // count)
    return [slice(start, start + per_chunk) for start in range(0, rows, per_chunk)]


def map_chunks(run: Callable[[slice], Chunk], chunks: list[slice], workers: int) -> list[Chunk]:
    """`run` on every chunk, in order; with several workers, side by side in threads of one compute thread each.

    The calling thread's grad and inference modes (thread-local in torch) apply in the workers too.
    """
    if workers <= 1 or len(chunks) <= 1:
        return [run(chunk) for chunk in chunks]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def in_callers_mode(chunk: slice) -> Chunk:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return run(chunk)

    with one_compute_thread():
        return list(_chunk_pool(workers).map(in_callers_mode, chunks))


@contextmanager
def one_compute_thread() -> Iterator[None]:
    """torch's operations use one thread each (the chunks are the parallelism) until the block ends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _chunk_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads, kept for the process (its threads keep their memory arenas warm).

    Keyed by process id too: a forked child (e.g. a Spark or Ray worker) gets pools of its own.
    """
    key = (os.getpid(), workers)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="moirai-chunk")
    return _POOLS[key]
