"""Finding, loading and writing Moirai-MoE checkpoints (config.json + model.safetensors).

A checkpoint is named by a local folder or a Hugging Face Hub repo id. Hub files go to
huggingface_hub's standard cache; with HF_HUB_OFFLINE=1 only cached files are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from moirai_cli.errors import ModelError
from moirai_cli.model.config import MoiraiMoEConfig, load_config
from moirai_cli.model.network import MoiraiMoE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def resolve_checkpoint(name_or_path: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Return a local folder holding the checkpoint, downloading from the Hub if needed."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (local / name).is_file():
                raise ModelError(f"{local}: not a Moirai-MoE checkpoint folder (no {name})")
        return local
    if local.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise ModelError(
            f"model {name_or_path!r} is neither a checkpoint folder nor a Hub repo id like "
            "'Salesforce/moirai-moe-1.0-R-small'"
        )
    return download_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir)


def download_checkpoint(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Fetch config and weights of a Hub repo into the cache (or find them there offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hint = "pass --model with a local checkpoint folder (config.json + model.safetensors)"
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]
        )
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelError(f"model {repo_id!r} was not found on the Hugging Face Hub") from exc
    except RevisionNotFoundError as exc:
        raise ModelError(f"model {repo_id!r} has no revision {revision!r}") from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        reason = "offline mode (HF_HUB_OFFLINE) is on" if offline else "the Hugging Face Hub cannot be reached"
        raise ModelError(f"model {repo_id!r} is not in the local cache and {reason}; {hint}") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"cannot download model {repo_id!r}: {str(exc).splitlines()[0]}; {hint}") from exc
    path = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ModelError(f"model {repo_id!r} has no {name}: is it a Moirai-MoE checkpoint?")
    return path


def load_model(folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> MoiraiMoE:
    """Build the network from `folder` and load its weights strictly (names and shapes)."""
    folder = Path(folder)
    config = load_config(folder / CONFIG_FILE)
    model = MoiraiMoE(config)
    weights_path = folder / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise ModelError(f"{weights_path}: cannot read weights ({exc})") from exc
    check_state_dict(model, state, weights_path)
    model.load_state_dict(state, strict=True)
    # The routing centroids stay float64, as the checkpoints store them.
    centroid = model.encoder.centroid
    model.to(device=device, dtype=dtype)
    model.encoder.centroid = centroid.to(device)
    return model.eval().requires_grad_(False)


def check_state_dict(model: MoiraiMoE, state: dict[str, torch.Tensor], source: Path) -> None:
    """Raise a ModelError naming the first missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(f"{source}: missing tensor {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ModelError(
            f"{source}: unexpected tensor {unexpected[0]!r}" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelError(
                f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )


def save_checkpoint(model: MoiraiMoE, folder: Path) -> Path:
    """Write `model` as config.json + model.safetensors in the Hub layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder


def random_model(config: MoiraiMoEConfig, seed: int = 0) -> MoiraiMoE:
    """A randomly initialised network (for tests and benchmarks), centroids filled."""
    generator = torch.Generator().manual_seed(seed)
    model = MoiraiMoE(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("norm.weight") or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.dim() >= 2:
                fan_in = tensor.shape[-1]
                tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) / fan_in**0.5)
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
    return model
