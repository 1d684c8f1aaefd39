"""Compare the memory estimate that `predict` checks (moirai_cli/forecasting/memory.py) with measured peaks.

    python benchmarks/memory_estimate.py --checkpoint benchmarks/work/small [--quick]

Each case runs in a fresh process: load the model, note the peak resident memory, run one predict
call, note the peak again. The difference is what the call needed; the estimate should be above it,
by a small factor. CPU only (on CPU the device memory is the host's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = [  # series, horizon, samples, batch, context, decoding
    (64, 48, 100, 32, 512, "exact"),
    (64, 48, 100, 32, 512, "cached"),
    (32, 256, 100, 32, 512, "exact"),
    (32, 256, 100, 32, 512, "cached"),
    (8, 1024, 100, 8, 1024, "cached"),
    (1, 2048, 20, 1, 2048, "exact"),
    (256, 24, 20, 256, 2048, "exact"),
]
QUICK = CASES[:4]

CHILD = r"""
import json, resource, sys
import numpy as np
from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.forecasting.memory import estimate_bytes, request_for
from moirai_cli.runtime import keep_freed_memory_for_reuse
keep_freed_memory_for_reuse()
checkpoint, series, horizon, samples, batch, context, decoding = sys.argv[1:]
series, horizon, samples, batch, context = map(int, (series, horizon, samples, batch, context))
forecaster = MoiraiForecaster.from_pretrained(checkpoint, device="cpu")
rng = np.random.default_rng(0)
targets = [rng.normal(size=context + 64).cumsum() for _ in range(series)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
forecaster.predict(targets, horizon, num_samples=samples, batch_size=batch, context_length=context,
                   decoding=decoding, seed=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
request = request_for(forecaster.model.config, [t[:, None] for t in targets], None, None, horizon=horizon,
                      num_samples=samples, batch_size=batch, context_length=context, patch_size=16, decoding=decoding)
device, host = estimate_bytes(forecaster.model.config, request)
print(json.dumps({"measured": after - before, "estimate": device + host}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--quick", action="store_true", help="only the first four cases")
    args = parser.parse_args()
    print("| series | horizon | samples | batch | context | decoding | measured (MiB) | estimate (MiB) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in QUICK if args.quick else CASES:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, args.checkpoint, *map(str, case)], capture_output=True, text=True, check=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        measured, estimate = result["measured"] / 2**20, result["estimate"] / 2**20
        print(f"| {' | '.join(map(str, case))} | {measured:.0f} | {estimate:.0f} | {estimate / max(measured, 1):.1f} |", flush=True)


if __name__ == "__main__":
    main()
