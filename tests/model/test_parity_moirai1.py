"""Moirai 1.x parity with the reference (uni2ts 2.0.0's MoiraiForecast), on fixtures written by
scripts/make_parity_fixtures.py from a random checkpoint with the published patch sizes 8..128.

(a) tokens (zero-filled gaps, the 1.x rule) and the predictive distribution of one pass at
    every token, every parameter to 1e-5 relative, as for Moirai-MoE;
(b) the hold-out loss of every patch size that `patch_size="auto"` compares, to 1e-5
    relative, and the size it picks for each series;
(c) quantiles of 2000 sample paths with auto patch sizes, within the reference's own
    seed-to-seed noise (the Moirai-MoE tolerance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_parity import GAP_TOLERANCE, NUM_SAMPLES, load_case, max_relative_error, reference_distribution

from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.forecasting.pipeline import MoiraiForecaster

FIXTURES = Path(__file__).parent.parent / "fixtures"
PARITY = FIXTURES / "parity-moirai-1"
CASES = sorted(PARITY.glob("*.npz"))
PARAMETERS = {
    "student_df": (0, "df"), "student_loc": (0, "loc"), "student_scale": (0, "scale"),
    "normal_loc": (1, "loc"),
    "negbin_total_count": (2, "total_count"), "negbin_logits": (2, "logits"),
    "lognormal_loc": (3, "loc"), "lognormal_scale": (3, "scale"),
}


@pytest.fixture(scope="module")
def forecaster() -> MoiraiForecaster:
    return MoiraiForecaster.from_pretrained(str(FIXTURES / "tiny-moirai-1"), device="cpu")


def inputs(series: list[dict]) -> dict:
    """The fixture's series as predict's arguments."""
    return {
        "target": [s["target"] for s in series],
        "known_covariates": [s["known"] for s in series] if series[0]["known"] is not None else None,
        "past_covariates": [s["past"] for s in series] if series[0]["past"] is not None else None,
    }


def test_the_checkpoint_is_a_moirai_1_with_the_published_patch_sizes(forecaster):
    assert forecaster.family == "moirai-1" and forecaster.output_kind == "samples"
    assert forecaster.patch_sizes == (8, 16, 32, 64, 128)
    assert forecaster.default_patch_size == "auto"  # as the reference's MoiraiForecast


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_one_pass_distribution_matches_reference(path: Path, forecaster):
    _, data, series = load_case(path)
    context_length, horizon, size = int(data["context_length"]), int(data["horizon"]), int(data["patch_size"])
    items = [
        pack_series(
            s["target"].reshape(len(s["target"]), -1), horizon, context_length, size, 128, s["known"], s["past"],
            causal_mean_target=forecaster.procedure.causal_mean_target,
        )
        for s in series
    ]
    batch = collate(items, size)
    real = data["sample_id"] == 1
    for row, item in enumerate(items):
        assert real[row].sum() == len(item.tokens["sample_id"]), "we keep exactly the reference's non-padding tokens"
        for name in ("target", "observed", "time_id", "variate_id", "prediction_mask"):
            np.testing.assert_array_equal(item.tokens[name], data[name][row][real[row]], err_msg=f"{path.name}: {name} row {row}")
    with torch.inference_mode():
        distribution = forecaster.model(batch.tokens)
    rows = [np.flatnonzero(real[r]) for r in range(len(items))]

    def ours(tensor: torch.Tensor) -> np.ndarray:
        return np.concatenate([tensor[r, : len(index)].numpy() for r, index in enumerate(rows)])

    def ref(name: str) -> np.ndarray:
        return np.concatenate([data[name][r][index] for r, index in enumerate(rows)])

    errors = {name: max_relative_error(ours(distribution.params[k][param]), ref(name)) for name, (k, param) in PARAMETERS.items()}
    errors["log_weights"] = max_relative_error(ours(torch.log_softmax(distribution.logits, -1)), ref("log_weights"))
    errors["loc"] = max_relative_error(ours(distribution.loc[..., :1]), ref("loc"))
    errors["scale"] = max_relative_error(ours(distribution.scale[..., :1]), ref("scale"))
    errors["mean"] = max_relative_error(ours(distribution.mean), ref("mean"))
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, f"{worst}: relative error {errors[worst]:.2e}"
    values = torch.zeros(batch.tokens.target.shape)
    for r, index in enumerate(rows):
        values[r, : len(index)] = torch.from_numpy(data["values"][r][index])
    assert max_relative_error(ours(distribution.log_prob(values)), ref("log_prob")) < 1e-4  # see test_parity.py


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_log_prob_and_mean_formulas_match_reference(path: Path, forecaster):
    _, data, _ = load_case(path)
    distribution = reference_distribution(data, forecaster.model.config.components)
    real = data["sample_id"] == 1
    assert max_relative_error(distribution.log_prob(torch.from_numpy(data["values"])).numpy()[real], data["log_prob"][real]) < 1e-5
    assert max_relative_error(distribution.mean.numpy()[real], data["mean"][real]) < 1e-5


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_auto_patch_size_scores_and_picks_as_the_reference(path: Path, forecaster):
    _, data, series = load_case(path)
    args = inputs(series)
    targets = [t.reshape(len(t), -1) for t in args["target"]]
    context_length, horizon = int(data["context_length"]), int(data["horizon"])
    with torch.inference_mode():
        scores = np.stack([
            forecaster.holdout_nll(targets, args["past_covariates"], args["known_covariates"], horizon, context_length, size, 32)
            for size in forecaster.patch_sizes
        ])
    assert max_relative_error(scores, data["holdout_loss"]) < 1e-5
    expected = data["patch_sizes"][data["holdout_loss"].argmin(axis=0)]
    forecast = forecaster.predict(**args, horizon=horizon, context_length=context_length, num_samples=2, patch_size="auto", seed=0)
    np.testing.assert_array_equal(forecast.patch_sizes, expected)


def test_the_fixtures_make_auto_choose_several_sizes():
    chosen = set()
    for path in CASES:
        data = np.load(path)
        chosen |= set(data["patch_sizes"][data["holdout_loss"].argmin(axis=0)].tolist())
    assert len(chosen) >= 3, chosen


def quantile_gaps(path: Path, forecaster: MoiraiForecaster, seed: int = 7) -> tuple[float, float]:
    """(our gap, reference seed-to-seed gap): mean |quantile difference| over series, levels, steps."""
    _, data, series = load_case(path)
    forecast = forecaster.predict(
        **inputs(series), horizon=int(data["horizon"]), context_length=int(data["context_length"]),
        num_samples=NUM_SAMPLES, seed=seed, patch_size="auto",
    )
    ours = forecast.quantiles(data["quantile_levels"])
    reference, reference_again = data["quantiles_seed0"], data["quantiles_seed1"]
    return float(np.abs(ours - reference).mean()), float(np.abs(reference_again - reference).mean())


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_forecast_quantiles_within_reference_noise(path: Path, forecaster):
    ours, reference = quantile_gaps(path, forecaster)
    assert ours <= GAP_TOLERANCE * reference, f"our gap {ours:.4f} vs reference seed gap {reference:.4f}"


def test_the_moe_gap_rule_would_fail_the_token_check():
    """The token check tells the 1.x gap rule (zeros) from the Moirai-MoE one (causal mean)."""
    _, data, series = load_case(PARITY / "tiny-moirai-1__univariate_covariates.npz")
    first = series[0]
    assert np.isnan(first["target"]).any()
    context_length, horizon, size = int(data["context_length"]), int(data["horizon"]), int(data["patch_size"])
    moe_rule = pack_series(first["target"][:, None], horizon, context_length, size, 128, first["known"], first["past"])
    assert not np.array_equal(moe_rule.tokens["target"], data["target"][0][data["sample_id"][0] == 1])


def test_a_deliberately_broken_scaler_fails_the_quantile_check(forecaster, monkeypatch):
    """The Monte-Carlo tolerance is tight enough to catch a 5% error in the scaler's std."""
    import moirai_cli.model.network as network

    honest = network.packed_std_scaler

    def inflated(target, weight, sample_id, variate_id):
        loc, scale = honest(target, weight, sample_id, variate_id)
        return loc, scale * 1.05

    monkeypatch.setattr(network, "packed_std_scaler", inflated)
    ours, reference = quantile_gaps(PARITY / "tiny-moirai-1__univariate_covariates.npz", forecaster)
    assert ours > GAP_TOLERANCE * reference
