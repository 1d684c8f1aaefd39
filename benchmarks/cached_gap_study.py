"""How far do cached-decoding quantiles move from exact decoding, next to exact's own seed noise?

    python benchmarks/cached_gap_study.py --model benchmarks/work/small [--num-samples 200]

For every sample file and several forecast origins per series, with a short and a long
context, it draws: exact (seed 0), exact (seed 1) and cached (seed 2). The gap between two
runs is the mean over series, origins, quantile levels 0.1..0.9 and steps of
|q_a - q_b| / mean|context|. If cached decoding only added Monte-Carlo noise, gap(cached,
exact0) would match gap(exact1, exact0); the ratio says how much more it moves.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from moirai_cli.data import load_dataset
from moirai_cli.forecasting.pipeline import MoiraiForecaster

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"
LEVELS = np.round(np.arange(0.1, 0.91, 0.1), 1)
# file -> (horizon, number of forecast origins per series, spacing between origins)
PLAN = {
    "seattle_temps.csv": (48, 24, 168),
    "seattle_weather.csv": (32, 6, 60),
    "us_employment.csv": (24, 2, 12),
    "stocks.csv": (24, 2, 12),
}


def windows(target: np.ndarray, horizon: int, origins: int, spacing: int) -> list[np.ndarray]:
    """Histories ending `horizon + k * spacing` values before the end, for k = 0 .. origins-1."""
    ends = [len(target) - horizon - k * spacing for k in range(origins)]
    return [target[:end] for end in ends if end > horizon]


def gap(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    """Mean |quantile difference| relative to each window's mean |context| (a, b: (N, Q, H, V))."""
    return float((np.abs(a - b) / scale[:, None, None, None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="benchmarks/work/small")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--contexts", default="64,512")
    args = parser.parse_args()
    forecaster = MoiraiForecaster.from_pretrained(args.model, device="cpu")
    print(f"model {args.model}, {args.num_samples} samples per forecast\n")
    print("| data | context | windows | horizon | exact seed gap | cached gap | ratio | exact s | cached s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (horizon, origins, spacing) in PLAN.items():
        dataset = load_dataset(str(SAMPLE_DATA / name))
        histories = [w for record in dataset.series for w in windows(record.target, horizon, origins, spacing)]
        for context in (int(c) for c in args.contexts.split(",")):
            scale = np.array([np.nanmean(np.abs(h[-context:])) + 1e-8 for h in histories])
            options = dict(context_length=context, num_samples=args.num_samples)
            start = time.perf_counter()
            exact0 = forecaster.predict(histories, horizon, seed=0, **options).quantiles(LEVELS)
            exact_seconds = time.perf_counter() - start
            exact1 = forecaster.predict(histories, horizon, seed=1, **options).quantiles(LEVELS)
            start = time.perf_counter()
            cached = forecaster.predict(histories, horizon, seed=2, decoding="cached", **options).quantiles(LEVELS)
            cached_seconds = time.perf_counter() - start
            noise, moved = gap(exact1, exact0, scale), gap(cached, exact0, scale)
            print(f"| {name} | {context} | {len(histories)} | {horizon} | {noise:.4f} | {moved:.4f} | {moved / noise:.2f} "
                  f"| {exact_seconds:.1f} | {cached_seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
