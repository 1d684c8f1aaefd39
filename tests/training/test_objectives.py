"""Each family's training loss against an independent computation.

Moirai 1.x: the loss and every parameter's gradient on a batch that uni2ts's own fine-tuning
transforms built, against `MoiraiFinetune.training_step` (fixture made by
scripts/make_parity_fixtures.py --family finetune-moirai-1). Moirai-MoE and Moirai 2.0 have no
reference training code: their losses are recomputed from the forecast procedure's own
distribution or quantiles on held-out patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moirai_cli.forecasting.decoding import forward_at
from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.model.network import KeyValueCache, PackedTokens, gather_rows
from moirai_cli.training.objectives import (
    masked_prediction_nll,
    next_patch_nll,
    next_patches_pinball,
    window_group_losses,
)
from moirai_cli.training.trainer import training_network
from moirai_cli.training.windows import Window, WindowPacker

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity-finetune-moirai-1" / "tiny-moirai-1__training_step.npz"


def trainable(forecaster):
    """A float32 training copy of the forecaster's network (plain layers, gradients on)."""
    return training_network(forecaster.model, torch.device("cpu"))


def seasonal_series(count: int, length: int, seed: int) -> list[np.ndarray]:
    """(length, 1) seasonal series of different levels, one with a gap in the middle."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    series = [(20 + 5 * i + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, length))[:, None] for i in range(count)]
    series[0][length // 2 : length // 2 + 4] = np.nan
    return series


def records_of(targets: list[np.ndarray]):
    from moirai_cli.data import SeriesRecord
    import pandas as pd

    return [SeriesRecord(f"s{i}", pd.date_range("2020-01-01", periods=len(t), freq="h"), t) for i, t in enumerate(targets)]


def packer_for(forecaster, records, horizon: int, context: int, patch: int) -> WindowPacker:
    from moirai_cli.forecasting.pipeline import PROCEDURES

    config = forecaster.model.config
    return WindowPacker(records, horizon, context, patch, config.max_patch_size,
                        PROCEDURES[config.family].causal_mean_target, torch.device("cpu"))


# --- Moirai 1.x: uni2ts's training step ----------------------------------------------------------


def test_moirai1_loss_and_gradients_equal_uni2ts_training_step(forecasters):
    fixture = np.load(FIXTURE)
    batch = {name.removeprefix("batch_"): torch.from_numpy(fixture[name]) for name in fixture if name.startswith("batch_")}
    sizes = batch["patch_size"][batch["sample_id"] > 0].unique()  # uni2ts gives padding tokens size 0
    assert len(sizes) == 1  # a batch holds one patch size, which the network takes as a number
    tokens = PackedTokens(
        target=batch["target"], observed=batch["observed_mask"], sample_id=batch["sample_id"], time_id=batch["time_id"],
        variate_id=batch["variate_id"], prediction_mask=batch["prediction_mask"], patch_size=int(sizes[0]),
    )
    assert (tokens.sample_id == 0).any() and tokens.variate_id.max() == 1  # a padded row and a bivariate series
    model = trainable(forecasters["moirai-1"])
    loss = masked_prediction_nll(model, tokens).mean()
    loss.backward()
    assert loss.item() == pytest.approx(float(fixture["loss"]), rel=1e-5)
    gradients = {name: p.grad.numpy() for name, p in model.named_parameters()}
    assert set(gradients) == {name.removeprefix("grad_") for name in fixture if name.startswith("grad_")}
    largest = max(np.abs(fixture[f"grad_{name}"]).max() for name in gradients)
    for name, gradient in gradients.items():
        expected = fixture[f"grad_{name}"]
        # 1e-4 of the tensor's own largest gradient, or of a hundredth of the largest of all (float32 sums of tiny terms)
        tolerance = 1e-4 * max(np.abs(expected).max(), 1e-2 * largest)
        assert np.abs(gradient - expected).max() <= tolerance, name


def test_moirai1_head_at_the_prediction_tokens_only_gives_the_same_loss(forecasters):
    forecaster = forecasters["moirai-1"]
    records = records_of(seasonal_series(4, 90, seed=1))
    batch = packer_for(forecaster, records, 20, 48, 16).batch([Window(i, 90 - 3 * i) for i in range(4)])
    model = trainable(forecaster)
    everywhere = masked_prediction_nll(model, batch.tokens)
    at_predictions = masked_prediction_nll(model, batch.tokens, batch.future.flatten(1))
    torch.testing.assert_close(at_predictions, everywhere, rtol=1e-6, atol=0)


def test_moirai1_window_loss_is_the_forecasters_holdout_score(forecasters):
    """The hold-out score the forecaster picks patch sizes by (parity-tested against the reference) is the same loss."""
    forecaster = forecasters["moirai-1"]
    targets = seasonal_series(5, 100, seed=2)
    records = records_of(targets)
    for patch in (8, 32):
        batch = packer_for(forecaster, records, 24, 64, patch).batch([Window(i, 100) for i in range(5)])
        with torch.no_grad():
            losses = window_group_losses(trainable(forecaster), batch)
            expected = forecaster.holdout_nll(targets, None, None, 24, 64, patch, 8)
        np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-5)


# --- Moirai-MoE: the forecast's distributions of held-out patches ---------------------------------


def test_moe_loss_of_one_patch_is_the_first_forecast_pass_nll(forecasters):
    """With a horizon of one patch the loss is the negative log-likelihood under the exact decoder's first pass."""
    forecaster = forecasters["moirai-moe"]
    targets = seasonal_series(3, 80, seed=3)
    horizon, context = 10, 48  # 10 of the patch's 16 values
    batch = packer_for(forecaster, records_of(targets), horizon, context, 16).batch([Window(i, 80) for i in range(3)])
    with torch.no_grad():
        losses = next_patch_nll(trainable(forecaster), batch)
        packed = [pack_series(t[:-horizon], horizon, context, 16, 16, causal_mean_target=True) for t in targets]
        plain = collate(packed, 16)
        first = forward_at(forecaster.model, plain.tokens, plain.last_context, 1 << 14, plain.pass_plan(0))
    actual = torch.tensor(np.stack([t[-horizon:, 0] for t in targets]), dtype=torch.float32)  # (B, H)
    log_prob = first.map(lambda x: x[:, 0, :horizon]).log_prob(actual)  # (B, H)
    observed = ~torch.isnan(actual)
    expected = -torch.where(observed, log_prob, 0.0).sum(-1) / observed.sum(-1)
    torch.testing.assert_close(losses.float(), expected, rtol=1e-5, atol=1e-6)


def test_moe_loss_of_later_patches_is_cached_decodings_nll_of_the_true_patches(forecasters):
    """Cached decoding's step-by-step passes (its key/value cache, its frozen scaler), fed the true patches instead of draws."""
    forecaster = forecasters["moirai-moe"]
    model = forecaster.model
    targets = seasonal_series(3, 120, seed=4)
    horizon, context, patch = 62, 64, 16  # four patches, the last one partly beyond the horizon
    batch = packer_for(forecaster, records_of(targets), horizon, context, patch).batch([Window(i, 120) for i in range(3)])
    tokens = batch.tokens
    with torch.no_grad():
        losses = next_patch_nll(trainable(forecaster), batch)
        loc, scale = model.scale(tokens)
        prefix: list = []
        distributions = [model.forward_scaled(tokens, loc, scale, batch.last_context, keep_kv=prefix)]
        origin = gather_rows(tokens.time_id, batch.last_context).max(dim=1, keepdim=True).values
        cache = KeyValueCache.for_prefix(prefix, (tokens.sample_id > 0) & (tokens.time_id <= origin), tokens.variate_id,
                                         suffix_tokens=batch.future.shape[-1] - 1, paths_per_series=1)
        for step in range(batch.future.shape[-1] - 1):
            slot = batch.future[:, :, step]  # (B, 1): the true patch enters as a drawn one would
            new = {name: gather_rows(t, slot) for name, t in (("target", tokens.target), ("loc", loc), ("scale", scale))}
            hidden = model.embed(new["target"], new["loc"], new["scale"], tokens.patch_size)
            out = model.extend(hidden, gather_rows(tokens.time_id, slot), gather_rows(tokens.variate_id, slot), cache)
            distributions.append(model.distribution(out, tokens.patch_size, new["loc"], new["scale"]))
    future = batch.future[:, 0]  # (B, F)
    total = torch.zeros(3, dtype=torch.float64)
    count = torch.zeros(3, dtype=torch.float64)
    for step, distribution in enumerate(distributions):
        values = gather_rows(tokens.target, future[:, step : step + 1])
        observed = gather_rows(tokens.observed, future[:, step : step + 1])
        nll = -distribution.log_prob(values)
        total += torch.where(observed, nll, 0.0).double().sum(dim=(1, 2))
        count += observed.double().sum(dim=(1, 2))
    assert count.tolist() == [horizon - 4, horizon, horizon]  # the gap (rows 60-63) falls in series 0's future
    torch.testing.assert_close(losses, total / count, rtol=1e-5, atol=1e-6)


# --- Moirai 2.0: the forecast's quantiles of held-out patches -------------------------------------


def pinball(quantiles: np.ndarray, actual: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Mean over levels of the pinball loss: quantiles (Q, ...), actual (...)."""
    error = actual[None] - quantiles
    return np.where(error > 0, levels.reshape(-1, *[1] * actual.ndim) * error, (levels.reshape(-1, *[1] * actual.ndim) - 1) * error).mean(0)


def scaler_scale(context: np.ndarray, context_length: int) -> float:
    """The scaler's scale of a univariate context: Bessel std of its observed last values, plus 1e-5 in the variance."""
    window = context[-context_length:]
    window = window[~np.isnan(window)]
    return float(np.sqrt(window.var(ddof=1) + 1e-5))


def test_moirai2_loss_of_one_patch_is_the_forecasts_pinball_loss(forecasters):
    """A horizon of one patch: the forecast's own quantiles (predict), scored by the pinball loss in units of the scale."""
    forecaster = forecasters["moirai-2"]
    levels = np.asarray(forecaster.quantile_levels)
    targets = seasonal_series(3, 90, seed=5)
    horizon, context = 16, 60
    batch = packer_for(forecaster, records_of(targets), horizon, context, 16).batch([Window(i, 90) for i in range(3)])
    with torch.no_grad():
        losses = next_patches_pinball(trainable(forecaster), batch).numpy()
    forecast = forecaster.predict([t[:-horizon] for t in targets], horizon, context_length=context)
    for i, target in enumerate(targets):
        actual = target[-horizon:, 0]
        terms = pinball(forecast.values[i, :, :, 0], actual, levels) / scaler_scale(target[:-horizon, 0], context)
        assert losses[i] == pytest.approx(terms[~np.isnan(actual)].mean(), rel=1e-5)


def test_moirai2_loss_scores_every_patch_each_token_predicts(forecasters):
    """Four patches: the last context token predicts all four (the forecast's first pass), the token of
    patch k the patches after it, each within the horizon, in units of the scale."""
    forecaster = forecasters["moirai-2"]
    levels = np.asarray(forecaster.quantile_levels)
    targets = seasonal_series(2, 140, seed=6)
    horizon, context, patch = 64, 64, 16
    batch = packer_for(forecaster, records_of(targets), horizon, context, patch).batch([Window(i, 140) for i in range(2)])
    with torch.no_grad():
        losses = next_patches_pinball(trainable(forecaster), batch).numpy()
        reads = torch.cat([batch.last_context, batch.future[:, 0, :-1]], dim=1)  # (B, 4): last context, patches 1-3
        quantiles = forward_at(forecaster.model, batch.tokens, reads, 1 << 14).numpy()  # (B, 4, 4, Q, P)
    first_pass = forecaster.predict([t[:-horizon] for t in targets], horizon, context_length=context).values
    for i, target in enumerate(targets):
        actual = target[-horizon:, 0].reshape(4, patch)
        scale = scaler_scale(target[:-horizon, 0], context)
        np.testing.assert_allclose(quantiles[i, 0].transpose(1, 0, 2).reshape(len(levels), -1), first_pass[i, :, :, 0], rtol=1e-5, atol=1e-4)
        terms = [pinball(quantiles[i, read, ahead], actual[read + ahead], levels) / scale
                 for read in range(4) for ahead in range(4) if read + ahead < 4]
        assert len(terms) == 10
        stacked = np.stack(terms)
        assert losses[i] == pytest.approx(stacked[~np.isnan(stacked)].mean(), rel=1e-5)
