"""Single-core speed of float32 linear layers: torch's BLAS (MKL on x86) against oneDNN.

    python benchmarks/matmul_kernels.py
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/matmul_kernels.py   # oneDNN held to AVX2

For the products of the small model's layers (d_model 384, d_ff 512; 512 to 8,192 rows, as
exact decoding's chunks give the experts and the attention projections), prints GFLOP/s per
core, from the thread's CPU time so that other jobs on the machine do not distort it. On the
CPU it runs on, this shows which library moirai-cli should use (moirai_cli/model/kernels.py).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from moirai_cli.model.kernels import cpu_vendor_and_flags, onednn_linear_available

SHAPES = [(8192, 384, 384), (8192, 384, 512), (8192, 512, 384), (512, 384, 512)]  # rows, inputs, outputs


def gflops(product, rows: int, inputs: int, outputs: int, repeats: int = 20) -> float:
    """Floating-point operations per second of `product`, from this thread's CPU time."""
    product()
    start = time.thread_time()
    for _ in range(repeats):
        product()
    return 2 * rows * inputs * outputs * repeats / (time.thread_time() - start) / 1e9


def main() -> None:
    torch.set_num_threads(1)
    vendor, flags = cpu_vendor_and_flags()
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    print(f"{vendor or 'unknown vendor'} ({widest}), torch {torch.__version__}, one thread; GFLOP/s:\n")
    print("| rows x inputs -> outputs | torch's BLAS | oneDNN |")
    print("|---|---|---|")
    for rows, inputs, outputs in SHAPES:
        x, weight = torch.randn(rows, inputs), torch.randn(outputs, inputs)
        blas = gflops(lambda: F.linear(x, weight), rows, inputs, outputs)
        onednn = "-"
        if onednn_linear_available():
            run = lambda: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")  # noqa: E731
            onednn = f"{gflops(run, rows, inputs, outputs):.0f}"
        print(f"| {rows} x {inputs} -> {outputs} | {blas:.0f} | {onednn} |")


if __name__ == "__main__":
    main()
