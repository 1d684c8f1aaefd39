"""Work per forward pass chosen per device, and passes planned on the host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moirai_cli.forecasting.execution import CPU_TOKEN_BUDGET, MAX_TOKEN_BUDGET, bytes_per_token, plan_for
from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.model.config import MoiraiMoEConfig

SMALL = MoiraiMoEConfig(d_model=384, d_ff=512, num_layers=6, patch_sizes=(16,))


def test_a_cpu_gets_cache_sized_chunks():
    plan = plan_for(torch.device("cpu"), SMALL)
    assert (plan.batch_size, plan.token_budget) == (32, CPU_TOKEN_BUDGET)


@pytest.mark.parametrize("free_gib", [80, 20, 0.1])
def test_a_gpu_gets_passes_sized_by_its_free_memory(monkeypatch, free_gib):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * 2**30), 80 * 2**30))
    plan = plan_for(torch.device("cuda"), SMALL)
    assert plan.batch_size == 256
    assert CPU_TOKEN_BUDGET <= plan.token_budget <= MAX_TOKEN_BUDGET and plan.token_budget % CPU_TOKEN_BUDGET == 0
    # A pass's activations stay within the share of free memory they are given (above the CPU floor).
    if plan.token_budget > CPU_TOKEN_BUDGET:
        assert plan.token_budget * bytes_per_token(SMALL) <= 0.4 * free_gib * 2**30
    base = MoiraiMoEConfig(d_model=768, d_ff=1024, num_layers=12, patch_sizes=(16,))
    assert plan_for(torch.device("cuda"), base).token_budget <= plan.token_budget


def test_tokens_per_pass_changes_nothing_in_the_samples(tiny_forecaster):
    rng = np.random.default_rng(0)
    series = [rng.normal(size=n).cumsum() for n in (150, 150, 150, 90)]
    options = dict(item_ids=["a", "b", "c", "d"], num_samples=12, seed=1, context_length=128)
    default = tiny_forecaster.predict(series, 40, **options).samples
    small_passes = tiny_forecaster.predict(series, 40, token_budget=40, **options).samples
    np.testing.assert_array_equal(small_passes, default)


def test_each_pass_leaves_out_exactly_the_tokens_after_what_it_reads():
    rng = np.random.default_rng(1)
    horizon, length = 40, 100  # three future patches of 16
    packed = [
        pack_series(rng.normal(size=(length, 2)), horizon, 64, 16, 16, rng.normal(size=(length + horizon, 1)), rng.normal(size=(length, 1)))
        for _ in range(3)
    ]
    batch = collate(packed, 16)
    layout = packed[0]
    time_id = batch.tokens.time_id[0].numpy()
    for step in range(3):
        columns, read = batch.pass_plan(step)
        read_time = time_id[layout.last_context[0]] if step == 0 else time_id[layout.future[0, step - 1]]
        np.testing.assert_array_equal(columns, np.flatnonzero(time_id <= read_time))
        expected = layout.last_context if step == 0 else layout.future[:, step - 1]
        np.testing.assert_array_equal(columns[read], expected)
    shorter = pack_series(rng.normal(size=(30, 2)), horizon, 64, 16, 16, rng.normal(size=(30 + horizon, 1)), rng.normal(size=(30, 1)))
    assert collate(packed + [shorter], 16).pass_plan(1) is None  # rows of different layouts: nothing is left out
