"""The published Moirai checkpoints: Hub repo id, family, size name and architecture.

The architectures are those of the Hub repos' config.json files (Moirai 1.0-R and 1.1-R share
theirs); parameter counts follow from them. Benchmarks build random checkpoints of these
layouts, and the command line can describe a checkpoint before downloading it.
"""

from __future__ import annotations

from dataclasses import dataclass

from moirai_cli.model.config import FamilyConfig, Moirai1Config, Moirai2Config, MoiraiMoEConfig
from moirai_cli.model.network import build_network

MOIRAI_1_PATCH_SIZES = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One checkpoint on the Hugging Face Hub."""

    repo_id: str
    size: str  # small, base or large
    config: FamilyConfig

    @property
    def family(self) -> str:
        return self.config.family


def _moirai_1(version: str, size: str, d_model: int, num_layers: int) -> PublishedCheckpoint:
    config = Moirai1Config(d_model=d_model, num_layers=num_layers, patch_sizes=MOIRAI_1_PATCH_SIZES)
    return PublishedCheckpoint(f"Salesforce/moirai-{version}-R-{size}", size, config)


PUBLISHED: tuple[PublishedCheckpoint, ...] = (
    *(
        _moirai_1(version, size, d_model, layers)
        for version in ("1.0", "1.1")
        for size, d_model, layers in (("small", 384, 6), ("base", 768, 12), ("large", 1024, 24))
    ),
    PublishedCheckpoint(
        "Salesforce/moirai-moe-1.0-R-small", "small", MoiraiMoEConfig(d_model=384, d_ff=512, num_layers=6, patch_sizes=(16,))
    ),
    PublishedCheckpoint(
        "Salesforce/moirai-moe-1.0-R-base", "base", MoiraiMoEConfig(d_model=768, d_ff=1024, num_layers=12, patch_sizes=(16,))
    ),
    PublishedCheckpoint(
        "Salesforce/moirai-2.0-R-small",
        "small",
        Moirai2Config(d_model=384, d_ff=1024, num_layers=6, patch_size=16, num_predict_token=4),
    ),
)


def find_published(repo_id: str) -> PublishedCheckpoint | None:
    """The published checkpoint with this repo id (case-insensitive, as the Hub), or None."""
    return next((c for c in PUBLISHED if c.repo_id.lower() == repo_id.lower()), None)


def find_size(family: str, size: str) -> PublishedCheckpoint:
    """The newest published checkpoint of a family and size; a KeyError naming the choices otherwise."""
    matches = [c for c in PUBLISHED if c.family == family and c.size == size]
    if not matches:
        choices = sorted({(c.family, c.size) for c in PUBLISHED})
        raise KeyError(f"no published {family} checkpoint of size {size!r}; choices: {choices}")
    return matches[-1]


def parameter_count(config: FamilyConfig) -> int:
    """Trainable parameters of a network of this config (MoE: every expert).

    Built on the CPU without its random initialisation, so the weights are never written: the memory is
    reserved, not used. (On torch's meta device every operation would load torch's compiler, which leaves
    an empty torchinductor_* folder in the temporary folder of each `moirai models`.)
    """
    from moirai_cli.model.checkpoint import skipped_weight_init

    with skipped_weight_init():
        model = build_network(config)
    return sum(parameter.numel() for parameter in model.parameters())
