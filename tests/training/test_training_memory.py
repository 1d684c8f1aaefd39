"""The memory estimate of a training step: it grows with every size that drives it, and says what would fit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from moirai_cli.errors import InputError
from moirai_cli.model.catalog import find_size
from moirai_cli.training import memory
from moirai_cli.training.memory import TrainingRequest, check_training_fits, training_bytes

REQUEST = TrainingRequest(batch_size=32, context_length=512, horizon=64, patch_size=16, variates=1, covariates=0,
                          parameters=14_000_000, trainable=14_000_000)


@pytest.mark.parametrize("family", ["moirai-1", "moirai-moe", "moirai-2"])
@pytest.mark.parametrize(("size", "larger"), [("batch_size", 64), ("context_length", 1024), ("horizon", 256),
                                              ("variates", 2), ("covariates", 3), ("trainable", 28_000_000)])
def test_the_estimate_grows_with_every_size(family, size, larger):
    config = find_size(family, "small").config
    assert training_bytes(config, dataclasses.replace(REQUEST, **{size: larger})) > training_bytes(config, REQUEST)


def test_adapters_and_the_head_need_less_than_every_weight():
    config = find_size("moirai-moe", "small").config
    full = dataclasses.replace(REQUEST, parameters=117_000_000, trainable=117_000_000)
    assert training_bytes(config, dataclasses.replace(full, trainable=400_000)) < training_bytes(config, full) - 2e9


def test_a_run_that_cannot_fit_is_refused_with_what_fits(monkeypatch):
    config = find_size("moirai-1", "small").config
    need = training_bytes(config, REQUEST)
    monkeypatch.setattr(memory, "available_bytes", lambda device: (need - 1, need - 1))
    with pytest.raises(InputError) as refused:
        check_training_fits(config, REQUEST, torch.device("cpu"))
    message = str(refused.value)
    assert "fine-tuning with batches of 32 windows of 512 + 64 steps needs about" in message
    fitting = int(message.split("a batch size of at most ")[1].split()[0])
    assert fitting == 31 and training_bytes(config, dataclasses.replace(REQUEST, batch_size=fitting)) < need
    assert "or a context length of at most" in message
    monkeypatch.setattr(memory, "available_bytes", lambda device: (need, need))
    check_training_fits(config, REQUEST, torch.device("cpu"))  # exactly enough
