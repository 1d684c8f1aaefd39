"""Moirai 2.0 parity with the reference (uni2ts 2.0.0's Moirai2Forecast), on fixtures written by
scripts/make_parity_fixtures.py from a random checkpoint with the published patch size (16),
patches per pass (4) and quantile levels (0.1 .. 0.9).

Nothing is random in 2.0's forecasts, so both checks hold to float32 rounding (1e-5 of the
field's magnitude): (a) tokens and the first pass's quantiles at every token; (b) the
forecast quantiles, over one pass (horizons of 3 and 4 patches) and with the quantile paths
fed back (7 and 10 patches: two and three passes, the last one partial).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_parity import load_case, max_relative_error

from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.forecasting.pipeline import DirectQuantileForecast, MoiraiForecaster

FIXTURES = Path(__file__).parent.parent / "fixtures"
PARITY = FIXTURES / "parity-moirai-2"
CASES = sorted(PARITY.glob("*.npz"))
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def forecaster() -> MoiraiForecaster:
    return MoiraiForecaster.from_pretrained(str(FIXTURES / "tiny-moirai-2"), device="cpu")


def test_the_checkpoint_is_a_moirai_2(forecaster):
    assert forecaster.family == "moirai-2" and forecaster.output_kind == "quantiles"
    assert forecaster.patch_sizes == (16,) and forecaster.default_patch_size == 16
    assert forecaster.model.config.num_predict_token == 4
    assert forecaster.quantile_levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_the_cases_cover_one_pass_and_fed_back_passes():
    patches = sorted(-(-int(np.load(path)["horizon"]) // 16) for path in CASES)
    assert patches == [3, 4, 7, 10]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_first_pass_matches_reference(path: Path, forecaster):
    _, data, series = load_case(path)
    context_length, horizon = int(data["context_length"]), int(data["horizon"])
    items = [
        pack_series(s["target"].reshape(len(s["target"]), -1), horizon, context_length, 16, 16, s["known"], s["past"])
        for s in series
    ]
    real = data["sample_id"] == 1
    for row, item in enumerate(items):
        assert real[row].sum() == len(item.tokens["sample_id"]), "we keep exactly the reference's non-padding tokens"
        for name in ("target", "observed", "time_id", "variate_id", "prediction_mask"):
            np.testing.assert_array_equal(item.tokens[name], data[name][row][real[row]], err_msg=f"{path.name}: {name} row {row}")
    with torch.inference_mode():
        out = forecaster.model(collate(items, 16).tokens)  # (B, L, per pass, Q, P)
    rows = [np.flatnonzero(real[r]) for r in range(len(items))]
    ours = np.concatenate([out[r, : len(index)].flatten(-3).numpy() for r, index in enumerate(rows)])
    reference = np.concatenate([data["first_pass"][r][index] for r, index in enumerate(rows)])
    assert max_relative_error(ours, reference) < TOLERANCE


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_forecast_quantiles_match_reference(path: Path, forecaster):
    _, data, series = load_case(path)
    forecast = forecaster.predict(
        [s["target"] for s in series],
        int(data["horizon"]),
        known_covariates=[s["known"] for s in series] if series[0]["known"] is not None else None,
        past_covariates=[s["past"] for s in series] if series[0]["past"] is not None else None,
        context_length=int(data["context_length"]),
        batch_size=3,  # several batches, and a batch of one for the odd series
    )
    assert isinstance(forecast, DirectQuantileForecast) and forecast.samples is None
    assert forecast.values.shape == data["quantiles"].shape
    assert max_relative_error(forecast.values, data["quantiles"]) < TOLERANCE
    levels = tuple(data["quantile_levels"].tolist())
    np.testing.assert_array_equal(forecast.quantiles(levels), forecast.values)
    np.testing.assert_array_equal(forecast.mean, forecast.values[:, levels.index(0.5)])  # the reference's mean: the median


def test_a_scaler_frozen_at_the_context_would_fail_the_check(forecaster, monkeypatch):
    """Fed-back quantile paths must enter the scaler statistics of later passes, as in the reference."""
    import moirai_cli.forecasting.decoding as decoding

    honest = decoding.write_patch

    def write_as_prediction(tokens, positions, values):
        honest(tokens, positions, values)
        rows = torch.arange(positions.shape[0]).unsqueeze(1)
        tokens.prediction_mask[rows, positions] = True  # the value is there, but left out of the scaler

    monkeypatch.setattr(decoding, "write_patch", write_as_prediction)
    _, data, series = load_case(PARITY / "tiny-moirai-2__univariate_plain.npz")
    forecast = forecaster.predict([s["target"] for s in series], int(data["horizon"]), context_length=int(data["context_length"]))
    assert max_relative_error(forecast.values, data["quantiles"]) > 100 * TOLERANCE
