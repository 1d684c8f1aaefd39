"""FinetuneSettings: validated on creation, errors name the Python parameter, picklable, round-trips through dicts."""

from __future__ import annotations

import pickle

import pytest

from moirai_cli.errors import InputError
from moirai_cli.training import DEFAULT_LEARNING_RATES, FinetuneSettings


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": 0}, "learning_rate must be > 0, got 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"steps": 0}, "steps must be at least 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer, got 2.5"),
        ({"context_length": True}, "context_length must be an integer"),
        ({"mode": "adapter"}, "mode must be one of full, lora, head, got 'adapter'"),
        ({"lora_rank": 0}, "lora_rank must be at least 1"),
        ({"lora_alpha": -1.0}, "lora_alpha must be > 0"),
        ({"validation_windows": -1}, "validation_windows must be at least 0"),
        ({"patience": 0}, "patience must be at least 1"),
        ({"patch_size": 0}, "patch_size must be at least 1"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"warmup_steps": 20, "steps": 10}, r"warmup_steps must be at most steps \(10\), got 20"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
        ({"dtype": "float16"}, "dtype must be one of float32, bfloat16, got 'float16'"),
    ],
)
def test_a_bad_setting_is_an_input_error_naming_it(options, message):
    with pytest.raises(InputError, match=message):
        FinetuneSettings(**options)


def test_settings_are_frozen_picklable_and_round_trip():
    settings = FinetuneSettings(steps=50, mode="lora", lora_rank=4, patch_size=32, max_grad_norm=None)
    assert pickle.loads(pickle.dumps(settings)) == settings
    assert FinetuneSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(AttributeError):
        settings.steps = 3  # type: ignore[misc]
    with pytest.raises(InputError, match="unknown fine-tuning setting"):
        FinetuneSettings.from_dict({**settings.to_dict(), "epochs": 3})


@pytest.mark.parametrize("mode", ["full", "lora", "head"])
def test_the_learning_rate_defaults_by_mode(mode):
    assert FinetuneSettings(mode=mode).effective_learning_rate == DEFAULT_LEARNING_RATES[mode]
    assert FinetuneSettings(mode=mode, learning_rate=3e-4).effective_learning_rate == 3e-4
