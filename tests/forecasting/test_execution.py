"""Work per forward pass chosen per device, and passes planned on the host."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from moirai_cli.forecasting.execution import (
    CPU_CHUNK_TOKENS,
    CPU_MAX_TOKEN_BUDGET,
    CPU_TOKEN_BUDGET,
    MAX_TOKEN_BUDGET,
    bytes_per_token,
    map_chunks,
    plan_for,
    row_chunks,
)
from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.model.config import MoiraiMoEConfig

SMALL = MoiraiMoEConfig(d_model=384, d_ff=512, num_layers=6, patch_sizes=(16,))


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "threads, budget", [(1, CPU_TOKEN_BUDGET), (2, CPU_TOKEN_BUDGET), (4, 4 * CPU_CHUNK_TOKENS), (64, CPU_MAX_TOKEN_BUDGET)]
)
def test_a_cpu_gets_cache_sized_chunks_one_per_thread(restore_threads, threads, budget):
    torch.set_num_threads(threads)
    plan = plan_for(torch.device("cpu"), SMALL)
    assert (plan.batch_size, plan.token_budget) == (32, budget)


@pytest.mark.parametrize("rows, per_row, budget, workers", [(3200, 33, 8192, 2), (800, 34, 8192, 2), (7, 33, 8192, 3), (5, 100, 40, 2), (1, 33, 8192, 4), (100, 10, 1000, 1)])
def test_row_chunks_cover_the_rows_evenly_within_the_budget(rows, per_row, budget, workers):
    chunks = row_chunks(rows, per_row, budget, workers)
    covered = np.concatenate([np.arange(rows)[chunk] for chunk in chunks])
    np.testing.assert_array_equal(covered, np.arange(rows))  # every row once, in order
    sizes = [len(range(rows)[chunk]) for chunk in chunks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= max(sizes) // 2 + 1
    # Chunks running side by side hold at most the budget (one row at least, whatever the budget).
    assert max(sizes) == 1 or workers * max(sizes) * per_row <= budget
    if len(chunks) > 1 and rows >= workers:
        assert len(chunks) % workers == 0 or len(chunks) == rows


def test_chunks_run_side_by_side_on_one_thread_each_in_the_callers_mode(restore_threads):
    torch.set_num_threads(2)
    chunks = [slice(start, start + 1) for start in range(6)]
    seen = []

    def run(chunk: slice):
        seen.append(threading.current_thread().name)
        return chunk.start, torch.get_num_threads(), torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    with torch.inference_mode():
        results = map_chunks(run, chunks, workers=2)
    assert [r[0] for r in results] == list(range(6))  # in order
    assert all(r[1:] == (1, True, False) for r in results)
    assert all(name.startswith("moirai-chunk") for name in seen)
    assert torch.get_num_threads() == 2  # the caller's setting is back
    with torch.no_grad():
        assert all(r[2:] == (False, False) for r in map_chunks(run, chunks, workers=2))


@pytest.mark.parametrize("decoding", ["exact", "cached"])
def test_forecasts_do_not_depend_on_the_number_of_threads(tiny_forecaster, restore_threads, decoding):
    rng = np.random.default_rng(2)
    series = [rng.normal(size=n).cumsum() for n in (150, 150, 150, 90, 120)]
    options = dict(num_samples=12, seed=3, context_length=128, decoding=decoding, token_budget=400)
    samples = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        samples.append(tiny_forecaster.predict(series, 40, **options).samples)
    np.testing.assert_array_equal(samples[1], samples[0])
    np.testing.assert_array_equal(samples[2], samples[0])


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
