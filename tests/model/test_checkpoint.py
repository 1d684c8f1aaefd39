"""Checkpoints: strict loading, clear errors naming the tensor or file, and the Hub cache offline.

The Hub is never contacted: Hub tests here use a huggingface_hub cache built in tmp_path with
offline mode on, or an endpoint on a local port where nothing listens. Fetching against a
Hub-like server, with faults, is tested in test_hub.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from moirai_cli.errors import ModelError
from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.model import checkpoint
from moirai_cli.model.checkpoint import load_model, resolve_checkpoint
from moirai_cli.model.network import MoiraiMoE

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
REPO = "Org/name"


def write_variant(source: Path, folder: Path, edit) -> Path:
    """Copy a checkpoint folder into `folder`, passing its state dict through `edit` first."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", folder / "config.json")
    state = load_file(str(source / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))
    return folder


# --- load_model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-moe-multipatch"])
def test_load_model_restores_every_tensor(name, tiny_checkpoint):
    folder = tiny_checkpoint.parent / name
    model = load_model(folder)
    stored = load_file(str(folder / "model.safetensors"))
    state = model.state_dict()
    assert set(state) == set(stored)
    for key, tensor in stored.items():
        assert torch.equal(state[key].to(tensor.dtype), tensor), key
    assert isinstance(model, MoiraiMoE)
    assert model.config.patch_sizes == tuple(json.loads((folder / "config.json").read_text())["patch_sizes"])


def test_loaded_model_is_frozen_for_inference(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_argument_keeps_the_routing_centroids_in_float64(dtype, tiny_checkpoint):
    model = load_model(tiny_checkpoint, device="cpu", dtype=dtype)
    assert model.dtype == dtype
    for name, parameter in model.named_parameters():  # attention and experts in dtype, the rest in float32
        assert parameter.dtype == (dtype if ".self_attn." in name or ".ffn." in name else torch.float32), name
    assert model.encoder.centroid.dtype == torch.float64
    stored = load_file(str(tiny_checkpoint / "model.safetensors"))["encoder.centroid"]
    assert torch.equal(model.encoder.centroid, stored.double())


@pytest.mark.parametrize("removed", ["encoder.centroid", "param_proj.proj.components.2.logits.weight", "encoder.layers.1.ffn.experts.31.fc2.weight"])
def test_missing_tensor_is_named(removed, tiny_checkpoint, tmp_path):
    folder = write_variant(tiny_checkpoint, tmp_path / "ckpt", lambda state: state.pop(removed))
    with pytest.raises(ModelError, match="missing tensor") as error:
        load_model(folder)
    assert repr(removed) in str(error.value)
    assert "model.safetensors" in str(error.value)


def test_several_missing_tensors_are_counted(tiny_checkpoint, tmp_path):
    def drop_layer(state):
        for key in [k for k in state if k.startswith("encoder.layers.1.")]:
            del state[key]

    folder = write_variant(tiny_checkpoint, tmp_path / "ckpt", drop_layer)
    with pytest.raises(ModelError, match=r"missing tensor 'encoder\.layers\.1\..*' \(and \d+ more\)"):
        load_model(folder)


@pytest.mark.parametrize(
    "extra, shape",
    [("encoder.layers.2.norm1.weight", (128,)), ("in_proj.keep", (1, 128, 16)), ("lm_head.weight", (4, 4))],
)
def test_unexpected_tensor_is_named(extra, shape, tiny_checkpoint, tmp_path):
    folder = write_variant(tiny_checkpoint, tmp_path / "ckpt", lambda state: state.__setitem__(extra, torch.zeros(shape)))
    with pytest.raises(ModelError, match="unexpected tensor") as error:
        load_model(folder)
    assert repr(extra) in str(error.value)


@pytest.mark.parametrize(
    "name",
    ["encoder.layers.0.ffn.experts.3.fc1.weight", "encoder.norm.weight", "in_proj.weight", "encoder.centroid"],
)
def test_mis_shaped_tensor_is_named_with_both_shapes(name, tiny_checkpoint, tmp_path):
    stored = load_file(str(tiny_checkpoint / "model.safetensors"))[name]
    wrong = tuple(stored.shape[:-1]) + (stored.shape[-1] + 1,)

    folder = write_variant(tiny_checkpoint, tmp_path / "ckpt", lambda state: state.__setitem__(name, torch.zeros(wrong, dtype=stored.dtype)))
    with pytest.raises(ModelError) as error:
        load_model(folder)
    message = str(error.value)
    assert repr(name) in message
    assert str(wrong) in message and str(tuple(stored.shape)) in message


def test_weights_that_do_not_fit_the_config_name_the_first_missing_tensor(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    raw = json.loads((folder / "config.json").read_text())
    raw["num_layers"] = 3
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"missing tensor 'encoder\.layers\.2\."):
        load_model(folder)


def corrupt_bytes(original: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "truncated": original[: len(original) // 2],
        "garbage": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "json": b'{"d_model": 128}',
    }


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "json", "torch-pickle"])
def test_unreadable_weights_are_model_errors(kind, tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "model.safetensors"
    if kind == "torch-pickle":
        torch.save(load_file(str(tiny_checkpoint / "model.safetensors")), weights)
    else:
        weights.write_bytes(corrupt_bytes(weights.read_bytes())[kind])
    with pytest.raises(ModelError, match="cannot read weights") as error:
        load_model(folder)
    assert str(weights) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_weights_holding_nan_or_inf_name_the_file_tensor_and_fix(value, tiny_checkpoint, tmp_path):
    name = "encoder.layers.1.ffn.experts.7.fc1.weight"

    def spoil(state):
        state[name][3, 5] = value

    folder = write_variant(tiny_checkpoint, tmp_path / "ckpt", spoil)
    with pytest.raises(ModelError) as error:
        load_model(folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'model.safetensors'}: tensor '{name}' holds NaN or infinite values")
    assert "replace it with an intact copy" in message and "\n" not in message


def test_damaged_weights_in_the_hub_cache_say_how_to_download_them_again(tiny_checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = build_hub_cache(tmp_path / "hub", REPO, tiny_checkpoint, COMMIT)
    weights = (snapshot / "model.safetensors").resolve()
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\xff\xff\xff\xff"  # a NaN in the last float32
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError) as error:
        load_model(snapshot)
    assert f"{snapshot / 'model.safetensors'}: tensor " in str(error.value)
    assert str(error.value).endswith(f"download it again with `moirai download {REPO} --force`")
    weights.write_bytes(bytes(data[: len(data) - 100]))  # a truncated file: the header's sizes are wrong
    with pytest.raises(ModelError, match=r"cannot read weights \(.*\); download it again with `moirai download Org/name --force`$"):
        load_model(snapshot)


def test_finite_weights_pass_the_check_even_if_their_sum_overflows(tiny_checkpoint, tmp_path):
    from moirai_cli.model.checkpoint import first_non_finite

    huge = torch.full((4, 4), 3e38)
    assert not torch.isfinite(huge.sum())
    assert first_non_finite({"a": huge, "b": torch.zeros(3)}) is None
    assert first_non_finite({"a": huge, "b": torch.tensor([0.0, float("nan")])}) == "b"
    assert first_non_finite({"i": torch.arange(4)}) is None


@pytest.mark.parametrize("family", ["moirai-1", "moirai-moe", "moirai-2"])
@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_stored_in_any_float_dtype_forecast_as_their_float32_values(family_checkpoints, tmp_path, family, stored):
    # A float16, bfloat16 or float64 checkpoint passed `moirai download`, then forecasting failed with
    # "mat1 and mat2 must have the same dtype", naming no file.
    source = family_checkpoints[family]
    narrow = write_variant(source, tmp_path / "stored", lambda state: state.update({k: v.to(stored) for k, v in state.items()}))
    as_float32 = write_variant(  # the same (rounded) values stored as float32: what loading must give
        narrow, tmp_path / "float32", lambda state: state.update({k: v.to(torch.float32) for k, v in state.items()})
    )
    rng = np.random.default_rng(0)
    series = [rng.normal(size=80).cumsum(), rng.normal(size=50).cumsum()]

    def forecast(folder):
        return MoiraiForecaster.from_pretrained(str(folder), device="cpu").predict(series, 8, num_samples=10, seed=0)

    got, want = forecast(narrow), forecast(as_float32)
    np.testing.assert_array_equal(got.mean, want.mean)  # bit for bit: the weights are their float32 values
    if stored == torch.float64:  # float32 -> float64 -> float32 loses nothing: the original checkpoint's forecast
        np.testing.assert_array_equal(got.mean, forecast(source).mean)


def test_missing_weights_file_is_a_model_error(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="model.safetensors"):
        load_model(folder)


# --- resolve_checkpoint: local folders and bad names ------------------------------------------


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if resolve_checkpoint turns to the Hub."""

    def refuse(*args, **kwargs):
        raise AssertionError("resolve_checkpoint went to the Hub")

    monkeypatch.setattr(checkpoint, "download_checkpoint", refuse)


def test_local_folder_is_returned_as_is(tiny_checkpoint, no_hub):
    assert resolve_checkpoint(str(tiny_checkpoint)) == tiny_checkpoint


def test_local_folder_given_relative_or_with_tilde(tiny_checkpoint, no_hub, monkeypatch, tmp_path):
    monkeypatch.chdir(tiny_checkpoint.parent)
    assert resolve_checkpoint("tiny-moe").resolve() == tiny_checkpoint.resolve()
    home = tmp_path / "home"
    shutil.copytree(tiny_checkpoint, home / "models" / "tiny")
    monkeypatch.setenv("HOME", str(home))
    assert resolve_checkpoint("~/models/tiny") == home / "models" / "tiny"


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_folder_lacking_a_file_is_named(missing, tiny_checkpoint, tmp_path, no_hub):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / missing).unlink()
    with pytest.raises(ModelError, match=f"not a Moirai checkpoint folder.*no {missing}"):
        resolve_checkpoint(str(folder))


@pytest.mark.parametrize("name", ["./no-such-folder", "/no/such/folder", "~/no-such-folder", "a/b/c", "justaname"])
def test_names_that_are_neither_folder_nor_repo_id(name, no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="neither a checkpoint folder nor a Hub repo id"):
        resolve_checkpoint(name)


def test_an_empty_name_is_an_error(no_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError):
        resolve_checkpoint("")


def test_an_existing_file_is_not_a_checkpoint(tiny_checkpoint, no_hub):
    with pytest.raises(ModelError, match="neither a checkpoint folder"):
        resolve_checkpoint(str(tiny_checkpoint / "config.json"))


# --- the Hub code path, without the network ---------------------------------------------------


def build_hub_cache(cache_dir: Path, repo_id: str, source: Path, commit: str, refs=("main",), files=("config.json", "model.safetensors")) -> Path:
    """Lay out `source`'s files as huggingface_hub's cache does after a download of `repo_id`.

    models--{org}--{name}/blobs/<hash> holds the content, snapshots/<commit>/<file> is a
    relative symlink to its blob and refs/<ref> holds the commit hash (no newline).
    """
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in files:
        data = (source / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def dead_endpoint():
    """An http URL on a local port that is bound but never listens: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def hub_online_but_unreachable(monkeypatch, dead_endpoint):
    """Offline mode off, and the Hub endpoint points at a refused local port."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", dead_endpoint)
    monkeypatch.setenv("HF_ENDPOINT", dead_endpoint)


@pytest.fixture
def hub_offline(monkeypatch, dead_endpoint):
    """HF_HUB_OFFLINE=1 as huggingface_hub sees it (it reads the variable once, at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # Should offline mode be ignored, requests still go nowhere.
    monkeypatch.setattr(constants, "ENDPOINT", dead_endpoint)
    monkeypatch.setenv("HF_ENDPOINT", dead_endpoint)


@pytest.fixture
def hub_cache(tmp_path, tiny_checkpoint) -> tuple[Path, Path]:
    cache = tmp_path / "hub"
    return cache, build_hub_cache(cache, REPO, tiny_checkpoint, COMMIT)


def test_fake_cache_has_the_layout_huggingface_hub_expects(hub_cache):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    cache, snapshot = hub_cache
    for name in ("config.json", "model.safetensors"):
        found = try_to_load_from_cache(REPO, name, cache_dir=cache)
        assert found is not None and Path(found) == snapshot / name
        assert Path(try_to_load_from_cache(REPO, name, cache_dir=cache, revision=COMMIT)) == snapshot / name
    (repo,) = scan_cache_dir(cache).repos
    assert (repo.repo_id, repo.repo_type) == (REPO, "model")
    (revision,) = repo.revisions
    assert revision.commit_hash == COMMIT and set(revision.refs) == {"main"}
    assert {f.file_name for f in revision.files} == {"config.json", "model.safetensors"}


def test_offline_finds_the_cached_snapshot(hub_cache, hub_offline):
    cache, snapshot = hub_cache
    assert resolve_checkpoint(REPO, cache_dir=str(cache)) == snapshot


def test_offline_finds_the_cached_snapshot_by_commit(hub_cache, hub_offline):
    cache, snapshot = hub_cache
    assert resolve_checkpoint(REPO, revision=COMMIT, cache_dir=str(cache)) == snapshot


def test_offline_follows_a_named_ref(tmp_path, tiny_checkpoint, multipatch_checkpoint, hub_offline):
    cache = tmp_path / "hub"
    build_hub_cache(cache, REPO, tiny_checkpoint, COMMIT)
    tagged = build_hub_cache(cache, REPO, multipatch_checkpoint, OTHER_COMMIT, refs=("v2",))
    assert resolve_checkpoint(REPO, revision="v2", cache_dir=str(cache)) == tagged
    assert resolve_checkpoint(REPO, revision=OTHER_COMMIT, cache_dir=str(cache)) == tagged


def test_offline_loads_and_forecasts_like_the_local_folder(hub_cache, hub_offline, tiny_checkpoint):
    cache, _ = hub_cache
    from_hub = MoiraiForecaster.from_pretrained(REPO, revision=COMMIT, cache_dir=str(cache), device="cpu")
    local = MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="cpu")
    series = [np.sin(np.arange(80, dtype=np.float32) / 4)]
    a = from_hub.predict(series, horizon=16, context_length=64, num_samples=8, seed=3).samples
    b = local.predict(series, horizon=16, context_length=64, num_samples=8, seed=3).samples
    np.testing.assert_array_equal(a, b)


def assert_offline_message(message: str, repo: str) -> None:
    assert "\n" not in message
    assert repr(repo) in message
    assert "offline" in message and "HF_HUB_OFFLINE" in message
    assert "cache" in message
    assert "local checkpoint folder" in message


def test_offline_uncached_repo_is_a_one_line_error(hub_cache, hub_offline):
    cache, _ = hub_cache
    with pytest.raises(ModelError) as error:
        resolve_checkpoint("Org/other", cache_dir=str(cache))
    assert_offline_message(str(error.value), "Org/other")


@pytest.mark.parametrize("revision", ["v9", OTHER_COMMIT])
def test_offline_uncached_revision_is_a_one_line_error(revision, hub_cache, hub_offline):
    cache, _ = hub_cache
    with pytest.raises(ModelError) as error:
        resolve_checkpoint(REPO, revision=revision, cache_dir=str(cache))
    assert_offline_message(str(error.value), REPO)


def test_offline_with_an_empty_cache_folder(tmp_path, hub_offline):
    with pytest.raises(ModelError) as error:
        MoiraiForecaster.from_pretrained("Salesforce/moirai-moe-1.0-R-small", cache_dir=str(tmp_path / "empty"), device="cpu")
    assert_offline_message(str(error.value), "Salesforce/moirai-moe-1.0-R-small")


def test_offline_mode_set_before_import_is_reported_as_offline(hub_cache, monkeypatch, dead_endpoint):
    # TRANSFORMERS_OFFLINE, or HF_HUB_OFFLINE set before the import and unset since, still
    # makes huggingface_hub offline: the message must say so, not blame the network.
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", dead_endpoint)
    cache, _ = hub_cache
    with pytest.raises(ModelError, match="offline"):
        resolve_checkpoint("Org/other", cache_dir=str(cache))


def test_cached_snapshot_without_weights_is_named(tmp_path, tiny_checkpoint, hub_offline):
    cache = tmp_path / "hub"
    build_hub_cache(cache, REPO, tiny_checkpoint, COMMIT, files=("config.json",))
    with pytest.raises(ModelError, match="has no model.safetensors"):
        resolve_checkpoint(REPO, cache_dir=str(cache))


def test_unreachable_hub_falls_back_to_the_cache(hub_cache, hub_online_but_unreachable):
    from moirai_cli.model.hub import HubWarning

    cache, snapshot = hub_cache
    with pytest.warns(HubWarning, match=f"cannot be reached .*; using cached commit {COMMIT} of 'Org/name'"):
        assert resolve_checkpoint(REPO, cache_dir=str(cache)) == snapshot


def test_a_cached_commit_is_used_without_asking_the_hub(hub_cache, hub_online_but_unreachable, monkeypatch):
    # A commit is immutable: nothing to look up (and an unreachable Hub's file listing is retried for ~25 s).
    import huggingface_hub

    def refuse(self, *args, **kwargs):
        raise AssertionError("asked the Hub about a cached commit")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", refuse)
    cache, snapshot = hub_cache
    assert resolve_checkpoint(REPO, revision=COMMIT, cache_dir=str(cache)) == snapshot


def test_unreachable_hub_and_nothing_cached_is_a_one_line_error(hub_cache, hub_online_but_unreachable):
    cache, _ = hub_cache
    with pytest.raises(ModelError) as error:
        resolve_checkpoint("Org/other", cache_dir=str(cache))
    message = str(error.value)
    assert "\n" not in message
    assert "'Org/other'" in message
    assert "cannot be reached" in message and "cache" in message
    assert "local checkpoint folder" in message


@pytest.mark.parametrize("name", ["Org/bad name!", "Org/a--b", "-Org/name", "Org/" + "x" * 120])
def test_invalid_repo_ids_are_model_errors(name, tmp_path, hub_offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as error:
        resolve_checkpoint(name, cache_dir=str(tmp_path / "hub"))
    assert repr(name) in str(error.value)
    assert "\n" not in str(error.value)


def test_unexpected_transport_failure_is_a_model_error(hub_cache, hub_online_but_unreachable, monkeypatch):
    # e.g. a proxy that refuses the connection: huggingface_hub re-raises its client's own error type.
    import huggingface_hub

    class TransportFailure(Exception):
        pass

    def fail(self, *args, **kwargs):
        raise TransportFailure("proxy refused\nthe connection")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", fail)
    cache, _ = hub_cache
    with pytest.raises(ModelError) as error:
        resolve_checkpoint("Org/other", cache_dir=str(cache))
    assert "'Org/other'" in str(error.value) and "proxy refused" in str(error.value)
    assert "\n" not in str(error.value)
