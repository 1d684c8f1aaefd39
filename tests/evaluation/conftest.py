"""Shared fixtures for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURE_CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-moe"


@pytest.fixture(scope="module")
def real_forecaster(request):
    """A MoiraiForecaster on the tiny test checkpoint (the suite's tiny_checkpoint fixture when defined)."""
    try:
        checkpoint = request.getfixturevalue("tiny_checkpoint")
    except pytest.FixtureLookupError:
        checkpoint = FIXTURE_CHECKPOINT
    if not (Path(checkpoint) / "config.json").exists():
        pytest.skip("no tiny test checkpoint available")
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    return MoiraiForecaster.from_pretrained(str(checkpoint), device="cpu")
