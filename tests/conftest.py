"""Shared fixtures: the tiny checkpoints written by scripts/make_parity_fixtures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """A reference-initialised checkpoint folder with patch size 16 (d_model 128, 2 layers)."""
    return FIXTURES / "tiny-moe"


@pytest.fixture(scope="session")
def multipatch_checkpoint() -> Path:
    """A reference-initialised checkpoint folder with patch sizes 8, 16 and 32."""
    return FIXTURES / "tiny-moe-multipatch"


@pytest.fixture(scope="session")
def tiny_forecaster(tiny_checkpoint):
    """The tiny checkpoint loaded on the CPU."""
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    return MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="cpu")
