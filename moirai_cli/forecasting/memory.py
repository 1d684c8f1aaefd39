"""How much memory a forecast needs, from the tensors the decoders allocate, and how much the machine has.

`predict` checks a request against the memory available before it allocates anything, so that a
horizon of a million steps is a one-line refusal saying what would fit instead of a run the kernel
kills. The estimate follows decoding.py and network.py:

- exact decoding copies each series' tokens once per sample path (rows R = batch x samples), twice
  while later tokens are dropped; the network then runs over chunks holding about `token_budget` tokens
  in all (the device's plan; on a CPU, one chunk per thread side by side, execution.py), whose attention
  bias and scores are (rows, heads, L, L) float32 and masks (rows, L, L);
- cached decoding runs the context once per series, keeps its keys/values, and allocates a key/value
  store of (R, heads, future tokens, head size) per layer for the drawn patches; each step attends over
  whole blocks of KEY_BLOCK tokens (16) per path, read from that store without copying;
- Moirai 1.x draws every future patch from one pass (no copies per path); Moirai 2.0 feeds back one
  path per quantile level, like exact decoding with as many rows per series as levels;
- both hold the samples (N, S, H, V) of the whole call on the host, and a float64 copy to map them back
  or take quantiles;
- the weights count once more: they are mapped from the checkpoint file and read in (or copied into
  kernel workspaces) by the first passes, after the check.

The terms that grow with the request are the real tensor shapes; `benchmarks/memory_estimate.py`
compares the whole estimate with measured peaks. The check refuses only what exceeds the memory
available, so its precision matters for large requests, where those terms dominate.
"""

from __future__ import annotations

import math
import os
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from moirai_cli.errors import InputError
from moirai_cli.forecasting.execution import CPU_TOKEN_BUDGET
from moirai_cli.model.config import MOIRAI_1, MOIRAI_2, MOIRAI_MOE, NUM_EXPERTS, FamilyConfig
from moirai_cli.model.layers import whole_key_blocks

TOKEN_FIELD_BYTES = 8 * 3 + 1  # sample_id, time_id, variate_id (int64), prediction_mask (a batch's patch size is one number)
VALUE_BYTES = 4 + 1  # target (float32) and observed (bool), per value of a token's patch
ACTIVATION_COPIES = 16  # (tokens, d_model) float tensors alive at once in a layer: hidden, norms, q/k/v, MoE slots
ATTENTION_COPIES = 3  # (rows, heads, L, L) float tensors: bias, scores, weights
ALLOCATOR_SLACK = 1.3  # freed blocks the allocator keeps for reuse, measured (benchmarks/memory_estimate.py)
FIRST_PASS_OVERHEAD = 64 << 20  # thread pools and kernel workspaces set up by the first pass


@dataclass(frozen=True)
class Request:
    """The sizes that drive memory: one predict call."""

    series: int  # N, series in the call
    horizon: int  # H
    num_samples: int  # S
    batch_size: int  # series per model batch
    context_tokens: int  # token columns of the context per variate (patches of the longest context)
    variates: int  # V, target variates
    known: int  # Ck, known covariates
    past: int  # Cp, past covariates
    patch_size: int
    decoding: str  # "exact", "cached", "one pass" (Moirai 1.x) or "quantile paths" (Moirai 2.0)
    token_budget: int = CPU_TOKEN_BUDGET  # tokens in flight at once in a forward pass


def estimate_bytes(config: FamilyConfig, request: Request) -> tuple[int, int]:
    """(bytes on the compute device, bytes on the host) a predict call needs at its peak."""
    batch = min(request.batch_size, request.series)
    rows = batch * request.num_samples
    future = math.ceil(request.horizon / request.patch_size)
    tokens = (request.variates + request.known + request.past) * request.context_tokens + (
        request.variates + request.known
    ) * future  # L: token columns per series
    width = config.max_patch_size
    per_token = TOKEN_FIELD_BYTES + VALUE_BYTES * width
    heads, dim = config.num_heads, config.d_model
    experts = NUM_EXPERTS if config.family == MOIRAI_MOE else 1
    weights = 4 * config.num_layers * (4 * dim * dim + experts * 3 * dim * config.d_ff)  # attention and feed-forward

    def forward(chunk_rows: int, length: int, queries: int) -> int:
        """One network pass over chunk_rows x length tokens, `queries` of them computed by the last layer."""
        attention = chunk_rows * length * length * (2 + ATTENTION_COPIES * 4 * heads)
        activations = chunk_rows * length * (ACTIVATION_COPIES * dim + 4 * config.d_ff) * 4
        return attention + activations + chunk_rows * queries * width * 64

    if request.decoding == "one pass":
        chunk = max(1, request.token_budget // tokens)
        draws = request.num_samples * batch * request.variates * future * width * 4 * (len(config.components) + 3)
        device = batch * tokens * per_token + forward(min(chunk, batch), tokens, request.variates * future) + draws
    elif request.decoding == "cached":
        layers = config.num_layers
        context = forward(batch, tokens, request.variates) + 2 * layers * batch * tokens * dim * 4
        slots = request.variates + request.known
        capacity = max(future - 1, 0) * slots
        store = 2 * layers * rows * capacity * dim * 4  # keys and values, every layer
        step = rows * heads * slots * (whole_key_blocks(tokens) + whole_key_blocks(capacity)) * 4 * (ATTENTION_COPIES + 1)
        step += rows * slots * (ACTIVATION_COPIES * dim + 4 * config.d_ff) * 4  # the new tokens through a layer
        paths = 3 * rows * future * request.variates * width * 4
        device = batch * tokens * per_token + context + store + step + paths
    else:
        chunk = max(1, request.token_budget // tokens)
        device = 2 * rows * tokens * per_token + forward(min(chunk, rows), tokens, request.variates)
        device += rows * future * request.variates * width * 4 * 2  # drawn patches and the paths read out
    device = FIRST_PASS_OVERHEAD + weights + int(ALLOCATOR_SLACK * device)
    host = request.series * request.num_samples * request.horizon * request.variates * (4 + 8 + 8)
    return device, host


def available_bytes(device: torch.device) -> tuple[int | None, int | None]:
    """(free bytes on the compute device, free bytes of host memory); None where unknown.

    Host memory is the smallest of MemAvailable (/proc/meminfo, else sysconf) and the room left under
    a cgroup memory limit (v2 memory.max, v1 memory.limit_in_bytes). On CPU the device is the host.
    """
    host = _host_available()
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except RuntimeError:
            return None, host
        return int(free), host
    if device.type == "cpu":
        return host, host
    return None, host  # mps: unified memory, the host figure covers it


def check_fits(config: FamilyConfig, request: Request, device: torch.device) -> None:
    """InputError, before any work, when a predict call cannot fit in memory; says what would fit."""
    on_device, on_host = available_bytes(device)
    shared = device.type == "cpu"

    def within(device_bytes: int, host_bytes: int) -> bool:
        if shared:
            return on_host is None or device_bytes + host_bytes <= on_host
        return (on_device is None or device_bytes <= on_device) and (on_host is None or host_bytes <= on_host)

    def fits(candidate: Request) -> bool:
        return within(*estimate_bytes(config, candidate))

    device_bytes, host_bytes = estimate_bytes(config, request)
    if within(device_bytes, host_bytes):
        return
    need = device_bytes + host_bytes if shared else device_bytes
    have = on_host if shared else on_device
    if not shared and on_device is not None and device_bytes <= on_device:
        need, have, where = host_bytes, on_host, "host memory"
    else:
        where = "memory" if shared else f"{device.type} memory"
    hints = []
    largest = largest_fitting(lambda h: fits(dataclasses.replace(request, horizon=h)), request.horizon)
    if largest:
        hints.append(f"a horizon of at most {largest} fits")
    quantile_paths = request.decoding == "quantile paths"  # one per level: not a user's choice
    if request.num_samples > 1 and not quantile_paths:
        samples = largest_fitting(lambda s: fits(dataclasses.replace(request, num_samples=s)), request.num_samples)
        if samples:
            hints.append(f"or at most {samples} samples")
    if request.batch_size > 1 and min(request.batch_size, request.series) > 1:
        batch = largest_fitting(lambda b: fits(dataclasses.replace(request, batch_size=b)), min(request.batch_size, request.series))
        if batch:
            hints.append(f"or a batch size of at most {batch}")
    advice = "; ".join([", ".join(hints)] if hints else ["lower the horizon, the number of samples and the batch size"])
    raise InputError(
        f"forecasting {request.series} series, horizon {request.horizon}, {request.num_samples} "
        f"{'quantile paths' if quantile_paths else 'samples'}, batches "
        f"of {min(request.batch_size, request.series)} ({request.decoding} decoding) needs about "
        f"{format_bytes(need)} of {where}, {format_bytes(have)} available; {advice}"
    )


def largest_fitting(fits, upper: int) -> int | None:
    """The largest n in [1, upper) with fits(n) (fits shrinks as n grows), else None."""
    if upper <= 1 or not fits(1):
        return None
    low, high = 1, upper - 1  # fits(low) holds
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def format_bytes(count: int | None) -> str:
    """Bytes as a short text: 512 MiB, 3.2 GiB, 2.1 TiB."""
    if count is None:
        return "an unknown amount"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count / 1024:.0f} KiB"


def _host_available() -> int | None:
    """Free host memory in bytes: MemAvailable, capped by the cgroup's remaining limit."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    room = _cgroup_room()
    if room is not None:
        candidates.append(room)
    return min(candidates) if candidates else None


def _cgroup_room(proc: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), None without a limit."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    places: list[tuple[Path, str, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        relative = path.lstrip("/")
        if controllers == "":
            for root in (mount / relative, mount):
                places.append((root, "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            for root in (mount / "memory" / relative, mount / "memory"):
                places.append((root, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    rooms = []
    for root, limit_name, usage_name in places:
        try:
            limit_text = (root / limit_name).read_text().strip()
            usage = int((root / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 1 << 60:
            continue
        rooms.append(max(0, int(limit_text) - usage))
    return min(rooms) if rooms else None


def request_for(
    config: FamilyConfig,
    targets: list,
    past: list | None,
    known: list | None,
    *,
    horizon: int,
    num_samples: int,
    batch_size: int,
    context_length: int,
    patch_size: int | str,
    decoding: str,
    token_budget: int = CPU_TOKEN_BUDGET,
) -> Request:
    """The Request of a predict call on (T_i, V) targets and covariates (the smallest patch size for 'auto').

    The family picks the decoding: Moirai 1.x draws in one pass; Moirai 2.0 feeds back one path per
    quantile level, which costs what exact decoding costs with that many samples.
    """
    size = min(config.patch_sizes) if patch_size == "auto" or not str(patch_size).isdigit() else int(patch_size)
    longest = max(min(len(target), context_length) for target in targets)
    if config.family == MOIRAI_1:
        decoding = "one pass"
    elif config.family == MOIRAI_2:
        decoding, num_samples = "quantile paths", len(config.quantile_levels)
    return Request(
        series=len(targets),
        horizon=horizon,
        num_samples=num_samples,
        batch_size=batch_size,
        context_tokens=math.ceil(longest / size) + 1,
        variates=targets[0].shape[1],
        known=known[0].shape[1] if known else 0,
        past=past[0].shape[1] if past else 0,
        patch_size=size,
        decoding=decoding,
        token_budget=token_budget,
    )
