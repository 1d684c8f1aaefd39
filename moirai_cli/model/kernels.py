"""Which library computes the linear layers on the CPU: the BLAS torch was built with (MKL), or oneDNN.

MKL picks its code by CPU vendor: on AMD processors it runs its AVX2 kernels even where the
CPU has AVX-512 (Zen 4 and later), while oneDNN picks by instruction set. On an AMD EPYC
with AVX-512, one float32 product of exact decoding's shapes ran at about 100 GFLOP/s per
core with MKL and 220 with oneDNN (benchmarks/README.md). Both compute the same float32
products (no reduced precision); only the order of the additions differs. Everywhere else
(Intel CPUs, CPUs without AVX-512, other architectures) torch's default stays.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MATMUL_ENV = "MOIRAI_CPU_MATMUL"
"""Environment override of the choice below: `onednn`, `blas` (torch's default) or `auto`."""


def cpu_vendor_and_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """The first processor's vendor id (e.g. 'AuthenticAMD') and instruction-set flags, from /proc/cpuinfo."""
    vendor, flags = "", frozenset()
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags":
                    flags = frozenset(value.split())
                    break
    except OSError:
        pass
    return vendor, flags


def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's float32 linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def prefer_onednn(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Use oneDNN for float32 linear layers on this CPU? Yes on x86 CPUs that are not Intel's and have AVX-512.

    MOIRAI_CPU_MATMUL=onednn or =blas decides instead (for measurements).
    """
    choice = os.environ.get(MATMUL_ENV, "auto").strip().lower()
    if choice in ("onednn", "blas"):
        return choice == "onednn" and onednn_linear_available()
    if platform.machine().lower() not in ("x86_64", "amd64") or not onednn_linear_available():
        return False
    vendor, flags = cpu_vendor_and_flags(cpuinfo)
    return bool(vendor) and vendor != "GenuineIntel" and "avx512f" in flags


def padded_rows(rows: int) -> int:
    """`rows` rounded up to a quarter-octave step: 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, ...

    oneDNN compiles, and keeps, a kernel for every matrix shape it meets. The experts of exact
    decoding see a new row count at almost every call, and each kernel kept 0.4-0.8 MiB: memory
    grew by about 1 GiB over 1,000 shapes. Padded to these steps, a layer meets at most 36 shapes
    up to 16,384 rows, for 8% more rows on average (measured: faster than unpadded, whose kernels
    kept being evicted and compiled again).
    """
    if rows <= 64:
        return max(16, -(-rows // 16) * 16)
    step = 1 << (rows.bit_length() - 3)
    return -(-rows // step) * step


class OneDnnLinear(nn.Linear):
    """nn.Linear computed by oneDNN; same parameters (and state-dict names) as the layer it replaces."""

    @classmethod
    def replacing(cls, layer: nn.Linear) -> "OneDnnLinear":
        """A oneDNN layer sharing `layer`'s weight and bias (nothing copied)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = layer.in_features, layer.out_features
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return F.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, self.in_features)  # (N, in)
        count = rows.shape[0]
        padded = padded_rows(count)
        if padded > count:  # zero rows: each row's result depends on that row only
            rows = torch.cat([rows, rows.new_zeros(padded - count, self.in_features)])
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")  # (padded, out)
        return out[:count].reshape(*x.shape[:-1], self.out_features)


def use_onednn_linear_layers(model: nn.Module) -> int:
    """Replace every nn.Linear of `model` by a OneDnnLinear on the same parameters; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, OneDnnLinear.replacing(child))
                replaced += 1
    return replaced
