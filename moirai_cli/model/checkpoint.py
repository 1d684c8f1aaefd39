"""Finding, loading and writing Moirai checkpoints of every family (config.json + model.safetensors).

A checkpoint is named by a local folder or a Hugging Face Hub repo id. Hub files go to
huggingface_hub's standard cache (fetched by moirai_cli.model.hub); with HF_HUB_OFFLINE=1 only
cached files are used. Loading checks the weights file's layout, names and shapes, and that every
value is finite, so a damaged file is named instead of surfacing as NaN forecasts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from moirai_cli.errors import ModelError
from moirai_cli.model.config import FAMILY_TITLES, FamilyConfig, load_config
from moirai_cli.model.hub import CARD_FILE, download_files, refetch_command
from moirai_cli.model.kernels import prefer_onednn, use_onednn_linear_layers
from moirai_cli.model.layers import grouped_products_work
from moirai_cli.model.network import MoiraiNetwork, build_network

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def resolve_checkpoint(
    name_or_path: str,
    revision: str | None = None,
    cache_dir: str | None = None,
    *,
    force_download: bool = False,
    verify: bool = False,
    progress: bool = True,
) -> Path:
    """Return a local folder holding the checkpoint, downloading from the Hub if needed.

    The keyword options apply to Hub repos (see download_checkpoint).
    """
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (local / name).is_file():
                raise ModelError(f"{local}: not a Moirai checkpoint folder (no {name})")
        return local
    if local.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise ModelError(
            f"model {name_or_path!r} is neither a checkpoint folder nor a Hub repo id like "
            "'Salesforce/moirai-moe-1.0-R-small'"
        )
    return download_checkpoint(
        name_or_path, revision=revision, cache_dir=cache_dir, force_download=force_download, verify=verify, progress=progress
    )


def download_checkpoint(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | None = None,
    *,
    force_download: bool = False,
    verify: bool = False,
    progress: bool = True,
) -> Path:
    """Fetch config and weights of a Hub repo into huggingface_hub's cache (or find them there).

    The model card (README.md, whose metadata names the licence) comes along with a download
    when the repo has one; a cached checkpoint without it is used as it is. force_download fetches both files again; verify checks cached files against the digests the
    Hub publishes and fetches any that differ; progress allows the Hub's progress bars on a
    terminal. Waits are bounded and failures are one-line HubErrors (see moirai_cli.model.hub).
    """
    return download_files(
        repo_id,
        (CONFIG_FILE, WEIGHTS_FILE),
        optional=(CARD_FILE,),
        revision=revision,
        cache_dir=cache_dir,
        force=force_download,
        verify=verify,
        progress=progress,
    )


def load_model(folder: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> MoiraiNetwork:
    """Build the network of the family config.json describes and load its weights strictly (names and shapes).

    On the CPU in the checkpoint's float32, the weights stay a memory map of the file (no
    copy); other devices and dtypes get converted copies. Weights stored in another float dtype
    (float16, bfloat16, float64) are read as their float32 values.
    """
    folder = Path(folder)
    config = load_config(folder / CONFIG_FILE)
    with skipped_weight_init():
        model = build_network(config)
    weights_path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(weights_path), framework="pt") as weights:  # validates the file's layout
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
        check_state_dict(model, shapes, weights_path)
        tensors = mapped_tensors(weights_path)
    except (OSError, SafetensorError, ValueError, KeyError) as exc:
        detail = " ".join(str(exc).split()).rstrip(".")
        raise ModelError(f"{weights_path}: cannot read weights ({detail}); {repair_hint(folder)}") from exc
    damaged = first_non_finite(tensors)
    if damaged is not None:
        raise ModelError(
            f"{weights_path}: tensor '{damaged}' holds NaN or infinite values, so the file is damaged; {repair_hint(folder)}"
        )
    model.load_state_dict(in_network_dtypes(tensors, model), strict=True, assign=True)
    return prepare_for_inference(model, device, dtype)


def prepare_for_inference(model: MoiraiNetwork, device: torch.device | str, dtype: torch.dtype) -> MoiraiNetwork:
    """Move loaded weights to `device` and set them up for forecasting: compute dtype, no gradients, fastest kernels.

    Used by `load_model`, and for weights that come from elsewhere (fine-tuning), so both forecast alike.
    """
    model.to(device=device)  # the MoE routing centroids stay float64, as the checkpoints store them
    model.set_compute_dtype(dtype)
    model.eval().requires_grad_(False)
    device = torch.device(device)
    if device.type == "cuda" and grouped_products_work(device, dtype):
        model.use_grouped_experts()
    if device.type == "cpu" and dtype == torch.float32 and prefer_onednn():
        use_onednn_linear_layers(model)  # see kernels.py: MKL leaves AVX-512 unused on AMD CPUs
    return model


def in_network_dtypes(tensors: dict[str, torch.Tensor], model: MoiraiNetwork) -> dict[str, torch.Tensor]:
    """The tensors in the dtypes the network keeps them in (float32; the MoE centroids float64), whatever float
    dtype the file stores (float16, bfloat16, float64): a float16 file computes with its values in float32.
    Tensors already in their dtype stay views of the file."""
    expected = model.state_dict()
    return {
        name: tensor.to(expected[name].dtype) if tensor.dtype != expected[name].dtype else tensor
        for name, tensor in tensors.items()
    }


def repair_hint(folder: Path) -> str:
    """How to replace a damaged checkpoint in `folder`: download it again if it came from the Hub."""
    command = refetch_command(folder)
    if command is not None:
        return f"download it again with `{command}`"
    return "replace it with an intact copy of the checkpoint"


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or +-inf, or None.

    A sum is one fast pass over the (memory-mapped) data and is non-finite whenever an element is;
    only then is the tensor checked element by element (a finite sum can also overflow).
    """
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
            return name
    return None


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


def check_state_dict(model: MoiraiNetwork, shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    """Raise a ModelError naming the first missing, unexpected or mis-shaped tensor.

    A name mismatch says which family config.json described: weights of another family
    next to it are the likeliest cause.
    """
    expected = model.state_dict()
    family = f" of a {FAMILY_TITLES[model.family]} network (as config.json describes)"
    missing = sorted(set(expected) - set(shapes))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"{source}: missing tensor {missing[0]!r}{more}{family}")
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ModelError(f"{source}: unexpected tensor {unexpected[0]!r}{more} for a {FAMILY_TITLES[model.family]} network")
    for name, shape in shapes.items():
        if tuple(shape) != tuple(expected[name].shape):
            raise ModelError(f"{source}: tensor {name!r} has shape {tuple(shape)}, expected {tuple(expected[name].shape)}")


def save_checkpoint(model: MoiraiNetwork, folder: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `model` as config.json + model.safetensors in the Hub layout.

    `weights` (names as the model's state dict) are written instead of the model's own, when given
    (fine-tuning writes adapters merged into the weights they adapt).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    weights = model.state_dict() if weights is None else weights
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder


def random_model(config: FamilyConfig, seed: int = 0) -> MoiraiNetwork:
    """A randomly initialised network of any family (for tests and benchmarks), MoE centroids filled."""
    generator = torch.Generator().manual_seed(seed)
    model = build_network(config)
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
