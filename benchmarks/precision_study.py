"""How far do bfloat16 (or another device's) quantiles move from float32 CPU ones, next to seed noise?

    python benchmarks/precision_study.py --model benchmarks/work/small [--device cuda] [--dtype bfloat16]

Forecasts histories cut from the sample files (several origins per series) three times on the
CPU in float32 (seeds 0 and 1: the Monte-Carlo noise) and once with the candidate device and
dtype (seed 2). The gap between two runs is the mean over series, origins, quantile levels
0.1..0.9 and steps of |q_a - q_b| / mean|context|. Ratio = gap(candidate, cpu seed 0) /
gap(cpu seed 1, cpu seed 0): 1 means the candidate moves quantiles no more than reseeding.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from moirai_cli.data import load_dataset
from moirai_cli.forecasting.pipeline import MoiraiForecaster

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"
LEVELS = np.round(np.arange(0.1, 0.91, 0.1), 1)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def histories(name: str, horizon: int, origins: int, spacing: int) -> list[np.ndarray]:
    """Each series of a sample file cut `horizon + k * spacing` values before its end, k = 0 .. origins-1."""
    dataset = load_dataset(str(SAMPLE_DATA / name))
    ends = ((r, len(r.target) - horizon - k * spacing) for r in dataset.series for k in range(origins))
    return [r.target[:end] for r, end in ends if end > horizon]


def gap(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    """Mean |quantile difference| relative to each window's mean |context| (a, b: (N, Q, H, V))."""
    return float((np.abs(a - b) / scale[:, None, None, None]).mean())


def quantile_gap_ratio(model: str, device: str, dtype: str, decoding: str, num_samples: int, context: int) -> list[str]:
    """Markdown rows: per sample file, seed-noise gap, candidate gap and their ratio."""
    reference = MoiraiForecaster.from_pretrained(model, device="cpu")
    candidate = MoiraiForecaster.from_pretrained(model, device=device, dtype=DTYPES[dtype])
    rows = []
    for name, horizon, origins, spacing in (("seattle_temps.csv", 48, 12, 168), ("us_employment.csv", 24, 2, 12), ("stocks.csv", 24, 2, 12)):
        windows = histories(name, horizon, origins, spacing)
        scale = np.array([np.nanmean(np.abs(h[-context:])) + 1e-8 for h in windows])
        options = dict(context_length=context, num_samples=num_samples, decoding=decoding)
        cpu0 = reference.predict(windows, horizon, seed=0, **options).quantiles(LEVELS)
        cpu1 = reference.predict(windows, horizon, seed=1, **options).quantiles(LEVELS)
        start = time.perf_counter()
        other = candidate.predict(windows, horizon, seed=2, **options).quantiles(LEVELS)
        seconds = time.perf_counter() - start
        noise, moved = gap(cpu1, cpu0, scale), gap(other, cpu0, scale)
        rows.append(f"| {name} | {len(windows)} | {horizon} | {noise:.4f} | {moved:.4f} | {moved / noise:.2f} | {seconds:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="benchmarks/work/small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--decoding", default="cached")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--context-length", type=int, default=512)
    args = parser.parse_args()
    print(f"{args.device} {args.dtype} vs cpu float32, {args.decoding} decoding, {args.num_samples} samples, context {args.context_length}\n")
    print("| data | windows | horizon | float32 seed gap | candidate gap | ratio | candidate s |")
    print("|---|---|---|---|---|---|---|")
    for row in quantile_gap_ratio(args.model, args.device, args.dtype, args.decoding, args.num_samples, args.context_length):
        print(row, flush=True)


if __name__ == "__main__":
    main()
