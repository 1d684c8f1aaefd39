"""Typed configurations of the three Moirai families, parsed from a checkpoint's `config.json`.

Each published checkpoint's `config.json` holds the constructor arguments of its reference
network class, so the keys tell the families apart:

- Moirai 1.0-R / 1.1-R: `patch_sizes` and a mixture `distr_output`, no `d_ff` (the dense
  feed-forward width follows from `d_model`);
- Moirai-MoE 1.0-R: the same plus `d_ff` (the width of each expert);
- Moirai 2.0-R: one `patch_size`, `num_predict_token` and `quantile_levels` (a quantile head).

The `distr_output` entry names its distribution classes with dotted `_target_` strings. We
treat those strings as labels looked up in a fixed table: nothing named in a file is ever
imported or instantiated.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Union

from moirai_cli.errors import ModelError

# Family names, as `MoiraiForecaster.family` reports them, and how people call them.
MOIRAI_1 = "moirai-1"
MOIRAI_MOE = "moirai-moe"
MOIRAI_2 = "moirai-2"
FAMILY_TITLES: dict[str, str] = {MOIRAI_1: "Moirai 1.x", MOIRAI_MOE: "Moirai-MoE", MOIRAI_2: "Moirai 2.0"}

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
MOIRAI_2_QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # a 2.0 config without its own levels


@dataclass(frozen=True)
class ComponentSpec:
    """One mixture component: its kind and, for the fixed-scale normal, its scale."""

    kind: str
    fixed_scale: float | None = None

    @property
    def params(self) -> tuple[str, ...]:
        return COMPONENT_PARAMS[self.kind]


def default_components() -> tuple[ComponentSpec, ...]:
    """The four-component mixture every published mixture checkpoint uses."""
    return (
        ComponentSpec("student_t"),
        ComponentSpec("normal_fixed_scale", 1e-3),
        ComponentSpec("negative_binomial"),
        ComponentSpec("log_normal"),
    )


def _int_tuple(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


# How each config.json key is read (the same key means the same thing in every family).
KEY_READERS: dict[str, Callable[[Any], Any]] = {
    "d_model": int,
    "d_ff": int,
    "num_layers": int,
    "patch_sizes": _int_tuple,
    "patch_size": int,
    "max_seq_len": int,
    "attn_dropout_p": float,
    "dropout_p": float,
    "scaling": bool,
    "num_predict_token": int,
    "quantile_levels": lambda values: tuple(float(q) for q in values),
}


class ConfigFields:
    """Parsing and writing shared by the family configs: one dataclass field per config.json key.

    A field without a default is a required key; the `components` field stands for the
    `distr_output` key.
    """

    family: ClassVar[str]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "FamilyConfig":
        """Build a config from the checkpoint's JSON dictionary; unknown labels are errors."""
        if not isinstance(raw, dict):
            raise ModelError(f"{source}: expected a JSON object of model settings, got {type(raw).__name__}")
        declared = fields(cls)  # type: ignore[arg-type]
        required = [f.name for f in declared if f.default is MISSING and f.default_factory is MISSING]
        if any(f.name == "components" for f in declared):
            required.append("distr_output")
        missing = [key for key in required if key not in raw]
        if missing:
            raise ModelError(f"{source}: missing key(s) {', '.join(missing)}")
        values: dict[str, Any] = {}
        try:
            for item in declared:
                if item.name == "components":
                    values["components"] = parse_distr_output(raw["distr_output"], source)
                elif item.name in raw:
                    values[item.name] = KEY_READERS[item.name](raw[item.name])
            config = cls(**values)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed value ({exc})") from exc
        config.check(source)
        return config

    def check(self, source: str) -> None:
        """Raise a ModelError for values no network can be built from."""
        if self.d_model % HEAD_DIM != 0 or self.d_model <= 0:
            raise ModelError(f"{source}: d_model must be a positive multiple of {HEAD_DIM}")
        if not self.patch_sizes or min(self.patch_sizes) < 1:
            raise ModelError(f"{source}: patch_sizes must be a non-empty list of positive sizes")

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint layout of this config (inverse of `from_dict`)."""
        raw: dict[str, Any] = {}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if item.name == "components":
                raw["distr_output"] = {"_target_": MIXTURE_LABEL, "components": [encode_component(c) for c in value]}
            else:
                raw[item.name] = list(value) if isinstance(value, tuple) else value
        return raw

    @property
    def num_heads(self) -> int:
        return self.d_model // HEAD_DIM

    @property
    def max_patch_size(self) -> int:
        return max(self.patch_sizes)

    def longest_context(self, horizon: int, patch_size: int, tokens_per_step: int = 1) -> int:
        """The most context steps that fit, with the horizon, in max_seq_len tokens (the longest sequence trained on).

        Every target variate and covariate takes one token per patch of `patch_size` steps.
        """
        patches = self.max_seq_len // max(1, tokens_per_step) - -(-horizon // patch_size)  # type: ignore[attr-defined]
        return max(0, patches) * patch_size


@dataclass(frozen=True)
class MoiraiMoEConfig(ConfigFields):
    """Architecture hyper-parameters of a Moirai-MoE checkpoint."""

    family: ClassVar[str] = MOIRAI_MOE

    d_model: int
    d_ff: int
    num_layers: int
    patch_sizes: tuple[int, ...]
    max_seq_len: int = 512
    attn_dropout_p: float = 0.0
    dropout_p: float = 0.0
    scaling: bool = True
    components: tuple[ComponentSpec, ...] = field(default_factory=default_components)


def dense_feed_forward_width(d_model: int) -> int:
    """The gated feed-forward width Moirai 1.x derives from d_model: 2/3 of 4 x d_model, rounded up to 8."""
    return (int(4 * d_model * 2 / 3) + 7) // 8 * 8


@dataclass(frozen=True)
class Moirai1Config(ConfigFields):
    """Architecture hyper-parameters of a Moirai 1.0-R or 1.1-R checkpoint (masked encoder, dense layers)."""

    family: ClassVar[str] = MOIRAI_1

    d_model: int
    num_layers: int
    patch_sizes: tuple[int, ...]
    max_seq_len: int = 512
    attn_dropout_p: float = 0.0
    dropout_p: float = 0.0
    scaling: bool = True
    components: tuple[ComponentSpec, ...] = field(default_factory=default_components)

    @property
    def d_ff(self) -> int:
        return dense_feed_forward_width(self.d_model)


@dataclass(frozen=True)
class Moirai2Config(ConfigFields):
    """Architecture hyper-parameters of a Moirai 2.0-R checkpoint (decoder-only, quantile head)."""

    family: ClassVar[str] = MOIRAI_2

    d_model: int
    d_ff: int
    num_layers: int
    patch_size: int
    max_seq_len: int = 512
    attn_dropout_p: float = 0.0
    dropout_p: float = 0.0
    scaling: bool = True
    num_predict_token: int = 1
    quantile_levels: tuple[float, ...] = MOIRAI_2_QUANTILE_LEVELS

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        return (self.patch_size,)

    @property
    def num_quantiles(self) -> int:
        return len(self.quantile_levels)

    def check(self, source: str) -> None:
        super().check(source)
        if self.num_predict_token < 1:
            raise ModelError(f"{source}: num_predict_token must be at least 1, got {self.num_predict_token}")
        levels = self.quantile_levels
        if not levels or any(not 0 < q < 1 for q in levels) or list(levels) != sorted(set(levels)):
            raise ModelError(f"{source}: quantile_levels must be increasing levels strictly between 0 and 1, got {list(levels)}")


FamilyConfig = Union[MoiraiMoEConfig, Moirai1Config, Moirai2Config]
CONFIG_CLASSES: dict[str, type] = {MOIRAI_1: Moirai1Config, MOIRAI_MOE: MoiraiMoEConfig, MOIRAI_2: Moirai2Config}


def detect_family(raw: Any, source: str = "config.json") -> str:
    """Which Moirai family a config.json dictionary describes, from its keys; a ModelError otherwise."""
    if not isinstance(raw, dict):
        raise ModelError(f"{source}: expected a JSON object of model settings, got {type(raw).__name__}")
    mixture = "patch_sizes" in raw or "distr_output" in raw
    quantile = "patch_size" in raw or "num_predict_token" in raw or "quantile_levels" in raw
    if mixture and quantile:
        raise ModelError(
            f"{source}: mixes Moirai 1.x/MoE keys (patch_sizes, distr_output) with Moirai 2.0 keys "
            "(patch_size, num_predict_token, quantile_levels); cannot tell which model it is"
        )
    if mixture:
        return MOIRAI_MOE if "d_ff" in raw else MOIRAI_1
    if quantile:
        return MOIRAI_2
    raise ModelError(
        f"{source}: not a Moirai checkpoint config: expected patch_sizes and distr_output (Moirai 1.x; "
        "Moirai-MoE adds d_ff) or patch_size, num_predict_token and quantile_levels (Moirai 2.0)"
    )


def parse_config(raw: Any, source: str = "config.json") -> FamilyConfig:
    """The typed config of whichever family `raw` describes."""
    return CONFIG_CLASSES[detect_family(raw, source)].from_dict(raw, source)


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


def load_config(path: Path) -> FamilyConfig:
    """Parse `config.json` at `path` into the config of the family it describes."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read model config ({exc})") from exc
    return parse_config(raw, source=str(path))
