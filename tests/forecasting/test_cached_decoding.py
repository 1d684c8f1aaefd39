"""Cached decoding is exact decoding with the scaler frozen at the context's statistics.

With the same seed and the random draws consumed in the same order, both must give the
same sample paths up to float32 rounding: this checks the key/value cache, the shared
prefix attention and the per-path suffix against the full causal forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moirai_cli.forecasting.decoding as decoding
from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.forecasting.seeding import series_generators
from moirai_cli.model.network import KeyValueCache


def frozen_scaler_exact_paths(model, batch, horizon, num_samples, monkeypatch):
    """decode_exact with every pass using pass 1's loc/scale (rows of different layouts: no token is left out)."""
    context_loc, context_scale = model.scale(batch.tokens)

    def frozen(tokens):
        copies = tokens.sample_id.shape[0] // context_loc.shape[0]
        return context_loc.repeat_interleave(copies, 0), context_scale.repeat_interleave(copies, 0)

    monkeypatch.setattr(model, "scale", frozen)
    generators = series_generators(0, range(batch.last_context.shape[0]), torch.device("cpu"))
    return decoding.decode_exact(model, batch, horizon, num_samples, generators, token_budget=10**9)


@pytest.mark.parametrize("variates,known,past", [(1, 1, 0), (2, 1, 2), (1, 0, 0)])
def test_cached_equals_exact_with_frozen_scaler(tiny_forecaster, monkeypatch, variates, known, past):
    model = tiny_forecaster.model
    rng = np.random.default_rng(variates * 10 + known + past)
    horizon, lengths = 45, (90, 40, 7)
    items = []
    for n in lengths:
        target = (rng.normal(size=(n, variates)).cumsum(0) + 20).astype(np.float32)
        target[rng.random(target.shape) < 0.1] = np.nan
        items.append(
            pack_series(
                target, horizon, 64, 16, 16,
                rng.normal(size=(n + horizon, known)).astype(np.float32) if known else None,
                rng.normal(size=(n, past)).astype(np.float32) if past else None,
            )
        )
    batch = collate(items, 16)
    with torch.inference_mode():
        cached = decoding.decode_cached(model, batch, horizon, 16, series_generators(0, range(len(lengths)), torch.device("cpu")))
        exact = frozen_scaler_exact_paths(model, batch, horizon, 16, monkeypatch)
    assert cached.shape == (len(lengths), 16, horizon, variates)
    np.testing.assert_allclose(cached.numpy(), exact.numpy(), rtol=1e-4, atol=1e-3)


def test_cached_and_exact_agree_for_a_single_patch(tiny_forecaster):
    """With one future patch there is no feedback, so the two decodings draw identically."""
    series = [np.sin(np.arange(80) / 4).astype(np.float32) * 5 + 10]
    cached = tiny_forecaster.predict(series, 12, num_samples=50, seed=3, decoding="cached")
    exact = tiny_forecaster.predict(series, 12, num_samples=50, seed=3, decoding="exact")
    np.testing.assert_allclose(cached.samples, exact.samples, rtol=1e-5, atol=1e-5)


def test_key_value_cache_fills_its_store_in_place_and_refuses_overflow():
    prefix = [(torch.ones(2, 1, 3, 4), -torch.ones(2, 1, 3, 4))]
    cache = KeyValueCache.for_prefix(prefix, torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long), 3, 1)
    assert cache.prefix[0][0].shape == (2, 1, 16, 4)  # whole key blocks, the padding hidden
    assert cache.prefix_visible.sum().item() == 6 and (cache.prefix_variate[:, 3:] == -1).all()
    assert cache.suffix_capacity == 3  # exactly the suffix: no padding stored per path
    first = torch.arange(8.0).view(2, 1, 1, 4)
    keys, values = cache.append(0, first, -first)
    cache.suffix_length = 1
    second = torch.arange(16.0).view(2, 1, 2, 4) + 100
    keys, values = cache.append(0, second, -second)
    assert keys.shape == (2, 1, 16, 4)  # whole key blocks to attend over
    torch.testing.assert_close(keys[:, :, :3], torch.cat([first, second], 2))
    torch.testing.assert_close(values[:, :, :3], -torch.cat([first, second], 2))
    # Past its own tokens, a path's view reads the next path's, then the zeros after the last path.
    torch.testing.assert_close(keys[0, :, 3:6], keys[1, :, :3])
    assert (keys[1, :, 3:] == 0).all() and (values[1, :, 3:] == 0).all()
    assert cache.suffix[0][0].numel() == (2 * 3 + 13) * 4  # the paths' tokens and one block of zeros
    assert keys.data_ptr() == cache.suffix[0][0].data_ptr()  # the store itself, not a copy
    cache.suffix_length = 3
    with pytest.raises(ValueError, match="holds 3 tokens per path, 4 needed"):
        cache.append(0, first, first)
