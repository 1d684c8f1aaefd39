"""benchmarks/make_checkpoint.py: published families and sizes, and reduced checkpoints the engine loads and runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.model.checkpoint import load_model
from moirai_cli.model.config import Moirai1Config, Moirai2Config, MoiraiMoEConfig, load_config
from moirai_cli.model.network import MoiraiMoE

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "make_checkpoint.py"
REDUCED = {"d_model": 64, "d_ff": 16, "num_layers": 1, "patch_sizes": (16,)}
REDUCED_FAMILIES = {
    "moirai-1": Moirai1Config(d_model=64, num_layers=1, patch_sizes=(8, 16, 32)),
    "moirai-moe": MoiraiMoEConfig(**REDUCED),
    "moirai-2": Moirai2Config(d_model=64, d_ff=32, num_layers=1, patch_size=16, num_predict_token=2),
}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_sizes(script):
    small, base = script.config_for("small"), script.config_for("base")
    assert (small.d_model, small.d_ff, small.num_layers, small.patch_sizes) == (384, 512, 6, (16,))
    assert (base.d_model, base.d_ff, base.num_layers, base.patch_sizes) == (768, 1024, 12, (16,))
    for config in (small, base):
        assert config.max_seq_len == 512 and config.scaling
        assert [c.kind for c in config.components] == ["student_t", "normal_fixed_scale", "negative_binomial", "log_normal"]
    # The published parameter counts: 117M for small (the 117.0M), about 935M for base.
    assert script.parameter_count(small) == 117_025_800
    assert round(script.parameter_count(small) / 1e6, 1) == 117.0
    assert round(script.parameter_count(base) / 1e6) == 935
    # The other families' published sizes (see moirai_cli/model/catalog.py).
    moirai_1 = [script.config_for(size, "moirai-1") for size in ("small", "base", "large")]
    assert [(c.d_model, c.num_layers, c.patch_sizes) for c in moirai_1] == [
        (384, 6, (8, 16, 32, 64, 128)), (768, 12, (8, 16, 32, 64, 128)), (1024, 24, (8, 16, 32, 64, 128))
    ]
    moirai_2 = script.config_for("small", "moirai-2")
    assert (moirai_2.d_model, moirai_2.d_ff, moirai_2.num_layers, moirai_2.patch_size, moirai_2.num_predict_token) == (384, 1024, 6, 16, 4)


def test_parameter_count_matches_a_built_network(script):
    config = MoiraiMoEConfig(d_model=64, d_ff=16, num_layers=2, patch_sizes=(8, 16, 32))
    model = MoiraiMoE(config)
    assert script.parameter_count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", ["moirai-1", "moirai-2"])
def test_reduced_checkpoint_of_another_family_loads_and_forecasts(script, tmp_path, family):
    config = REDUCED_FAMILIES[family]
    folder = tmp_path / family
    count = script.write_checkpoint(folder, config, seed=1)
    assert load_config(folder / "config.json") == config
    assert count == script.parameter_count(config)
    forecaster = MoiraiForecaster.from_pretrained(str(folder), device="cpu")
    assert forecaster.family == family
    result = forecaster.predict([np.sin(np.arange(90, dtype=np.float32) / 6)], 40, context_length=64, num_samples=8, seed=0)
    assert result.mean.shape == (1, 40, 1) and np.isfinite(result.mean).all()


def test_reduced_checkpoint_loads_and_forecasts(script, tmp_path):
    config = MoiraiMoEConfig(**REDUCED)
    folder = tmp_path / "ckpt"
    count = script.write_checkpoint(folder, config, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert load_config(folder / "config.json") == config
    assert json.loads((folder / "config.json").read_text())["distr_output"]["_target_"] == "uni2ts.distribution.mixture.MixtureOutput"

    state = load_file(str(folder / "model.safetensors"))
    assert state["encoder.centroid"].dtype == torch.float64
    assert state["encoder.centroid"].abs().sum() > 0  # filled, unlike a fresh buffer
    assert count == sum(t.numel() for name, t in state.items() if name != "encoder.centroid")

    forecaster = MoiraiForecaster.from_pretrained(str(folder), device="cpu")
    series = [np.sin(np.arange(90, dtype=np.float32) / 6), np.arange(50, dtype=np.float32)]
    result = forecaster.predict(series, 20, context_length=64, num_samples=8, seed=0)
    assert result.samples.shape == (2, 8, 20, 1)
    assert np.isfinite(result.samples).all()


def test_seed_decides_the_weights(script, tmp_path):
    config = MoiraiMoEConfig(**REDUCED)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        script.write_checkpoint(tmp_path / name, config, seed=seed)
    a, b, c = (load_file(str(tmp_path / name / "model.safetensors")) for name in "abc")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["encoder.layers.0.self_attn.q_proj.weight"], c["encoder.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("family", ["moirai-1", "moirai-moe", "moirai-2"])
def test_main_writes_the_named_family_and_size(script, tmp_path, monkeypatch, capsys, family):
    asked = []
    monkeypatch.setattr(script, "config_for", lambda size, family: asked.append((size, family)) or REDUCED_FAMILIES[family])
    out = tmp_path / "out"
    assert script.main([str(out), "--family", family, "--size", "small", "--seed", "3"]) == 0
    assert asked == [("small", family)]
    printed = capsys.readouterr().out
    expected = script.parameter_count(REDUCED_FAMILIES[family])
    assert f"{expected:,}" in printed and "d_model 64" in printed and family in printed
    model = load_model(out)
    assert model.config == REDUCED_FAMILIES[family]


@pytest.mark.parametrize("args, named", [(["--size", "huge"], "huge"), (["--family", "moirai-2", "--size", "large"], "large")])
def test_main_rejects_an_unknown_size(script, tmp_path, capsys, args, named):
    with pytest.raises(SystemExit) as exit_info:
        script.main([str(tmp_path / "x"), *args])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
