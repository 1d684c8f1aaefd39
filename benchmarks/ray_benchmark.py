"""`moirai forecast --engine ray` against `--engine local` on many series: throughput, peak memory per process, overheads.

    python benchmarks/ray_benchmark.py --series 100000 --files 16 --workers 1 2

Generates a Parquet dataset of hourly series (`--files` files, each holding whole series; generated in a
separate process), then runs whole `moirai forecast` processes one after another: the local engine, then
the Ray engine with each `--workers` count (a new local cluster each time). While a run lasts, every
process of its tree is sampled for its peak resident memory (VmHWM), grouped by role: the driver (the
`moirai` process), forecasting actors, other Ray workers (reading, shuffling) and Ray's own daemons.
It also measures the Ray engine's fixed start-up cost (a run on `--files` tiny files) and its cost per
block (the same series in few and in many files), and prints a Markdown table, the command line and
the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
CHECKPOINT = HERE.parent / "tests" / "fixtures" / "tiny-moe"


def make_dataset(folder: Path, num_series: int, length: int, files: int) -> Path:
    """Hourly series in `files` Parquet files, each holding whole series (written by a separate interpreter)."""
    if folder.is_dir() and len(list(folder.glob("*.parquet"))) == files:
        return folder
    script = textwrap.dedent(f"""
        import numpy as np, pandas as pd, pathlib
        folder = pathlib.Path({str(folder)!r}); folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        stamps = pd.date_range("2024-01-01", periods={length}, freq="h")
        bounds = np.linspace(0, {num_series}, {files} + 1).astype(int)
        for k in range({files}):
            n = bounds[k + 1] - bounds[k]
            level = rng.uniform(10, 1000, (n, 1)); phase = rng.uniform(0, 6, (n, 1))
            steps = np.arange({length})
            values = level * (1 + 0.3 * np.sin(2 * np.pi * steps / 24 + phase) + rng.normal(0, 0.05, (n, {length})))
            ids = np.array([f"series_{{i:08d}}" for i in range(bounds[k], bounds[k + 1])], dtype=object)
            pd.DataFrame({{"item_id": np.repeat(ids, {length}), "timestamp": np.tile(stamps, n),
                          "target": values.reshape(-1)}}).to_parquet(folder / f"part-{{k:04d}}.parquet", index=False)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    return folder


def _descendants(root: int) -> set[int]:
    """The pids of `root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _role(pid: int, root: int) -> str | None:
    """driver, actor, ray worker or ray daemon, from the process title."""
    if pid == root:
        return "driver"
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if title.startswith("ray::") and "Forecaster" in title:
        return "actor"
    if title.startswith("ray::"):
        return "ray worker"
    return "ray daemons"


def _peak_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run(command: list[str]) -> dict:
    """Run one process tree to its end; wall time and the peak memory of each role's largest process (MiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[str, int]] = {}
    while proc.poll() is None:
        for pid in _descendants(proc.pid):
            role, peak = _role(pid, proc.pid), _peak_kib(pid)
            if role and peak:
                peaks[pid] = (role, max(peak, peaks.get(pid, ("", 0))[1]))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}\n{stderr}")
    by_role: dict[str, int] = {}
    counts: dict[str, int] = {}
    for role, peak in peaks.values():
        by_role[role] = max(by_role.get(role, 0), peak)
        counts[role] = counts.get(role, 0) + 1
    return {"wall": wall, "peak_mib": {k: v / 1024 for k, v in by_role.items()}, "processes": counts}


def _median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (its memory peaks with it); every wall time kept for the table."""
    ordered = sorted(runs, key=lambda r: r["wall"])
    return {**ordered[len(ordered) // 2], "walls": [r["wall"] for r in runs]}


def forecast_command(data: Path, engine: str, workers: int, args: argparse.Namespace) -> list[str]:
    out = WORK / f"ray-bench-out-{engine}-{workers}.parquet"
    command = [
        sys.executable, "-m", "moirai_cli.cli", "forecast", str(data), "-H", str(args.horizon),
        "--context-length", str(args.context_length), "--num-samples", str(args.num_samples),
        "--model", str(args.checkpoint), "--decoding", args.decoding, "--device", "cpu", "--seed", "0", "-q",
        "-o", str(out), "--engine", engine,
    ]
    return command + (["--workers", str(workers)] if engine == "ray" else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--files", type=int, default=16, help="files of the dataset (blocks of the by-file split)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--context-length", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--decoding", default="cached")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--overhead-series", type=int, default=2_000, help="series of the per-block overhead runs")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of alternated runs (local, ray 1, ray 2, local, ...); medians reported")
    args = parser.parse_args()

    data = make_dataset(WORK / f"ray-bench-{args.series}x{args.length}-{args.files}", args.series, args.length, args.files)
    setups = [("local", 1), *(("ray", w) for w in args.workers)]
    results: dict[tuple[str, int], list[dict]] = {setup: [] for setup in setups}
    for _ in range(args.repeats):  # alternated, so that a change in the machine's load hits every setup alike
        for engine, workers in setups:
            result = run(forecast_command(data, engine, workers, args))
            results[(engine, workers)].append(result)
            print(f"{engine} {workers}: {result}", file=sys.stderr)
    rows = [(engine, workers, _median_run(results[(engine, workers)])) for engine, workers in setups]

    tiny = make_dataset(WORK / f"ray-bench-tiny-{args.files}", args.files, args.length, args.files)
    startup = run(forecast_command(tiny, "ray", 1, args))["wall"]
    few_files, many_files = 4, 100
    few = run(forecast_command(make_dataset(WORK / f"ray-bench-{args.overhead_series}-{few_files}", args.overhead_series, args.length, few_files), "ray", 1, args))["wall"]
    many = run(forecast_command(make_dataset(WORK / f"ray-bench-{args.overhead_series}-{many_files}", args.overhead_series, args.length, many_files), "ray", 1, args))["wall"]
    per_block = (many - few) / (many_files - few_files)

    print(f"\n{args.series:,} series x {args.length} hourly values in {args.files} Parquet files, {args.checkpoint.name}, "
          f"context {args.context_length}, horizon {args.horizon}, {args.num_samples} samples, {args.decoding} decoding, CPU; "
          f"{args.repeats} alternated round(s), median; load average at the end: {os.getloadavg()[0]:.1f} (1 min)\n")
    print("| engine | workers | wall (s), median | series/s | driver peak (MiB) | per-actor peak (MiB) | other Ray workers peak (MiB) | Ray daemons peak (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for engine, workers, result in rows:
        peak = result["peak_mib"]
        cell = lambda role: f"{peak[role]:.0f}" if role in peak else "-"  # noqa: E731
        walls = ", ".join(f"{w:.1f}" for w in result["walls"])
        print(f"| {engine} | {workers if engine == 'ray' else '-'} | {result['wall']:.1f} ({walls}) | {args.series / result['wall']:.1f} | "
              f"{cell('driver')} | {cell('actor')} | {cell('ray worker')} | {cell('ray daemons')} |")
    ray_rows = [r for r in rows if r[0] == "ray"]
    best = max(ray_rows, key=lambda r: args.series / (r[2]["wall"] - startup)) if ray_rows else None
    print(f"\nRay engine fixed cost (cluster start, model load, {args.files} tiny files): {startup:.1f} s")
    print(f"per-block overhead: {per_block * 1000:.0f} ms per file ({args.overhead_series:,} series in {few_files} files: "
          f"{few:.1f} s, in {many_files} files: {many:.1f} s; 1 worker)")
    if best is not None:
        per_series = (best[2]["wall"] - startup) * best[1] / args.series
        print(f"per-series cost per worker (ray, {best[1]} worker(s), fixed cost removed): {per_series * 1000:.2f} ms")
    print("\n" + " ".join(sys.argv))


if __name__ == "__main__":
    main()
