"""Typed Moirai-MoE configuration, parsed from a checkpoint's `config.json`.

The `distr_output` entry of a checkpoint names its distribution classes with dotted
`_target_` strings. We treat those strings as labels looked up in a fixed table: nothing
named in a file is ever imported or instantiated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moirai_cli.errors import ModelError

# Label in config.json -> our component kind. Anything else is rejected.
MIXTURE_LABEL = "uni2ts.distribution.mixture.MixtureOutput"
COMPONENT_LABELS: dict[str, str] = {
    "uni2ts.distribution.student_t.StudentTOutput": "student_t",
    "uni2ts.distribution.normal.NormalFixedScaleOutput": "normal_fixed_scale",
    "uni2ts.distribution.negative_binomial.NegativeBinomialOutput": "negative_binomial",
    "uni2ts.distribution.log_normal.LogNormalOutput": "log_normal",
}
# Parameters each component kind projects, in the checkpoint's order.
COMPONENT_PARAMS: dict[str, tuple[str, ...]] = {
    "student_t": ("df", "loc", "scale"),
    "normal_fixed_scale": ("loc",),
    "negative_binomial": ("total_count", "logits"),
    "log_normal": ("loc", "scale"),
}

NUM_EXPERTS = 32
EXPERTS_PER_TOKEN = 2
HEAD_DIM = 64


@dataclass(frozen=True)
class ComponentSpec:
    """One mixture component: its kind and, for the fixed-scale normal, its scale."""

    kind: str
    fixed_scale: float | None = None

    @property
    def params(self) -> tuple[str, ...]:
        return COMPONENT_PARAMS[self.kind]


@dataclass(frozen=True)
class MoiraiMoEConfig:
    """Architecture hyper-parameters of a Moirai-MoE checkpoint."""

    d_model: int
    d_ff: int
    num_layers: int
    patch_sizes: tuple[int, ...]
    max_seq_len: int = 512
    attn_dropout_p: float = 0.0
    dropout_p: float = 0.0
    scaling: bool = True
    components: tuple[ComponentSpec, ...] = field(
        default_factory=lambda: (
            ComponentSpec("student_t"),
            ComponentSpec("normal_fixed_scale", 1e-3),
            ComponentSpec("negative_binomial"),
            ComponentSpec("log_normal"),
        )
    )

    @property
    def num_heads(self) -> int:
        return self.d_model // HEAD_DIM

    @property
    def max_patch_size(self) -> int:
        return max(self.patch_sizes)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "MoiraiMoEConfig":
        """Build a config from the checkpoint's JSON dictionary; unknown labels are errors."""
        if not isinstance(raw, dict):
            raise ModelError(f"{source}: expected a JSON object of model settings, got {type(raw).__name__}")
        required = ("d_model", "d_ff", "num_layers", "patch_sizes", "distr_output")
        missing = [key for key in required if key not in raw]
        if missing:
            raise ModelError(f"{source}: missing key(s) {', '.join(missing)}")
        try:
            config = cls(
                d_model=int(raw["d_model"]),
                d_ff=int(raw["d_ff"]),
                num_layers=int(raw["num_layers"]),
                patch_sizes=tuple(int(p) for p in raw["patch_sizes"]),
                max_seq_len=int(raw.get("max_seq_len", 512)),
                attn_dropout_p=float(raw.get("attn_dropout_p", 0.0)),
                dropout_p=float(raw.get("dropout_p", 0.0)),
                scaling=bool(raw.get("scaling", True)),
                components=parse_distr_output(raw["distr_output"], source),
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed value ({exc})") from exc
        if config.d_model % HEAD_DIM != 0 or config.d_model <= 0:
            raise ModelError(f"{source}: d_model must be a positive multiple of {HEAD_DIM}")
        if not config.patch_sizes or min(config.patch_sizes) < 1:
            raise ModelError(f"{source}: patch_sizes must be a non-empty list of positive sizes")
        return config

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint layout of this config (inverse of `from_dict`)."""
        raw = asdict(self)
        raw.pop("components")
        raw["patch_sizes"] = list(self.patch_sizes)
        raw["distr_output"] = {
            "_target_": MIXTURE_LABEL,
            "components": [encode_component(c) for c in self.components],
        }
        return raw


def encode_component(component: ComponentSpec) -> dict[str, Any]:
    """The `_target_` dictionary that stands for one component in config.json."""
    label = next(name for name, kind in COMPONENT_LABELS.items() if kind == component.kind)
    encoded: dict[str, Any] = {"_target_": label}
    if component.fixed_scale is not None:
        encoded["scale"] = component.fixed_scale
    return encoded


def parse_distr_output(raw: Any, source: str) -> tuple[ComponentSpec, ...]:
    """Read the mixture description; every `_target_` must be in our fixed table."""
    if not isinstance(raw, dict) or raw.get("_target_") != MIXTURE_LABEL:
        label = raw.get("_target_") if isinstance(raw, dict) else raw
        raise ModelError(f"{source}: unsupported distr_output {label!r} (expected {MIXTURE_LABEL})")
    entries = raw.get("components", [])
    if not isinstance(entries, list):
        raise ModelError(f"{source}: distr_output components must be a list, got {type(entries).__name__}")
    components = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ModelError(f"{source}: distribution component {entry!r} is not an object with a _target_ label")
        label = entry.get("_target_")
        kind = COMPONENT_LABELS.get(label) if isinstance(label, str) else None
        if kind is None:
            raise ModelError(f"{source}: unknown distribution component {label!r}")
        fixed_scale = float(entry.get("scale", 1e-3)) if kind == "normal_fixed_scale" else None
        components.append(ComponentSpec(kind, fixed_scale))
    if not components:
        raise ModelError(f"{source}: distr_output has no components")
    return tuple(components)


def load_config(path: Path) -> MoiraiMoEConfig:
    """Parse `config.json` at `path`."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read model config ({exc})") from exc
    return MoiraiMoEConfig.from_dict(raw, source=str(path))
