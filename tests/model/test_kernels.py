"""The CPU's linear-layer kernels: when oneDNN replaces torch's BLAS, and that it computes the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from moirai_cli.forecasting.packing import collate, pack_series
from moirai_cli.model import kernels
from moirai_cli.model.checkpoint import load_model
from moirai_cli.model.kernels import MATMUL_ENV, OneDnnLinear, cpu_vendor_and_flags, prefer_onednn, use_onednn_linear_layers

needs_onednn = pytest.mark.skipif(not kernels.onednn_linear_available(), reason="torch built without oneDNN")


def cpuinfo(tmp_path: Path, vendor: str, flags: str) -> Path:
    """A /proc/cpuinfo with two processors."""
    block = f"processor\t: {{}}\nvendor_id\t: {vendor}\nmodel name\t: test\nflags\t\t: {flags}\n\n"
    path = tmp_path / f"cpuinfo_{vendor}_{len(flags)}"
    path.write_text(block.format(0) + block.format(1))
    return path


def test_vendor_and_flags_are_read_from_cpuinfo(tmp_path):
    vendor, flags = cpu_vendor_and_flags(cpuinfo(tmp_path, "AuthenticAMD", "fpu avx2 avx512f"))
    assert vendor == "AuthenticAMD" and {"avx2", "avx512f"} <= flags and "fpu" in flags
    assert cpu_vendor_and_flags(tmp_path / "missing") == ("", frozenset())


@pytest.mark.parametrize(
    "vendor, flags, expected",
    [
        ("AuthenticAMD", "avx2 avx512f avx512bw", True),  # MKL would stay on AVX2 here
        ("AuthenticAMD", "avx2 fma", False),  # no AVX-512: both libraries run AVX2 kernels
        ("GenuineIntel", "avx2 avx512f", False),  # MKL uses AVX-512 on Intel
        ("HygonGenuine", "avx2 avx512f", True),
    ],
)
def test_onednn_is_preferred_on_non_intel_cpus_with_avx512(tmp_path, monkeypatch, vendor, flags, expected):
    monkeypatch.delenv(MATMUL_ENV, raising=False)
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(kernels, "onednn_linear_available", lambda: True)
    assert prefer_onednn(cpuinfo(tmp_path, vendor, flags)) is expected
    monkeypatch.setattr(kernels.platform, "machine", lambda: "aarch64")
    assert prefer_onednn(cpuinfo(tmp_path, vendor, flags)) is False


def test_environment_overrides_the_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "onednn_linear_available", lambda: True)
    intel, amd = cpuinfo(tmp_path, "GenuineIntel", "avx512f"), cpuinfo(tmp_path, "AuthenticAMD", "avx512f")
    monkeypatch.setenv(MATMUL_ENV, "onednn")
    assert prefer_onednn(intel) is True
    monkeypatch.setenv(MATMUL_ENV, "blas")
    assert prefer_onednn(amd) is False
    monkeypatch.setattr(kernels, "onednn_linear_available", lambda: False)
    monkeypatch.setenv(MATMUL_ENV, "onednn")
    assert prefer_onednn(intel) is False  # nothing to switch to


@needs_onednn
def test_replaced_layers_share_parameters_and_compute_the_same_products():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 40, bias=False), nn.ReLU(), nn.Sequential(nn.Linear(40, 8)))
    x = torch.randn(3, 5, 24)
    expected = model(x)
    names = set(model.state_dict())
    weight = model[0].weight
    assert use_onednn_linear_layers(model) == 2
    assert isinstance(model[0], OneDnnLinear) and isinstance(model[2][0], OneDnnLinear)
    assert model[0].weight is weight and set(model.state_dict()) == names
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    assert model(x[:, :0]).shape == (3, 0, 8)  # no tokens
    model.double()  # other dtypes go through torch's own linear
    torch.testing.assert_close(model(x.double()), expected.double(), rtol=1e-5, atol=1e-6)


@needs_onednn
def test_the_model_gives_the_same_distribution_with_either_kernel(tiny_checkpoint, monkeypatch):
    rng = np.random.default_rng(0)
    series = [pack_series(rng.normal(size=(90, 1)).astype(np.float32), 20, 64, 16, 16, None, None) for _ in range(3)]
    batch = collate(series, 16)
    results = {}
    for choice in ("blas", "onednn"):
        monkeypatch.setenv(MATMUL_ENV, choice)
        model = load_model(tiny_checkpoint)
        assert any(isinstance(m, OneDnnLinear) for m in model.modules()) is (choice == "onednn")
        with torch.inference_mode():
            distribution = model(batch.tokens)
        results[choice] = (distribution.mean, distribution.logits, distribution.loc)
    for blas, onednn in zip(results["blas"], results["onednn"]):
        torch.testing.assert_close(onednn, blas, rtol=1e-5, atol=1e-5)


def test_row_counts_are_padded_to_few_shapes():
    padded = [kernels.padded_rows(rows) for rows in range(1, 16_385)]
    assert all(p >= r for p, r in zip(padded, range(1, 16_385)))
    assert all(p % 16 == 0 for p in padded)
    assert len(set(padded)) <= 36
    assert max(kernels.padded_rows(rows) / rows for rows in range(65, 16_385)) < 1.25  # beyond 64 rows
    assert [kernels.padded_rows(r) for r in (1, 16, 17, 64, 65, 129, 8192, 8193)] == [16, 16, 32, 64, 80, 160, 8192, 10240]


@needs_onednn
def test_padding_does_not_change_a_rows_result():
    """Rows are computed alike whatever else is in the call: the batch-invariance the forecasts rely on."""
    torch.manual_seed(1)
    layer = OneDnnLinear.replacing(nn.Linear(384, 512, bias=False))
    x = torch.randn(300, 384)
    whole = layer(x)
    for count in (1, 17, 100, 299):
        assert torch.equal(layer(x[:count]), whole[:count])
