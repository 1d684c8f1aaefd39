"""Forecast a long-format CSV with the reference implementation (uni2ts 2.0.0), for benchmarks.

Runs in the reference's virtual environment only (built by scripts/make-reference-venv.sh):

    REF/bin/python benchmarks/reference_forecast.py DATA.csv CHECKPOINT OUT.csv --horizon 48 \
        --context-length 512 --num-samples 100 --batch-size 32 [--family moirai-moe] [--patch-size auto]

`--family` picks the reference's forecast wrapper: MoiraiMoEForecast (moirai-moe, patch size 16
unless given), MoiraiForecast (moirai-1, patch size auto unless given) or Moirai2Forecast
(moirai-2, quantiles; no samples). Writes the mean and the 0.1 ... 0.9 quantiles per item and
step, like `moirai forecast`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode
from uni2ts.model.moirai import MoiraiForecast, MoiraiModule
from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module
from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def reference_wrapper(args: argparse.Namespace):
    """The family's forecast wrapper around the checkpoint's module."""
    common = dict(
        prediction_length=args.horizon,
        context_length=args.context_length,
        target_dim=1,
        feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=0,
    )
    patch_size = args.patch_size if args.patch_size in (None, "auto") else int(args.patch_size)
    if args.family == "moirai-moe":
        module = MoiraiMoEModule.from_pretrained(args.checkpoint)
        return MoiraiMoEForecast(**common, patch_size=patch_size or 16, num_samples=args.num_samples, module=module)
    if args.family == "moirai-1":
        module = MoiraiModule.from_pretrained(args.checkpoint)
        return MoiraiForecast(**common, patch_size=patch_size or "auto", num_samples=args.num_samples, module=module)
    return Moirai2Forecast(**common, module=Moirai2Module.from_pretrained(args.checkpoint))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data")
    parser.add_argument("checkpoint")
    parser.add_argument("output")
    parser.add_argument("--horizon", type=int, required=True)
    parser.add_argument("--context-length", type=int, required=True)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=["moirai-1", "moirai-moe", "moirai-2"], default="moirai-moe")
    parser.add_argument("--patch-size", help="a patch size or auto (default: the wrapper's, 16 for MoE, auto for 1.x)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own choice)")
    parser.add_argument("--series", type=int, help="forecast only the first N series")
    parser.add_argument("--count-flops", action="store_true", help="count the matrix products' operations")
    parser.add_argument("--profile", action="store_true", help="print the operators that took the most time")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    frame = pd.read_csv(args.data, parse_dates=["timestamp"])
    dataset = [
        {"item_id": item, "start": pd.Period(group["timestamp"].iloc[0], freq="h"), "target": group["target"].to_numpy(np.float32)}
        for item, group in frame.groupby("item_id", sort=False)
    ]
    predictor = reference_wrapper(args).create_predictor(batch_size=args.batch_size, device="cpu")
    dataset = dataset[: args.series]
    rows = []
    counter = FlopCounterMode(display=False) if args.count_flops else contextlib.nullcontext()
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.profile else None
    start, cpu_start = time.perf_counter(), time.process_time()
    with counter, profiler or contextlib.nullcontext():
        forecasts = list(predictor.predict(dataset))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    flops = f", {counter.get_total_flops() / 1e12:.3f} TFLOP" if args.count_flops else ""
    print(f"reference: {len(dataset)} series, {torch.get_num_threads()} thread(s): forecast {seconds:.1f} s, "
          f"{cpu:.1f} s CPU{flops}; load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    for entry, forecast in zip(dataset, forecasts):
        index = pd.period_range(forecast.start_date, periods=args.horizon, freq="h").to_timestamp()
        if hasattr(forecast, "samples"):  # a SampleForecast: (S, H)
            mean, quantiles = forecast.samples.mean(0), np.quantile(forecast.samples, LEVELS, axis=0)
        else:  # Moirai 2.0's QuantileForecast: its mean is its median
            mean, quantiles = forecast.mean, [forecast.quantile(level) for level in LEVELS]
        table = pd.DataFrame({"item_id": entry["item_id"], "timestamp": index, "mean": mean})
        for level, values in zip(LEVELS, quantiles):
            table[str(level)] = values
        rows.append(table)
    pd.concat(rows).to_csv(args.output, index=False)


if __name__ == "__main__":
    main()
