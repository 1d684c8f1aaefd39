"""With a seed, a series' sample paths depend on its own data, its key and the options only.

Never on the other series in the call, their order, the batch size or the thread count: the
samples must be identical bit for bit (on the CPU), not merely close.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from moirai_cli.forecasting.seeding import series_seed

HORIZON = 40  # three patches of 16: later passes feed drawn values back


def make_series(count: int = 9, variates: int = 1, seed: int = 1) -> dict[str, list[np.ndarray]]:
    """Series of different lengths (some shorter than the context), one with a gap, with covariates."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(30, 200, count)
    shape = (lambda n: (n, variates)) if variates > 1 else (lambda n: (n,))
    targets = [rng.normal(size=shape(n)).cumsum(0) + 50 for n in lengths]
    targets[2][4:10] = np.nan
    return {
        "target": targets,
        "past_covariates": [rng.normal(size=(n, 1)) for n in lengths],
        "known_covariates": [rng.normal(size=(n + HORIZON, 2)) for n in lengths],
    }


def forecast(forecaster, data, order, **options) -> np.ndarray:
    """Samples (N, S, H, V) for the series in `order`, put back in the original order."""
    picked = {name: [arrays[i] for i in order] for name, arrays in data.items()}
    samples = forecaster.predict(
        picked.pop("target"), HORIZON, item_ids=[f"id{i}" for i in order], context_length=96, num_samples=10,
        seed=3, **picked, **options,
    ).samples
    out = np.full((len(data["target"]),) + samples.shape[1:], np.nan, dtype=samples.dtype)
    out[np.asarray(order)] = samples
    return out


@pytest.mark.parametrize("decoding", ["exact", "cached"])
def test_samples_do_not_depend_on_batch_size_order_or_the_other_series(tiny_forecaster, decoding):
    data = make_series()
    everything = list(range(9))
    base = forecast(tiny_forecaster, data, everything, decoding=decoding)
    for batch_size in (1, 4):
        np.testing.assert_array_equal(forecast(tiny_forecaster, data, everything, decoding=decoding, batch_size=batch_size), base)
    shuffled = list(np.random.default_rng(0).permutation(9))
    np.testing.assert_array_equal(forecast(tiny_forecaster, data, shuffled, decoding=decoding, batch_size=3), base)
    halves = [forecast(tiny_forecaster, data, part, decoding=decoding) for part in (everything[:4], everything[4:])]
    np.testing.assert_array_equal(np.where(np.isnan(halves[0]), halves[1], halves[0]), base)
    alone = forecast(tiny_forecaster, data, [2], decoding=decoding)
    np.testing.assert_array_equal(alone[2], base[2])


@pytest.mark.parametrize("decoding", ["exact", "cached"])
def test_automatic_patch_sizes_and_multivariate_targets_are_batch_independent(multipatch_checkpoint, decoding):
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    forecaster = MoiraiForecaster.from_pretrained(str(multipatch_checkpoint), device="cpu")
    data = make_series(variates=2)
    base = forecast(forecaster, data, list(range(9)), decoding=decoding, patch_size="auto")
    shuffled = list(np.random.default_rng(1).permutation(9))
    np.testing.assert_array_equal(forecast(forecaster, data, shuffled, decoding=decoding, patch_size="auto", batch_size=2), base)


def test_thread_count_does_not_change_the_samples(tiny_forecaster):
    data = make_series(count=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = forecast(tiny_forecaster, data, [0, 1, 2, 3])
        torch.set_num_threads(2)
        two = forecast(tiny_forecaster, data, [3, 2, 1, 0], batch_size=2)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, two)


def test_the_key_and_the_seed_choose_the_stream(tiny_forecaster):
    series = np.sin(np.arange(80) / 4) * 5 + 10

    def samples(key, seed=0):
        return tiny_forecaster.predict([series], 20, item_ids=[key], num_samples=8, seed=seed).samples

    np.testing.assert_array_equal(samples("7"), samples(7))  # keys compare as text, as ids read from CSV or Parquet
    assert not np.array_equal(samples("a"), samples("b"))
    assert not np.array_equal(samples("a", seed=0), samples("a", seed=1))
    # Without ids, the key is the position: the same series first and second gets two streams.
    both = tiny_forecaster.predict([series, series], 20, num_samples=8, seed=0).samples
    assert not np.array_equal(both[0], both[1])
    np.testing.assert_array_equal(both[0], samples(0)[0])


def test_without_a_seed_torch_global_generator_decides(tiny_forecaster):
    series = [np.cos(np.arange(60) / 3)]
    torch.manual_seed(11)
    first = tiny_forecaster.predict(series, 5, num_samples=6).samples
    torch.manual_seed(11)
    again = tiny_forecaster.predict(series, 5, num_samples=6).samples
    different = tiny_forecaster.predict(series, 5, num_samples=6).samples
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, different)


def test_series_seeds_are_the_same_in_every_process():
    """Python's own hash of a string changes from process to process; a series' stream must not."""
    code = "from moirai_cli.forecasting.seeding import series_seed; print(series_seed(5, 'store-12'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", **_path_env()})
    assert int(other.stdout) == series_seed(5, "store-12")
    assert 0 <= series_seed(5, "store-12") < 2**63
    assert series_seed(5, "store-12") != series_seed(6, "store-12")


def _path_env() -> dict[str, str]:
    """The environment a child interpreter needs to import this checkout's package."""
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONHASHSEED"}
