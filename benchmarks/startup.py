"""Start-up time of the `moirai` command, whole process: `--version`, `--help`, and importing what `forecast` runs.

Alternates the checkouts given (each by the folder that holds its `moirai_cli`, put first on PYTHONPATH), so
that a busy machine slows every variant alike, and prints the median and the runs of each:

    python benchmarks/startup.py --repeats 5 --checkout new=. --checkout old=/path/to/old/checkout

Run it from outside any checkout's folder, or with absolute paths: `python -m` puts the current folder first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "moirai --version": ["-m", "moirai_cli.cli", "--version"],
    "moirai --help": ["-m", "moirai_cli.cli", "--help"],
    "import the forecast path": ["-c", "import moirai_cli.cli, moirai_cli.forecasting.pipeline, moirai_cli.data"],
}


def timed(arguments: list[str], checkout: str) -> float:
    """Seconds from start to exit of one Python process."""
    environment = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], env=environment, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", required=True, help="NAME=FOLDER holding moirai_cli; repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    checkouts = dict(item.split("=", 1) for item in args.checkout)
    for label, arguments in COMMANDS.items():
        runs: dict[str, list[float]] = {name: [] for name in checkouts}
        for _ in range(args.repeats):
            for name, folder in checkouts.items():
                runs[name].append(timed(arguments, folder))
        for name, seconds in runs.items():
            shown = " ".join(f"{s:.2f}" for s in seconds)
            print(f"{label:28} {name:8} median {statistics.median(seconds):.2f} s   runs: {shown}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
