"""MoiraiForecaster.fit: a new forecaster fine-tuned on a table, read as predict_df reads it; the base left as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.errors import InputError
from moirai_cli.forecasting.pipeline import MoiraiForecaster

ROOT = Path(__file__).resolve().parents[2]


def test_fit_returns_a_tuned_forecaster_and_leaves_the_base(tmp_path):
    base = MoiraiForecaster.from_pretrained(str(ROOT / "tests" / "fixtures" / "tiny-moe"), device="cpu")
    table = pd.read_csv(ROOT / "sample_data" / "stocks.csv")
    before = base.predict_df(table, 6, seed=0, num_samples=20)
    weights = {name: value.clone() for name, value in base.model.state_dict().items()}
    tuned = base.fit(table, 6, context_length=48, steps=8, batch_size=8, learning_rate=3e-3, validation_windows=0, output_dir=tmp_path / "t")
    assert tuned is not base and all(np.array_equal(value, base.model.state_dict()[name]) for name, value in weights.items())
    after = tuned.predict_df(table, 6, seed=0, num_samples=20)
    assert list(after.columns) == list(before.columns) and not np.allclose(after["mean"], before["mean"])
    reloaded = MoiraiForecaster.from_pretrained(str(tmp_path / "t"), device="cpu").predict_df(table, 6, seed=0, num_samples=20)
    np.testing.assert_allclose(reloaded["mean"].to_numpy(), after["mean"].to_numpy(), rtol=1e-6)  # the folder holds those weights


def test_fit_names_its_options_as_python_does(tiny_forecaster):
    table = pd.read_csv(ROOT / "sample_data" / "stocks.csv")
    with pytest.raises(InputError, match=r"^learning_rate must be > 0, got 0$"):
        tiny_forecaster.fit(table, 6, learning_rate=0)
    with pytest.raises(TypeError, match=r"unknown option 'step' \(did you mean 'steps'\?\)"):
        tiny_forecaster.fit(table, 6, step=3)
    with pytest.raises(InputError, match="pass dayfirst=True or dayfirst=False"):
        tiny_forecaster.fit(table.assign(date=["03/04/2024"] * len(table)), 6)
