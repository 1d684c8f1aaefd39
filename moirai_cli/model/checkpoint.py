"""Finding, loading and writing Moirai-MoE checkpoints (config.json + model.safetensors).

A checkpoint is named by a local folder or a Hugging Face Hub repo id. Hub files go to
huggingface_hub's standard cache; with HF_HUB_OFFLINE=1 only cached files are used.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from moirai_cli.errors import ModelError, first_line
from moirai_cli.model.config import MoiraiMoEConfig, load_config
from moirai_cli.model.network import MoiraiMoE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


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
    from huggingface_hub import constants, snapshot_download, try_to_load_from_cache
    # huggingface_hub.utils exports these from 0.20 on (huggingface_hub.errors only lately).
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hint = "pass --model with a local checkpoint folder (config.json + model.safetensors)"
    try:
        folder = None
        if revision is not None and COMMIT_HASH.fullmatch(revision):
            # A commit never changes: when both files are cached, skip the Hub (whose file
            # listing is retried for half a minute when it cannot be reached).
            cached = [
                try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, revision=revision)
                for name in (CONFIG_FILE, WEIGHTS_FILE)
            ]
            if all(isinstance(path, str) for path in cached):
                folder = str(Path(cached[0]).parent)
        if folder is None:
            folder = snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]
            )
    except HFValidationError as exc:
        raise ModelError(
            f"model {repo_id!r} is neither a checkpoint folder nor a valid Hub repo id ({first_line(exc)})"
        ) from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelError(f"model {repo_id!r} was not found on the Hugging Face Hub") from exc
    except RevisionNotFoundError as exc:
        raise ModelError(f"model {repo_id!r} has no revision {revision!r}") from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        # huggingface_hub reads HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) once, at import: ask it.
        offline = bool(constants.HF_HUB_OFFLINE)
        reason = "offline mode (HF_HUB_OFFLINE) is on" if offline else "the Hugging Face Hub cannot be reached"
        raise ModelError(f"model {repo_id!r} is not in the local cache and {reason}; {hint}") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"cannot download model {repo_id!r}: {first_line(exc)}; {hint}") from exc
    except Exception as exc:  # the HTTP client's own errors (a refused proxy, say) pass through as is
        raise ModelError(f"cannot download model {repo_id!r}: {type(exc).__name__}: {first_line(exc)}; {hint}") from exc
    path = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ModelError(f"model {repo_id!r} has no {name}: is it a Moirai-MoE checkpoint?")
    return path


def load_model(folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> MoiraiMoE:
    """Build the network from `folder` and load its weights strictly (names and shapes).

    On the CPU in the checkpoint's float32, the weights stay a memory map of the file (no
    copy); other devices and dtypes get converted copies.
    """
    folder = Path(folder)
    config = load_config(folder / CONFIG_FILE)
    with skipped_weight_init():
        model = MoiraiMoE(config)
    weights_path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(weights_path), framework="pt") as weights:  # validates the file's layout
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
        check_state_dict(model, shapes, weights_path)
        model.load_state_dict(mapped_tensors(weights_path), strict=True, assign=True)
    except (OSError, SafetensorError, ValueError, KeyError) as exc:
        raise ModelError(f"{weights_path}: cannot read weights ({exc})") from exc
    # The routing centroids stay float64, as the checkpoints store them.
    centroid = model.encoder.centroid
    model.to(device=device, dtype=dtype)
    model.encoder.centroid = centroid.to(device)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def skipped_weight_init() -> Iterator[None]:
    """Build layers without their random initialisation, which loading overwrites anyway (saves ~1 s)."""
    saved = {layer: layer.reset_parameters for layer in (nn.Linear, nn.Embedding)}
    try:
        for layer in saved:
            layer.reset_parameters = lambda self: None
        yield
    finally:
        for layer, reset in saved.items():
            layer.reset_parameters = reset


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def mapped_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file as a view of a private memory map of the file.

    Nothing is read or copied up front: pages come from the OS page cache as the network
    touches them, so a float32 checkpoint on the CPU loads in milliseconds and occupies its
    memory once. Layout: 8-byte little-endian header size, a JSON header of dtype, shape and
    byte offsets, then the raw little-endian data.
    """
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="c", offset=8 + header_size)  # copy-on-write: the file is never written
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        raw = torch.from_numpy(data[begin:end])
        if begin % dtype.itemsize:  # misaligned for a view: copy this one
            raw = raw.clone()
        tensors[name] = raw.view(dtype).view(entry["shape"])
    return tensors


def check_state_dict(model: MoiraiMoE, shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    """Raise a ModelError naming the first missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ModelError(f"{source}: missing tensor {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        raise ModelError(
            f"{source}: unexpected tensor {unexpected[0]!r}" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    for name, shape in shapes.items():
        if tuple(shape) != tuple(expected[name].shape):
            raise ModelError(f"{source}: tensor {name!r} has shape {tuple(shape)}, expected {tuple(expected[name].shape)}")


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
