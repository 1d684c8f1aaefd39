"""The memory a forecast needs is checked before anything is allocated."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from moirai_cli.errors import InputError
from moirai_cli.forecasting import memory
from moirai_cli.forecasting.memory import Request, check_fits, estimate_bytes
from moirai_cli.model.config import MoiraiMoEConfig

SMALL = MoiraiMoEConfig(d_model=384, d_ff=512, num_layers=6, patch_sizes=(16,))  # the published small size
ORDINARY = Request(
    series=1024, horizon=48, num_samples=100, batch_size=32, context_tokens=33, variates=1, known=0, past=0,
    patch_size=16, decoding="exact",
)
GIB = 1 << 30


@pytest.mark.parametrize("decoding", ["exact", "cached"])
def test_the_estimate_grows_with_every_size(decoding):
    base = dataclasses.replace(ORDINARY, decoding=decoding)
    total = sum(estimate_bytes(SMALL, base))
    for change in ({"horizon": 480}, {"num_samples": 400}, {"batch_size": 128}, {"context_tokens": 65}, {"series": 4096}):
        assert sum(estimate_bytes(SMALL, dataclasses.replace(base, **change))) > total, change


def test_ordinary_runs_need_little_and_a_million_steps_need_terabytes():
    assert sum(estimate_bytes(SMALL, ORDINARY)) < 2 * GIB  # the CLI's defaults: measured about 0.8 GiB at peak
    huge = dataclasses.replace(ORDINARY, horizon=1_000_000)
    assert sum(estimate_bytes(SMALL, huge)) > 100 * GIB
    assert estimate_bytes(SMALL, dataclasses.replace(huge, decoding="cached"))[0] > 1000 * GIB  # the key/value store


def test_a_request_that_cannot_fit_is_refused_saying_what_would(monkeypatch):
    monkeypatch.setattr(memory, "_host_available", lambda: 4 * GIB)
    check_fits(SMALL, ORDINARY, torch.device("cpu"))
    with pytest.raises(InputError) as err:
        check_fits(SMALL, dataclasses.replace(ORDINARY, horizon=1_000_000), torch.device("cpu"))
    message = str(err.value)
    assert "horizon 1000000" in message and "4.0 GiB available" in message and "\n" not in message
    largest = int(message.split("a horizon of at most ")[1].split(" ")[0])
    assert sum(estimate_bytes(SMALL, dataclasses.replace(ORDINARY, horizon=largest))) <= 4 * GIB
    assert sum(estimate_bytes(SMALL, dataclasses.replace(ORDINARY, horizon=largest + 1))) > 4 * GIB


def test_predict_refuses_a_million_step_horizon_before_allocating(tiny_forecaster):
    # --horizon 1000000 grew to 23 GB in 64 s and was killed by the kernel.
    with pytest.raises(InputError, match=r"horizon 1000000, 100 samples.*needs about .* available; a horizon of at most \d+ fits"):
        tiny_forecaster.predict([np.sin(np.arange(100.0))], 1_000_000)


def test_cgroup_limits_cap_the_memory_available(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/jobs/a\n0::/jobs/a\n")
    v1 = tmp_path / "memory" / "jobs" / "a"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(3 * GIB))
    (v1 / "memory.usage_in_bytes").write_text(str(1 * GIB))
    assert memory._cgroup_room(proc, tmp_path) == 2 * GIB
    v2 = tmp_path / "jobs" / "a"
    v2.mkdir(parents=True)
    (v2 / "memory.max").write_text(str(GIB + 5))
    (v2 / "memory.current").write_text("5")
    assert memory._cgroup_room(proc, tmp_path) == GIB
    (v2 / "memory.max").write_text("max")
    (v1 / "memory.limit_in_bytes").write_text(str(1 << 62))  # v1's "no limit"
    assert memory._cgroup_room(proc, tmp_path) is None
    assert memory._cgroup_room(tmp_path / "missing", tmp_path) is None


@pytest.mark.parametrize("family", ["moirai-1", "moirai-moe", "moirai-2"])
def test_a_huge_context_length_costs_what_the_series_length_costs(family_checkpoints, family, monkeypatch):
    # --context-length 1000000000000 on 123-row series: "MemoryError: Unable to allocate 3.64 TiB" (exit 1).
    from moirai_cli.forecasting import packing
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    forecaster = MoiraiForecaster.from_pretrained(str(family_checkpoints[family]), device="cpu")
    rng = np.random.default_rng(0)
    series = [rng.normal(size=123).cumsum(), rng.normal(size=60).cumsum()]
    huge = forecaster.predict(series, 12, context_length=10**12, num_samples=20, seed=0)
    with monkeypatch.context() as uncapped:  # every padding patch of a 4,096-step context built, then dropped
        uncapped.setattr(packing, "context_needed", lambda context, rows, size: context)
        whole = forecaster.predict(series, 12, context_length=4096, num_samples=20, seed=0)  # 10**12 = 4096 mod 128
    np.testing.assert_array_equal(huge.mean, whole.mean)
    np.testing.assert_array_equal(huge.quantiles([0.1, 0.9]), whole.quantiles([0.1, 0.9]))
    config = forecaster.model.config
    requests = [
        memory.request_for(config, [s[:, None] for s in series], None, None, horizon=12, num_samples=20, batch_size=32,
                           context_length=context, patch_size="auto", decoding="exact")
        for context in (10**12, 123)
    ]
    assert estimate_bytes(config, requests[0]) == estimate_bytes(config, requests[1])  # the estimate counts the series' length
