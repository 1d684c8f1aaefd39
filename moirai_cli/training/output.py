"""What a fine-tuning run leaves: a checkpoint folder in the family's Hub layout, with a model card.

The folder holds config.json and model.safetensors (merged weights, loadable by `load_model` and
`MoiraiForecaster.from_pretrained` like any checkpoint), README.md (the model card: base model,
data fingerprint, settings, steps, validation losses and metrics, the inherited licence) and, while
the run is unfinished, STATE_FILE, from which `resume` continues it.

Every write builds the whole folder beside the target and then swaps it in (two renames, with stop
signals held back in between), so a stop at any moment leaves the previous complete folder, or
the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moirai_cli import __version__
from moirai_cli.data import SeriesRecord
from moirai_cli.data.io import current_umask
from moirai_cli.errors import InputError
from moirai_cli.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_checkpoint
from moirai_cli.model.config import FAMILY_TITLES
from moirai_cli.model.hub import CARD_FILE, COMMIT_HASH, CachedRepo
from moirai_cli.model.inventory import UNKNOWN, card_licence
from moirai_cli.model.network import MoiraiNetwork
from moirai_cli.runtime import hold_stop_signals, release_stop_signals

STATE_FILE = "finetune-state.pt"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, STATE_FILE)
HUB_LICENCE_ID = "abcdefghijklmnopqrstuvwxyz0123456789-."  # characters of a Hub licence identifier (apache-2.0, cc-by-nc-4.0)


@dataclass(frozen=True)
class BaseModel:
    """The checkpoint a run starts from, as the model card names it."""

    name: str  # Hub repo id or folder, as given
    revision: str | None = None  # the commit, when the weights came from the Hub's cache
    licence: str = UNKNOWN  # as the base's model card names it

    @classmethod
    def from_checkpoint(cls, name: str, folder: str | Path, revision: str | None = None) -> "BaseModel":
        """Describe a resolved checkpoint folder: a Hub cache snapshot gives its repo id and commit, a card its licence."""
        folder = Path(folder)
        repo = CachedRepo.from_folder(folder.parent.parent) if folder.parent.name == "snapshots" else None
        if repo is not None and COMMIT_HASH.fullmatch(folder.name):
            name, revision = repo.repo_id, folder.name
        card = folder / CARD_FILE
        licence = card_licence(card) if card.is_file() else None
        return cls(name, revision, licence or UNKNOWN)


def data_fingerprint(records: Sequence[SeriesRecord]) -> str:
    """sha256 over every series' id, timestamps, target and covariates, in order: names the data a run saw."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{record.item_id!s}\x1f".encode())
        if record.timestamps is not None:
            digest.update(np.asarray(record.timestamps.asi8, dtype=np.int64).tobytes())
        for values in (record.target, record.past_covariates, record.known_covariates):
            array = np.ascontiguousarray(np.asarray(values, dtype=np.float64)) if values is not None else np.zeros(0)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def check_output_dir(folder: Path, resume: bool) -> None:
    """InputError when `folder` cannot take this run: a file, a folder of other files, or (unless resuming) an earlier run."""
    if not folder.parent.is_dir():
        raise InputError(f"{folder}: folder {folder.parent} does not exist")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; choose another output folder")
    contents = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    others = [name for name in contents if name not in RUN_FILES]
    if others:
        raise InputError(f"{folder}: folder holds other files ({others[0]}); choose a new or empty output folder")
    if resume:
        if STATE_FILE not in contents:
            finished = " holds a finished run" if CONFIG_FILE in contents else " holds no fine-tuning run"
            raise InputError(f"{folder}:{finished}; there is nothing to resume")
    elif contents:
        raise InputError(f"{folder}: holds an earlier fine-tuning run; resume it, or choose a new or empty output folder")


def publish_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Write a whole folder with `write(temporary_folder)` beside `target`, then swap it in for `target`.

    On any failure or stop the temporary folder is removed and `target` keeps its previous contents.
    """
    parent = target.parent
    if not parent.is_dir():
        raise InputError(f"{target}: folder {parent} does not exist")
    hold_stop_signals()
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        release_stop_signals()
        raise InputError(f"{target}: cannot write here: {exc.strerror or exc}") from exc
    try:
        release_stop_signals()
        try:
            write(staging)
        except OSError as exc:  # a full disk, a quota
            raise InputError(f"{target}: cannot write here: {exc.strerror or exc}") from exc
        mask = current_umask()
        for path in staging.iterdir():  # as a plain open() would leave them (safetensors writes 0600)
            path.chmod(0o666 & ~mask)
        staging.chmod(0o777 & ~mask)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`, the old `target` first moved aside; stop signals wait until both renames are done."""
    retired = target.with_name(f".{target.name}.old")
    hold_stop_signals()
    try:
        shutil.rmtree(retired, ignore_errors=True)
        if target.exists():
            target.rename(retired)
        staging.rename(target)
    except OSError as exc:
        if retired.exists() and not target.exists():
            retired.rename(target)
        raise InputError(f"{target}: cannot write here: {exc.strerror or exc}") from exc
    finally:
        release_stop_signals()
    shutil.rmtree(retired, ignore_errors=True)


def write_checkpoint_files(
    folder: Path, model: MoiraiNetwork, weights: dict[str, torch.Tensor], card: str, state: dict[str, Any] | None
) -> None:
    """config.json and model.safetensors (`weights`, named as `model`'s), README.md and (unfinished) the resume state."""
    save_checkpoint(model, folder, weights)
    (folder / CARD_FILE).write_text(card)
    if state is not None:
        torch.save(state, folder / STATE_FILE)


def load_state(folder: Path) -> dict[str, Any]:
    """The resume state of the unfinished run in `folder` (tensors and plain values only)."""
    try:
        return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise InputError(f"{folder / STATE_FILE}: cannot read the run's state ({exc}); start a new run in another folder") from exc


@dataclass(frozen=True)
class CardFacts:
    """Everything the model card states about a run."""

    family: str
    base: BaseModel
    fingerprint: str
    series: int
    horizon: int
    patch_size: int
    settings: dict[str, Any]
    learning_rate: float
    steps_run: int
    best_step: int
    stopped_early: bool
    finished: bool
    base_validation_loss: float | None
    best_validation_loss: float | None
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None


def licence_metadata(licence: str) -> list[str]:
    """The YAML front-matter lines that name a licence, as Hub cards do (unknown: none)."""
    if licence == UNKNOWN:
        return []
    if licence and all(character in HUB_LICENCE_ID for character in licence):
        return [f"license: {licence}"]
    return ["license: other", f"license_name: {json.dumps(licence)}"]


def model_card(facts: CardFacts) -> str:
    """The README.md of a run folder: metadata for the Hub, then what was trained on what, and how it went."""
    title = FAMILY_TITLES[facts.family]
    base = facts.base
    revision = f" at revision `{base.revision}`" if base.revision else ""
    metadata = ["---", *licence_metadata(base.licence), f"base_model: {json.dumps(base.name)}",
                "tags: [time-series, forecasting, moirai, fine-tuned, moirai-cli]", "---", ""]
    status = "finished" if facts.finished else "unfinished: `resume` continues it"
    lines = [
        f"# {title}, fine-tuned from {base.name}",
        "",
        f"Fine-tuned with moirai-cli {__version__} from `{base.name}`{revision} ({title}), run {status}.",
        f"Forecast with patch size {facts.patch_size}, the size it was trained with.",
        "",
        "## Data",
        "",
        f"- fingerprint: `{facts.fingerprint}` (sha256 of the series' ids, timestamps and values)",
        f"- {facts.series} series, horizon {facts.horizon}; validation on the last "
        f"{facts.settings['validation_windows']} horizon(s) of each series, held out of training",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in facts.settings.items() if name != "learning_rate"],
        f"| learning_rate | {facts.learning_rate:g} |",
        "",
        "## Training",
        "",
        f"- steps: {facts.steps_run}" + (" (stopped early: no better validation loss)" if facts.stopped_early else ""),
        f"- kept: the weights of step {facts.best_step}" + (" (the base model's)" if facts.best_step == 0 else ""),
    ]
    if facts.base_validation_loss is not None:
        lines.append(f"- validation loss: {facts.base_validation_loss:.6g} (base) -> {facts.best_validation_loss:.6g} (kept)")
    if facts.metrics_before is not None and facts.metrics_after is not None:
        lines += ["", "## Metrics on the validation windows", "", "| metric | base | fine-tuned |", "|---|---|---|"]
        lines += [f"| {name} | {facts.metrics_before[name]:.6g} | {facts.metrics_after[name]:.6g} |" for name in facts.metrics_before]
    licence = facts.base.licence
    lines += [
        "",
        "## Licence",
        "",
        "These weights are derived from the base model's and carry its licence: "
        + (f"{licence}." if licence != UNKNOWN else "see the base model's card."),
    ]
    return "\n".join(metadata + lines) + "\n"

