"""Everything a lent GPU should measure, in one command of a few minutes.

    bash benchmarks/gpu.sh                      # on the GPU machine (python benchmarks/gpu_benchmark.py)
    python benchmarks/gpu_benchmark.py --quick --device cpu   # a dry run of every step on a CPU

Steps, each printed as a Markdown table as soon as it is measured:
1. random checkpoints of the published small and base sizes (benchmarks/work/, reused) and
   1,024 hourly series of 600 values (seeded, as run_benchmark.py writes them);
2. the forecast call (`MoiraiForecaster.predict`, model loaded, one warm-up call first):
   context 512, horizon 48, 100 samples, exact and cached decoding, float32 and bfloat16,
   batches of 32 and 256 series (small), exact decoding at the device's default batch (base);
   seconds, series per second and peak GPU memory;
3. agreement with the CPU: hold-out negative log-likelihoods (deterministic) and sampled
   quantiles against the CPU's own seed-to-seed noise, for float32 and bfloat16;
4. a whole `moirai forecast` process (cached decoding, batches of 256) on the 1,024 series;
5. with --profile, the CUDA kernels that take the time in one exact pass.
A --budget (seconds) keeps the whole run inside a device lease: what does not fit is skipped
and said so.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_checkpoint import SIZES, write_checkpoint  # noqa: E402
from precision_study import LEVELS, gap  # noqa: E402
from run_benchmark import make_series_file  # noqa: E402

from moirai_cli.model.config import MoiraiMoEConfig  # noqa: E402
from moirai_cli.forecasting.pipeline import MoiraiForecaster  # noqa: E402

WORK = HERE / "work"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
QUICK_SIZE = {"d_model": 128, "d_ff": 128, "num_layers": 2, "patch_sizes": (16,)}


class Clock:
    """The run's time budget: steps ask whether they still fit."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def checkpoint(size: str, quick: bool) -> Path:
    """The folder of a random checkpoint of `size`, written once."""
    folder = WORK / (f"quick-{size}" if quick else size)
    if not (folder / "model.safetensors").exists():
        started = time.perf_counter()
        config = MoiraiMoEConfig(**(QUICK_SIZE if quick else SIZES[size]))
        count = write_checkpoint(folder, config)
        print(f"wrote {folder} ({count / 1e6:.1f}M parameters) in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def load_series(count: int, length: int) -> tuple[Path, list[np.ndarray], list[str]]:
    """The benchmark's Parquet file of `count` series and its targets and ids."""
    path = WORK / f"series_{count}x{length}.parquet"
    if not path.exists():
        make_series_file(path, count, length)
    table = pd.read_parquet(path)
    groups = list(table.groupby("item_id", sort=False))
    return path, [g["target"].to_numpy(np.float64) for _, g in groups], [str(key) for key, _ in groups]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_predict(forecaster: MoiraiForecaster, series, ids, **options) -> tuple[float, float]:
    """(seconds, peak device memory in GiB) of one predict call."""
    device = forecaster.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    started = time.perf_counter()
    forecaster.predict(series, 48, item_ids=ids, context_length=512, num_samples=100, seed=0, **options)
    synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def speed_table(args, size: str, series, ids, clock: Clock) -> None:
    """Forecast-call times for every decoding, dtype and batch size of one checkpoint size."""
    folder = checkpoint(size, args.quick)
    batches = (32, 256) if size == "small" else (None,)
    decodings = ("exact", "cached") if size == "small" else ("exact",)
    print(f"\n### {size}: {len(series)} series, context 512, horizon 48, 100 samples, device {args.device}\n")
    print("| decoding | dtype | batch | seconds | series/s | peak GPU GiB |")
    print("|---|---|---|---|---|---|")
    for dtype in DTYPES:
        forecaster = MoiraiForecaster.from_pretrained(str(folder), device=args.device, dtype=DTYPES[dtype])
        forecaster.predict(series[:2], 48, item_ids=ids[:2], context_length=512, num_samples=100, seed=0)  # warm-up
        for decoding in decodings:
            for batch in batches:
                label = batch or forecaster.plan.batch_size
                if clock.left() < args.reserve:
                    print(f"| {decoding} | {dtype} | {label} | skipped: time budget | | |", flush=True)
                    continue
                seconds, peak = timed_predict(forecaster, series, ids, decoding=decoding, batch_size=batch)
                memory = "-" if np.isnan(peak) else f"{peak:.2f}"
                print(f"| {decoding} | {dtype} | {label} | {seconds:.2f} | {len(series) / seconds:.1f} | {memory} |", flush=True)
        del forecaster
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def agreement(args, series, ids) -> None:
    """Device vs CPU: hold-out NLL (deterministic) and quantiles against the CPU's seed-to-seed noise."""
    folder = checkpoint("small", args.quick)
    count = min(len(series), args.agreement_series)
    subset, keys = series[:count], ids[:count]
    targets = [np.asarray(s, dtype=np.float32)[:, None] for s in subset]
    cpu = MoiraiForecaster.from_pretrained(str(folder), device="cpu")
    scale = np.array([np.nanmean(np.abs(s[-512:])) for s in subset])
    options = dict(context_length=512, num_samples=100, decoding="cached", item_ids=keys)
    cpu0 = cpu.predict(subset, 48, seed=0, **options).quantiles(LEVELS)
    cpu1 = cpu.predict(subset, 48, seed=1, **options).quantiles(LEVELS)
    noise = gap(cpu1, cpu0, scale)
    with torch.inference_mode():
        cpu_nll = cpu.holdout_nll(targets, None, None, 48, 512, 16, 32)
    print(f"\n### agreement with the CPU: {count} series, cached decoding, 100 samples; CPU seed-to-seed quantile gap {noise:.4f}\n")
    print("| device | dtype | hold-out NLL: median relative difference | quantile gap / CPU seed noise |")
    print("|---|---|---|---|")
    for dtype in DTYPES:
        other = MoiraiForecaster.from_pretrained(str(folder), device=args.device, dtype=DTYPES[dtype])
        with torch.inference_mode():
            nll = other.holdout_nll(targets, None, None, 48, 512, 16, 32)
        relative = float(np.median(np.abs(nll - cpu_nll) / np.maximum(np.abs(cpu_nll), 1e-12)))
        moved = gap(other.predict(subset, 48, seed=2, **options).quantiles(LEVELS), cpu0, scale)
        print(f"| {args.device} | {dtype} | {relative:.2e} | {moved / noise:.2f} |", flush=True)


def whole_process(args, path: Path) -> None:
    """Seconds of a whole `moirai forecast` process: imports, CUDA start, weights, reading, forecasting, writing."""
    folder = checkpoint("small", args.quick)
    command = [sys.executable, "-m", "moirai_cli.cli", "forecast", str(path), "-H", "48", "--context-length", "512",
               "--num-samples", "100", "--decoding", "cached", "--batch-size", "256", "--device", args.device,
               "--model", str(folder), "--seed", "0", "-q", "-o", str(WORK / "gpu_forecast.parquet")]
    times = []
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run(command, check=True)
        times.append(time.perf_counter() - started)
    print(f"\nwhole `moirai forecast` process, cached, batch 256: {', '.join(f'{t:.1f}' for t in times)} s "
          f"(median {statistics.median(times):.1f} s)", flush=True)


def profile(args, series, ids) -> None:
    """The kernels that take the time in exact decoding of 64 series (bfloat16), by device time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    forecaster = MoiraiForecaster.from_pretrained(str(checkpoint("small", args.quick)), device=args.device, dtype=torch.bfloat16)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch_profile(activities=activities) as trace:
        timed_predict(forecaster, series[:64], ids[:64], decoding="exact")
    key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print("\n### profile: exact decoding of 64 series, bfloat16\n")
    print(trace.key_averages().table(sort_by=key, row_limit=15), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--series", type=int, default=1024)
    parser.add_argument("--sizes", default="small,base")
    parser.add_argument("--agreement-series", type=int, default=64)
    parser.add_argument("--budget", type=float, default=330, help="seconds for the whole run (default 330)")
    parser.add_argument("--reserve", type=float, default=60, help="seconds kept for the last steps")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny checkpoints and few series: checks the script")
    args = parser.parse_args()
    if args.quick:
        args.series = min(args.series, 8)
        args.agreement_series = min(args.agreement_series, 4)
    clock = Clock(args.budget)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# moirai-cli on {name}, torch {torch.__version__}\n", flush=True)
    path, series, ids = load_series(args.series, 600)
    for size in args.sizes.split(","):
        speed_table(args, size, series, ids, clock)
    agreement(args, series, ids)
    whole_process(args, path)
    if args.profile and clock.left() > 20:
        profile(args, series, ids)
    print(f"\ntotal {time.perf_counter() - clock.start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
