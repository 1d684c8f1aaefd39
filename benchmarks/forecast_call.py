"""Time one `MoiraiForecaster.predict` call (no process start-up, no file I/O) and report peak memory.

    python benchmarks/forecast_call.py --series 32 --horizon 480 --decoding cached

Uses the series file `run_benchmark.py` writes (benchmarks/work/series_64x600.csv by default) and
the random real-size checkpoint. To compare with an older version of the package, run the same
command with PYTHONPATH pointing at a checkout of it (`git worktree add /tmp/old COMMIT`).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

import moirai_cli
from moirai_cli.forecasting.pipeline import MoiraiForecaster

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
    args = parser.parse_args()

    table = pd.read_csv(args.data)
    series = [group["target"].to_numpy(np.float32) for _, group in table.groupby("item_id")][: args.series]
    forecaster = MoiraiForecaster.from_pretrained(args.checkpoint, device="cpu")
    start = time.perf_counter()
    forecaster.predict(
        series, args.horizon, context_length=args.context_length, num_samples=args.num_samples,
        batch_size=args.batch_size, decoding=args.decoding, seed=0,
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{moirai_cli.__file__}: {len(series)} series, horizon {args.horizon}, {args.decoding}: "
          f"{seconds:.1f} s, peak {peak:.2f} GiB")


if __name__ == "__main__":
    main()
