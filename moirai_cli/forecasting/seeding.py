"""Random streams per series, so that a series' sample paths depend only on its own data, the options and the seed.

Each series draws from its own generator, seeded from the run's seed and a stable hash of the
series' key (its id), never from its position in a batch, chunk, file or worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence

import torch


def series_seed(seed: int, key: Hashable) -> int:
    """A 63-bit seed from the run's seed and a series key (compared as text: 7 and '7' are one key)."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def series_generators(seed: int, keys: Sequence[Hashable], device: torch.device) -> list[torch.Generator]:
    """One generator per series key on `device`, each seeded with `series_seed(seed, key)`."""
    return [torch.Generator(device=device).manual_seed(series_seed(seed, key)) for key in keys]


def run_seed(seed: int | None) -> int:
    """The seed to derive series seeds from: `seed`, or a draw from torch's global generator when None."""
    return int(torch.randint(2**62, (1,))) if seed is None else int(seed)
