"""Time one `MoiraiForecaster.predict` call (no process start-up, no file I/O) and report peak memory.

    python benchmarks/forecast_call.py --series 32 --horizon 480 --decoding cached

Uses the series file `run_benchmark.py` writes (benchmarks/work/series_64x600.csv by default) and
the random real-size checkpoint. To compare with an older version of the package, run the same
command with PYTHONPATH pointing at a checkout of it (`git worktree add /tmp/old COMMIT`).

CPU time (user + system) is printed beside the wall time: with `--threads 1` it measures the work
itself, even on a machine that other jobs keep busy. `--count-flops` adds the floating-point
operations of the matrix products (counted by torch, with torch's own BLAS kernels); `--profile`
prints the operators that took the most time (torch.profiler).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

import moirai_cli  # first: it sets how idle threads wait before torch is loaded
from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.runtime import keep_freed_memory_for_reuse, use_threads
import torch
from torch.utils.flop_counter import FlopCounterMode

WORK = Path(__file__).resolve().parent / "work"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(WORK / "series_64x600.csv"), help="long CSV with item_id and target")
    parser.add_argument("--checkpoint", default=str(WORK / "small"))
    parser.add_argument("--series", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decoding", default="cached")
    parser.add_argument("--threads", type=int, help="CPU threads (default: as the command line chooses)")
    parser.add_argument("--count-flops", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--token-budget", type=int, help="tokens per forward pass (default: the engine's, as --tokens-per-pass)")
    parser.add_argument("--glibc-default", action="store_true",
                        help="leave glibc's malloc as it is (the command line tells it to keep freed buffers)")
    args = parser.parse_args()
    if args.count_flops:
        os.environ["MOIRAI_CPU_MATMUL"] = "blas"  # torch's counter sees aten products, not oneDNN's
    threads = use_threads(args.threads)
    if not args.glibc_default:
        keep_freed_memory_for_reuse()

    table = pd.read_csv(args.data)
    series = [group["target"].to_numpy(np.float32) for _, group in table.groupby("item_id")][: args.series]
    forecaster = MoiraiForecaster.from_pretrained(args.checkpoint, device="cpu")
    counter = FlopCounterMode(display=False) if args.count_flops else contextlib.nullcontext()
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.profile else None
    start, cpu_start = time.perf_counter(), time.process_time()
    with counter, profiler or contextlib.nullcontext():
        forecaster.predict(
            series, args.horizon, context_length=args.context_length, num_samples=args.num_samples,
            batch_size=args.batch_size, decoding=args.decoding, seed=0, token_budget=args.token_budget,
        )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    flops = f", {counter.get_total_flops() / 1e12:.3f} TFLOP" if args.count_flops else ""
    print(f"{moirai_cli.__file__}: {len(series)} series, horizon {args.horizon}, {args.decoding}, {threads} thread(s): "
          f"{seconds:.1f} s, {cpu:.1f} s CPU, peak {peak:.2f} GiB{flops}; load average {os.getloadavg()[0]:.2f}")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
