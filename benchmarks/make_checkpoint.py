"""Write a random-initialised Moirai-MoE checkpoint of the published small or base size.

    python benchmarks/make_checkpoint.py benchmarks/work/small --size small [--seed 0]

The folder gets `config.json` and `model.safetensors`, the layout of the Hub repos
Salesforce/moirai-moe-1.0-R-small and -base, so the engine loads it like the real thing
(`MoiraiForecaster.from_pretrained(folder)`, `moirai forecast --model folder`). The weights
are random: the forecasts mean nothing, but speed and memory are those of the real model.

Sizes (from the published checkpoints): small has d_model 384, d_ff 512 and 6 layers
(117.0M parameters); base has 768, 1024 and 12 layers (935.1M). Both use the single patch
size 16 of the MoE models. Parameters are counted without the routing-centroid buffer
(num_layers x 32 x d_model float64 values, also written). Small takes about 10 s and
0.7 GB of memory to write (447 MiB on disk); base about a minute and 4 GB (3.5 GiB on disk).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from moirai_cli.model.checkpoint import random_model, save_checkpoint
from moirai_cli.model.config import MoiraiMoEConfig
from moirai_cli.model.network import MoiraiMoE

# The published Moirai-MoE sizes; every other setting keeps MoiraiMoEConfig's defaults,
# which are the published ones (max_seq_len 512, scaling on, the four-component mixture).
SIZES: dict[str, dict] = {
    "small": {"d_model": 384, "d_ff": 512, "num_layers": 6, "patch_sizes": (16,)},
    "base": {"d_model": 768, "d_ff": 1024, "num_layers": 12, "patch_sizes": (16,)},
}


def config_for(size: str) -> MoiraiMoEConfig:
    """The architecture of a named size."""
    return MoiraiMoEConfig(**SIZES[size])


def parameter_count(config: MoiraiMoEConfig) -> int:
    """Trainable parameters of a network of this config, counted without allocating it."""
    with torch.device("meta"):
        model = MoiraiMoE(config)
    return sum(parameter.numel() for parameter in model.parameters())


def write_checkpoint(folder: Path, config: MoiraiMoEConfig, seed: int = 0) -> int:
    """Write a random network of `config` to `folder` in the Hub layout; return its parameter count."""
    model = random_model(config, seed=seed)
    save_checkpoint(model, Path(folder))
    return sum(parameter.numel() for parameter in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write config.json and model.safetensors into")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="published size to imitate (default small)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)

    config = config_for(args.size)
    started = time.perf_counter()
    count = write_checkpoint(args.out_dir, config, seed=args.seed)
    megabytes = sum(path.stat().st_size for path in args.out_dir.iterdir()) / 2**20
    print(
        f"wrote {args.out_dir}: {args.size} size (d_model {config.d_model}, d_ff {config.d_ff}, "
        f"{config.num_layers} layers, patch sizes {list(config.patch_sizes)}), "
        f"{count / 1e6:.1f}M parameters ({count:,}), {megabytes:.0f} MiB, "
        f"seed {args.seed}, {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
