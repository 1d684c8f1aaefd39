"""Write a random-initialised Moirai checkpoint of a published family and size.

    python benchmarks/make_checkpoint.py benchmarks/work/small --size small [--family moirai-moe] [--seed 0]
    python benchmarks/make_checkpoint.py benchmarks/work/moirai-1-small --family moirai-1 --size small
    python benchmarks/make_checkpoint.py benchmarks/work/moirai-2-small --family moirai-2 --size small

The folder gets `config.json` and `model.safetensors` in the layout of the Hub repo of that
family and size (moirai_cli.model.catalog), so the engine loads it like the real thing
(`MoiraiForecaster.from_pretrained(folder)`, `moirai forecast --model folder`), and so does the
reference. The weights are random: the forecasts mean nothing, but speed and memory are those
of the real model.

Sizes (from the published checkpoints): Moirai-MoE small has d_model 384, d_ff 512 and 6 layers
(117.0M parameters, 447 MiB on disk, about 10 s to write), base 768, 1024 and 12 layers (935.1M,
3.5 GiB, about a minute); Moirai 1.x small, base and large have d_model 384, 768 and 1024 with 6,
12 and 24 layers (13.8M, 91.4M, 311.0M); Moirai 2.0 small has d_model 384, d_ff 1024 and 6 layers
(11.4M). MoE parameters are counted without the routing-centroid buffer (num_layers x 32 x d_model
float64 values, also written).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from moirai_cli.model.catalog import PUBLISHED, find_size, parameter_count
from moirai_cli.model.checkpoint import random_model, save_checkpoint
from moirai_cli.model.config import MOIRAI_MOE, FamilyConfig

FAMILIES = sorted({c.family for c in PUBLISHED})
SIZES = sorted({c.size for c in PUBLISHED})


def config_for(size: str, family: str = MOIRAI_MOE) -> FamilyConfig:
    """The architecture of a published family and size."""
    return find_size(family, size).config


def write_checkpoint(folder: Path, config: FamilyConfig, seed: int = 0) -> int:
    """Write a random network of `config` to `folder` in the Hub layout; return its parameter count."""
    model = random_model(config, seed=seed)
    save_checkpoint(model, Path(folder))
    return sum(parameter.numel() for parameter in model.parameters())


def describe(config: FamilyConfig) -> str:
    """The architecture in a few words."""
    return (
        f"d_model {config.d_model}, d_ff {config.d_ff}, {config.num_layers} layers, "
        f"patch sizes {list(config.patch_sizes)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write config.json and model.safetensors into")
    parser.add_argument("--family", choices=FAMILIES, default=MOIRAI_MOE, help="model family (default moirai-moe)")
    parser.add_argument("--size", choices=SIZES, default="small", help="published size to imitate (default small)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)

    try:
        config = config_for(args.size, args.family)
    except KeyError as error:
        parser.error(str(error.args[0]))
    started = time.perf_counter()
    count = write_checkpoint(args.out_dir, config, seed=args.seed)
    megabytes = sum(path.stat().st_size for path in args.out_dir.iterdir()) / 2**20
    print(
        f"wrote {args.out_dir}: {args.family} {args.size} ({describe(config)}), "
        f"{count / 1e6:.1f}M parameters ({count:,}), {megabytes:.0f} MiB, "
        f"seed {args.seed}, {time.perf_counter() - started:.1f} s"
    )
    return 0


__all__ = ["config_for", "parameter_count", "write_checkpoint", "main"]

if __name__ == "__main__":
    sys.exit(main())
