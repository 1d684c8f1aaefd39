"""The settings of a fine-tuning run: one frozen, validated, picklable value.

Every check raises an InputError naming the setting by its Python name, so the command line
and `MoiraiForecaster.fit` report bad options alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from moirai_cli.errors import InputError, option
from moirai_cli.forecasting.pipeline import DEFAULT_CONTEXT_LENGTH

MODES = ("full", "lora", "head")
"""full: every weight; lora: low-rank adapters on the encoder's linear layers; head: the output head only."""
DEFAULT_LEARNING_RATES = {"full": 1e-5, "lora": 1e-4, "head": 1e-4}
"""Learning rate by mode when none is given: adapters and the head alone take larger steps than all weights."""
TRAINING_DTYPES = ("float32", "bfloat16")
"""float32, or bfloat16 autocast (float32 master weights and optimiser state; meant for GPUs)."""


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune: windows, steps, optimiser, what trains, validation and early stopping.

    Windows of `context_length` steps plus the horizon are cut from each series' history before its
    last `validation_windows` horizons, `batch_size` of them a step. Every `validation_interval` steps
    the loss on those held-out horizons is computed; the best step's weights are kept, and the run
    stops after `patience` validations without improvement. `patch_size` None takes the family's
    forecast default (Moirai 1.x: the size `auto` picks for most training series).
    """

    context_length: int = DEFAULT_CONTEXT_LENGTH
    steps: int = 200
    learning_rate: float | None = None  # None: DEFAULT_LEARNING_RATES[mode]
    batch_size: int = 32
    mode: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    validation_windows: int = 1
    validation_interval: int = 10
    patience: int = 5
    patch_size: int | None = None
    seed: int = 0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("context_length", "steps", "batch_size", "lora_rank", "validation_interval", "patience"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("validation_windows", "warmup_steps", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.patch_size is not None:
            _check_int("patch_size", self.patch_size, minimum=1)
        if self.mode not in MODES:
            raise InputError(f"{option('mode')} must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.dtype not in TRAINING_DTYPES:
            raise InputError(f"{option('dtype')} must be one of {', '.join(TRAINING_DTYPES)}, got {self.dtype!r}")
        if self.learning_rate is not None:
            _check_positive("learning_rate", self.learning_rate)
        _check_positive("lora_alpha", self.lora_alpha)
        if self.max_grad_norm is not None:
            _check_positive("max_grad_norm", self.max_grad_norm)
        _check_number("weight_decay", self.weight_decay)
        if self.weight_decay < 0:
            raise InputError(f"{option('weight_decay')} must be >= 0, got {self.weight_decay}")
        if self.warmup_steps > self.steps:
            raise InputError(f"{option('warmup_steps')} must be at most {option('steps')} ({self.steps}), got {self.warmup_steps}")

    @property
    def effective_learning_rate(self) -> float:
        """The learning rate the run uses: the given one, else the mode's default."""
        return DEFAULT_LEARNING_RATES[self.mode] if self.learning_rate is None else float(self.learning_rate)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for the model card and the resume state."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FinetuneSettings":
        """Settings from `to_dict`'s output; unknown keys are an InputError."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown fine-tuning setting(s): {', '.join(unknown)}")
        return cls(**values)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{option(name)} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{option(name)} must be at least {minimum}, got {value}")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{option(name)} must be a finite number, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    _check_number(name, value)
    if value <= 0:
        raise InputError(f"{option(name)} must be > 0, got {value}")
