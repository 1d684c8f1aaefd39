"""Decoding details the parity tests cannot see through Monte-Carlo noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moirai_cli.forecasting.decoding import forward_at
from moirai_cli.forecasting.execution import CPU_TOKEN_BUDGET
from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.forecasting.pipeline import MoiraiForecaster

PARITY = Path(__file__).parent.parent / "fixtures" / "parity"


@pytest.mark.parametrize("case", ["tiny-moe__univariate_covariates", "tiny-moe__multivariate_covariates"])
def test_exact_decodings_first_pass_is_the_references_one_step_distribution(case):
    """Known covariates' future values enter their scaler statistics in the reference, even though
    the first pass reads the last context token: trimming later tokens must not change that."""
    data = dict(np.load(PARITY / f"{case}.npz"))
    forecaster = MoiraiForecaster.from_pretrained(str(PARITY.parent / case.split("__")[0]), device="cpu")
    items = [
        pack_series(
            data[f"input_{i}_target"].reshape(len(data[f"input_{i}_target"]), -1), int(data["horizon"]),
            int(data["context_length"]), 16, 16, data[f"input_{i}_known"], data[f"input_{i}_past"],
        )
        for i in range(int(data["num_series"]))
    ]
    real = data["sample_id"] == 1
    for row, item in enumerate(items):
        batch = collate([item], 16)  # one layout: the pass leaves out every future token
        plan = batch.pass_plan(0)
        assert len(plan[0]) < len(item.tokens["sample_id"])
        with torch.inference_mode():
            first = forward_at(forecaster.model, batch.tokens, batch.last_context, CPU_TOKEN_BUDGET, plan)
        reference_rows = np.flatnonzero(real[row])[item.last_context]  # the reference's index of each last context token
        np.testing.assert_allclose(first.mean[0].numpy(), data["mean"][row][reference_rows], rtol=1e-5, atol=1e-5 * np.abs(data["mean"]).max())
