"""Time whole `moirai forecast` processes, and the reference on the same data, side by side.

    python benchmarks/run_benchmark.py --series 64 --context-length 512 --horizon 48 \
        --num-samples 100 --checkpoint benchmarks/work/small --reference-venv /tmp/moirai-ref
    python benchmarks/run_benchmark.py --family moirai-1 moirai-moe moirai-2 --horizon 48 160 ...  # checkpoints built if missing

Generates hourly series (seeded), then alternates runs: ours (each decoding: exact and cached
for Moirai-MoE, exact for the others), the reference (when --reference-venv is given, with the
forecast wrapper of the checkpoint's family), `--repeats` times. The family is read from the
checkpoint's config.json. Each run is a separate process; wall time and that process's peak
resident memory (from wait4) are recorded. Prints a Markdown table with the median of each and
the ratios to the reference.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from moirai_cli.model.config import MOIRAI_MOE, load_config

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def machine() -> str:
    """The CPU (model name, widest vector instructions), the CPUs this process may use, and the linear-layer kernels."""
    from moirai_cli.model.kernels import cpu_vendor_and_flags, prefer_onednn
    from moirai_cli.runtime import usable_cpus

    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    _, flags = cpu_vendor_and_flags()
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    kernels = "oneDNN" if prefer_onednn() else "torch's BLAS"
    return f"{name} ({vectors}), {usable_cpus()} CPUs usable, linear layers by {kernels}"


def make_series_file(path: Path, num_series: int, length: int, seed: int = 0) -> Path:
    """Long-format CSV or Parquet of hourly series: daily and weekly seasonality, trend, noise, a few gaps."""
    rng = np.random.default_rng(seed)
    steps = np.arange(length)
    start = pd.Timestamp("2024-01-01")
    timestamps = pd.date_range(start, periods=length, freq="h")
    frames = []
    for item in range(num_series):
        level, amplitude = rng.uniform(10, 1000), rng.uniform(0.1, 0.5)
        values = level * (
            1 + amplitude * np.sin(2 * np.pi * steps / 24 + rng.uniform(0, 6))
            + 0.1 * amplitude * np.sin(2 * np.pi * steps / 168) + rng.normal(scale=0.05, size=length)
        )
        values[rng.random(length) < 0.01] = np.nan
        frames.append(pd.DataFrame({"item_id": f"series_{item:06d}", "timestamp": timestamps, "target": values}))
    frame = pd.concat(frames, ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def make_series_file_apart(path: Path, num_series: int, length: int) -> Path:
    """`make_series_file` in a fresh interpreter, so this process's memory stays small.

    Linux reports a child's peak memory (wait4's ru_maxrss) as at least its parent's peak at the
    time it was spawned: building 100,000 series here first made every run look 1.5 GiB large.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(make_series_file, path, num_series, length).result()


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GiB) of one child process (see make_series_file_apart)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(command)}")
    return elapsed, usage.ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def parse_variants(items: list[list[str]]) -> dict[str, dict[str, str]]:
    """--variant NAME ENV=VALUE ... into {name: {ENV: VALUE}}."""
    variants = {}
    for name, *settings in items:
        pairs = [setting.split("=", 1) for setting in settings]
        if any(len(pair) != 2 for pair in pairs):
            raise SystemExit(f"--variant {name}: settings must look like NAME=VALUE")
        variants[name] = dict(pairs)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=64)
    parser.add_argument("--length", type=int, default=600, help="values per series")
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--horizon", type=int, nargs="+", default=[48], help="one or more horizons (default 48)")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--checkpoint", help="checkpoint folder (default: benchmarks/work/FAMILY-SIZE with --family, "
                        "built by make_checkpoint.py if missing; else benchmarks/work/small)")
    parser.add_argument("--family", nargs="+", choices=["moirai-1", "moirai-moe", "moirai-2"],
                        help="one or more families, each on a random checkpoint of --size")
    parser.add_argument("--size", default="small", help="published size of the random checkpoint (with --family)")
    parser.add_argument("--reference-venv", help="virtual environment with uni2ts 2.0.0")
    parser.add_argument("--decodings", help="comma-separated (default: exact,cached for Moirai-MoE, exact otherwise)")
    parser.add_argument("--patch-size", help="a patch size or auto, for both tools (default: each family's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--device", default="cpu", help="moirai-cli's device (the reference always runs on the CPU)")
    parser.add_argument("--dtype", default="float32", help="moirai-cli's weights dtype: float32 or bfloat16")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "ENV=VALUE"),
                        help="extra moirai-cli runs with these environment settings, e.g. 'blas' MOIRAI_CPU_MATMUL=blas")
    args = parser.parse_args()

    if args.checkpoint and len(args.family or [None]) > 1:
        raise SystemExit("--checkpoint names one checkpoint: give one --family (or none)")
    data = make_series_file_apart(WORK / f"series_{args.series}x{args.length}.{args.format}", args.series, args.length)
    for family in args.family or [None]:
        checkpoint = args.checkpoint or checkpoint_for(family, args.size)
        for horizon in args.horizon:
            compare(args, checkpoint, family, horizon, data)


def checkpoint_for(family: str | None, size: str) -> str:
    """benchmarks/work/FAMILY-SIZE, written by make_checkpoint.py in its own process if missing (benchmarks/work/small without a family)."""
    if family is None:
        return str(WORK / "small")
    folder = WORK / f"{family}-{size}"
    if not (folder / "config.json").exists():  # apart, for the same reason as the data (make_series_file_apart)
        subprocess.run([sys.executable, str(HERE / "make_checkpoint.py"), str(folder), "--family", family, "--size", size], check=True)
    return str(folder)


def compare(args: argparse.Namespace, checkpoint: str, expected_family: str | None, horizon: int, data: Path) -> None:
    """Alternate our runs and the reference's on one checkpoint and horizon; print the Markdown table."""
    family = load_config(Path(checkpoint) / "config.json").family
    if expected_family and family != expected_family:
        raise SystemExit(f"{checkpoint} holds a {family} checkpoint, not {expected_family}")
    decodings = args.decodings or ("exact,cached" if family == MOIRAI_MOE else "exact")
    common = ["--horizon", str(horizon), "--context-length", str(args.context_length)]
    if args.patch_size:
        common += ["--patch-size", args.patch_size]
    samples = [] if family == "moirai-2" else ["--num-samples", str(args.num_samples)]  # 2.0 predicts quantiles
    runs: dict[str, list[str]] = {}
    envs: dict[str, dict[str, str]] = {}  # the --variant runs' environments
    moirai = [sys.executable, "-m", "moirai_cli.cli", "forecast", str(data), *common, *samples,
              "--batch-size", str(args.batch_size), "--model", checkpoint, "--device", args.device, "--quiet", "--seed", "0"]
    if args.dtype != "float32":
        moirai += ["--dtype", args.dtype]
    for decoding in decodings.split(","):
        runs[f"moirai-cli {decoding}"] = [*moirai, "--decoding", decoding, "--output", str(WORK / f"out_{decoding}.csv")]
        for name, settings in parse_variants(args.variant).items():
            runs[f"moirai-cli {decoding}, {name}"] = runs[f"moirai-cli {decoding}"]
            envs[f"moirai-cli {decoding}, {name}"] = {**os.environ, **settings}
    if args.reference_venv:
        runs["reference (uni2ts 2.0.0)"] = [
            str(Path(args.reference_venv) / "bin" / "python"), str(HERE / "reference_forecast.py"), str(data), checkpoint,
            str(WORK / "out_reference.csv"), *common, "--num-samples", str(args.num_samples), "--batch-size", str(args.batch_size),
            "--family", family,
        ]
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for repeat in range(args.repeats):
        for name, command in runs.items():  # alternate: one run of each per repeat
            seconds, memory = measure(command, envs.get(name))
            results[name].append((seconds, memory))
            print(f"repeat {repeat + 1}: {family} horizon {horizon}: {name}: {seconds:.1f} s, {memory:.2f} GiB", file=sys.stderr, flush=True)

    reference = results.get("reference (uni2ts 2.0.0)")
    ref_time = statistics.median(t for t, _ in reference) if reference else None
    ref_memory = statistics.median(m for _, m in reference) if reference else None
    samples_note = "quantiles" if family == "moirai-2" else f"{args.num_samples} samples"
    print(f"\n{family} ({Path(checkpoint).name}), {args.series} series x {args.length} values, context {args.context_length}, "
          f"horizon {horizon}, {samples_note}, patch size {args.patch_size or 'default'}, batch {args.batch_size}, "
          f"device {args.device}, {args.dtype}, {args.repeats} run(s) each, median; "
          f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"series per second: " + ", ".join(
        f"{name} {args.series / statistics.median(t for t, _ in values):.2f}" for name, values in results.items()) + "\n")
    print("| run | wall time (s) | peak memory (GiB) | speed-up vs reference | memory vs reference |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        seconds = statistics.median(t for t, _ in values)
        memory = statistics.median(m for _, m in values)
        speed = f"{ref_time / seconds:.1f}x" if ref_time else "-"
        share = f"{memory / ref_memory:.2f}" if ref_memory else "-"
        print(f"| {name} | {seconds:.1f} | {memory:.2f} | {speed} | {share} |")
    sys.stdout.flush()

if __name__ == "__main__":
    main()
