"""Fine-tuning: steps per second and peak memory per family, and what training does to held-out windows.

    python benchmarks/finetune_benchmark.py speed [--families moirai-1 moirai-moe moirai-2] [--modes full lora head]
    python benchmarks/finetune_benchmark.py improvement [--families ...] [--steps 150]
    python benchmarks/finetune_benchmark.py speed --device cuda --dtype bfloat16      # on a GPU (benchmarks/finetune_gpu.sh)

`speed` runs each (family, mode) in a fresh process on the small size's architecture with random
weights (benchmarks/make_checkpoint.py, written to benchmarks/work/FAMILY-small when missing):
`--steps` training steps of `--batch-size` windows of `--context` + `--horizon` hourly steps of
sample_data/seattle_temps.csv, without validation. It reports steps per second after the first
step (which sets up kernels), the growth of peak resident memory over the run (CPU) or the peak
allocated memory (CUDA), and the estimate `finetune` checks before it starts
(moirai_cli/training/memory.py).

`improvement` fine-tunes each family's random-weight small checkpoint on the same series and
reports the metrics of the last `--validation-windows` days, held out of training, before and
after (`FinetuneResult.metrics_before/after`, as `moirai evaluate` scores them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work"
DATA = ROOT / "sample_data" / "seattle_temps.csv"
FAMILIES = ("moirai-1", "moirai-moe", "moirai-2")

CHILD = r"""
import json, resource, sys, time
import torch
import moirai_cli
from moirai_cli.data import load_dataset
from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.runtime import use_threads
from moirai_cli.training import FinetuneSettings, finetune
from moirai_cli.training.memory import TrainingRequest, training_bytes
from moirai_cli.training.trainer import trainable_count

options = json.loads(sys.argv[1])
use_threads(options["threads"])
device = options["device"]
forecaster = MoiraiForecaster.from_pretrained(options["checkpoint"], device=device)
dataset = load_dataset(options["data"])
settings = FinetuneSettings(
    context_length=options["context"], steps=options["steps"], batch_size=options["batch_size"], mode=options["mode"],
    learning_rate=options["learning_rate"], validation_windows=options["validation_windows"],
    validation_interval=options["validation_interval"], patience=options["patience"], patch_size=16,
    dtype=options["dtype"], seed=0,
)
times = []
def progress(state):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter())
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result = finetune(forecaster, dataset.series, options["horizon"], settings, freq=dataset.freq, progress=progress)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else after - before
request = TrainingRequest(settings.batch_size, settings.context_length, options["horizon"], 16, 1, 0,
                          forecaster.parameter_count, trainable_count(forecaster.model, settings))
print(json.dumps({
    "steps_per_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
    "peak": peak, "estimate": training_bytes(forecaster.model.config, request, torch.device(device)),
    "trainable": request.trainable, "parameters": request.parameters,
    "before": result.metrics_before, "after": result.metrics_after, "best_step": result.best_step,
    "steps_run": result.steps_run, "base_loss": result.base_validation_loss, "best_loss": result.best_validation_loss,
}))
"""


def checkpoint(family: str) -> Path:
    """The random-weight small checkpoint of a family, written when missing."""
    folder = WORK / f"{family}-small"
    if not (folder / "model.safetensors").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_checkpoint.py"), str(folder),
                        "--family", family, "--size", "small"], check=True)
    return folder


def run(options: dict) -> dict:
    """One fine-tuning run in a fresh process; its measurements."""
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(options)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["speed", "improvement"])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--modes", nargs="+", choices=["full", "lora", "head"], default=["full", "lora", "head"])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 6 for speed, 150 for improvement)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--validation-windows", type=int, default=7, help="held-out days (improvement)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: moirai-cli's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    base = dict(data=str(DATA), context=args.context, horizon=args.horizon, batch_size=args.batch_size, threads=args.threads,
                device=args.device, dtype=args.dtype, learning_rate=args.learning_rate, patience=1000)
    mib = 2**20
    if args.what == "speed":
        print("| family | mode | parameters trained | steps/s | peak (MiB) | estimate (MiB) |")
        print("|---|---|---|---|---|---|")
        for family in args.families:
            for mode in args.modes:
                result = run({**base, "checkpoint": str(checkpoint(family)), "mode": mode, "steps": args.steps or 6,
                              "validation_windows": 0, "validation_interval": 1000})
                print(f"| {family} | {mode} | {result['trainable'] / 1e6:.2f}M of {result['parameters'] / 1e6:.1f}M "
                      f"| {result['steps_per_s']:.2f} | {result['peak'] / mib:.0f} | {result['estimate'] / mib:.0f} |", flush=True)
    else:
        print("| family | mode | steps (kept) | validation loss base -> kept | WQL before -> after | MASE before -> after |")
        print("|---|---|---|---|---|---|")
        for family in args.families:
            for mode in args.modes:
                steps = args.steps or 150
                result = run({**base, "checkpoint": str(checkpoint(family)), "mode": mode, "steps": steps,
                              "validation_windows": args.validation_windows, "validation_interval": max(1, steps // 10)})
                before, after = result["before"], result["after"]
                print(f"| {family} | {mode} | {result['steps_run']} ({result['best_step']}) | {result['base_loss']:.3f} -> "
                      f"{result['best_loss']:.3f} | {before['wql']:.4f} -> {after['wql']:.4f} | "
                      f"{before['mase']:.3f} -> {after['mase']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
