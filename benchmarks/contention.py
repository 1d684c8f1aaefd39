"""Exact decoding with and without one other busy process on the machine, moirai-cli beside the reference.

    python benchmarks/contention.py --series 16 --checkpoint benchmarks/work/small \
        --reference-venv /tmp/moirai-ref --repeats 3

Each repeat runs every command twice, alternating: once on a quiet machine and once while one
competing process spins on a core (a Python busy loop, as another user's job would). Every run
is a whole process (`moirai forecast ... --decoding exact`, or the reference's GluonTS
predictor through reference_forecast.py) timed from start to exit; its CPU time (user +
system, from wait4) shows threads that spin instead of computing. Prints the machine, then a
Markdown table of medians and the slowdown under load (busy / quiet) of each command.

`--variant NAME ENV=VALUE ...` adds moirai-cli runs with other environment settings, e.g.
`--variant "spinning threads" GOMP_SPINCOUNT=300000` (GNU OpenMP's default wait) or
`--variant "one thread" MOIRAI_NUM_THREADS=1`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from run_benchmark import WORK, machine, make_series_file_apart, parse_variants

HERE = Path(__file__).resolve().parent
BUSY_LOOP = "while True:\n    pass\n"


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(command)}\n{process.stderr.read().decode()}")
    return wall, usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def competing_process(busy: bool) -> Iterator[subprocess.Popen | None]:
    """One process spinning on a core for the duration of the block (busy=True), or none."""
    if not busy:
        yield None
        return
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        yield competitor
    finally:
        competitor.kill()
        competitor.wait()


def table(results: dict[str, dict[bool, list[tuple[float, float]]]]) -> list[str]:
    """Markdown rows: median wall and CPU seconds, quiet and with one busy process, and the slowdown."""
    lines = [
        "| run | quiet: wall (s) | quiet: CPU (s) | 1 busy process: wall (s) | 1 busy process: CPU (s) | slowdown |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_load in results.items():
        quiet_wall = statistics.median(w for w, _ in by_load[False])
        busy_wall = statistics.median(w for w, _ in by_load[True])
        quiet_cpu = statistics.median(c for _, c in by_load[False])
        busy_cpu = statistics.median(c for _, c in by_load[True])
        lines.append(
            f"| {name} | {quiet_wall:.1f} | {quiet_cpu:.1f} | {busy_wall:.1f} | {busy_cpu:.1f} | {busy_wall / quiet_wall:.2f}x |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--length", type=int, default=600, help="values per series")
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--checkpoint", default=str(WORK / "small"))
    parser.add_argument("--reference-venv", help="virtual environment with uni2ts 2.0.0 (scripts/make-reference-venv.sh)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "ENV=VALUE"),
                        help="an extra moirai-cli run with these environment settings")
    args = parser.parse_args()

    data = make_series_file_apart(WORK / f"series_{args.series}x{args.length}.csv", args.series, args.length)
    common = ["--horizon", str(args.horizon), "--context-length", str(args.context_length)]
    ours = [sys.executable, "-m", "moirai_cli.cli", "forecast", str(data), *common, "--num-samples", str(args.num_samples),
            "--batch-size", str(args.batch_size), "--model", args.checkpoint, "--device", "cpu", "--decoding", "exact",
            "--quiet", "--seed", "0", "--output", str(WORK / "out_contention.csv")]
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MOIRAI_NUM_THREADS")}
    runs: dict[str, tuple[list[str], dict[str, str]]] = {"moirai-cli exact": (ours, base_env)}
    for name, settings in parse_variants(args.variant).items():
        runs[f"moirai-cli exact, {name}"] = (ours, {**base_env, **settings})
    if args.reference_venv:
        reference = [str(Path(args.reference_venv) / "bin" / "python"), str(HERE / "reference_forecast.py"), str(data),
                     args.checkpoint, str(WORK / "out_reference_contention.csv"), *common,
                     "--num-samples", str(args.num_samples), "--batch-size", str(args.batch_size)]
        runs["reference (uni2ts 2.0.0)"] = (reference, base_env)

    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    results: dict[str, dict[bool, list[tuple[float, float]]]] = {name: {False: [], True: []} for name in runs}
    for repeat in range(args.repeats):
        for busy in (False, True):
            for name, (command, env) in runs.items():
                with competing_process(busy):
                    wall, cpu = timed_run(command, env)
                results[name][busy].append((wall, cpu))
                load = "1 busy process" if busy else "quiet"
                print(f"repeat {repeat + 1}, {load}: {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr, flush=True)

    print(f"\n{args.series} series x {args.length} values, context {args.context_length}, horizon {args.horizon}, "
          f"{args.num_samples} samples, exact decoding, {args.repeats} run(s) each, median; "
          f"load average after: {os.getloadavg()[0]:.2f}\n")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
