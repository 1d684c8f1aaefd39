"""What `moirai models` lists: the published Moirai checkpoints and any other Moirai checkpoint in the cache.

Each entry gives the family, size, parameter count and patch sizes (from the catalog, or from a
cached config.json), the licence the model card names, and the commits whose config and weights
are in the local cache, with the branches or tags recorded as pointing at them. Listing reads the
cache only, so it is instant and works offline. The model card (README.md) is fetched with the
weights (moirai_cli.model.hub); `refresh_model_cards` fetches the cards alone, with the same
bounded waits.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.table import Table

from moirai_cli.model.catalog import PUBLISHED, find_published, parameter_count
from moirai_cli.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from moirai_cli.model.config import FAMILY_TITLES, FamilyConfig, load_config
from moirai_cli.model.hub import (
    CARD_FILE,
    CachedRepo,
    HubError,
    HubUnavailableError,
    HubWarning,
    cache_root,
    fetch_model_card,
)

UNKNOWN = "unknown"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE)
SHORT_COMMIT = 7  # hex digits of a commit shown in the table (the CSV and JSON give all 40)


@dataclass(frozen=True)
class CachedCommit:
    """A commit of a repo whose config and weights are both in the cache."""

    commit: str
    refs: tuple[str, ...]  # branches or tags the cache records as pointing at it

    def describe(self, digits: int = 40) -> str:
        """'<commit> (main, v1)', the commit cut to `digits` hex digits."""
        return self.commit[:digits] + (f" ({', '.join(self.refs)})" if self.refs else "")


@dataclass(frozen=True)
class ModelEntry:
    """One listed checkpoint."""

    repo_id: str
    family: str  # 'moirai-1', 'moirai-moe' or 'moirai-2'
    size: str | None  # small, base or large; None for a checkpoint outside the catalog
    parameters: int  # MoE: every expert
    patch_sizes: tuple[int, ...]
    licence: str  # as the model card's metadata names it; UNKNOWN when no card is cached
    cached: tuple[CachedCommit, ...]  # newest first; empty when not in the cache
    published: bool  # in the catalog of Salesforce checkpoints

    @property
    def family_title(self) -> str:
        return FAMILY_TITLES[self.family]


def card_licence(card: Path) -> str | None:
    """The licence a model card's YAML front matter names (`license:`, or `license_name:` for 'other'), or None."""
    from huggingface_hub.repocard import metadata_load

    try:
        metadata = metadata_load(card) or {}
    except Exception:  # unreadable file or malformed YAML: the licence is not known
        return None
    licence = metadata.get("license")
    if licence == "other" and metadata.get("license_name"):
        licence = metadata["license_name"]
    if isinstance(licence, (list, tuple)):
        licence = ", ".join(str(item) for item in licence)
    text = str(licence).strip() if licence else ""
    return text or None


def list_models(cache_dir: str | Path | None = None) -> list[ModelEntry]:
    """The published checkpoints, in catalog order, then the other Moirai checkpoints found in the cache, by repo id."""
    root = cache_root(cache_dir)
    counts: dict[FamilyConfig, int] = {}  # Moirai 1.0 and 1.1 share their architectures

    def entry(repo_id: str, config: FamilyConfig, size: str | None, published: bool) -> ModelEntry:
        if config not in counts:
            counts[config] = parameter_count(config)
        repo = CachedRepo(repo_id, root)
        return ModelEntry(
            repo_id, config.family, size, counts[config], tuple(config.patch_sizes), _licence(repo), _cached_commits(repo), published
        )

    entries = [entry(c.repo_id, c.config, c.size, True) for c in PUBLISHED]
    entries += [entry(repo_id, config, None, False) for repo_id, config in _other_cached_checkpoints(root)]
    return entries


def refresh_model_cards(repo_ids: Iterable[str], cache_dir: str | Path | None = None) -> int:
    """Fetch the model card of each repo's main branch into the cache; returns how many were fetched.

    A repo the Hub refuses or that has no card is a HubWarning and the next is asked; when the
    Hub does not answer or cannot be reached, one HubWarning says so and no further repo is asked.
    """
    fetched = 0
    for repo_id in repo_ids:
        try:
            card = fetch_model_card(repo_id, cache_dir=cache_dir)
        except HubUnavailableError as exc:
            warnings.warn(f"{exc.reason}; licences are shown as the cache knows them", HubWarning, stacklevel=2)
            break
        except HubError as exc:
            warnings.warn(f"no model card for '{repo_id}': {exc.reason}", HubWarning, stacklevel=2)
            continue
        if card is None:
            warnings.warn(f"'{repo_id}' has no model card ({CARD_FILE}) on the Hub; its licence stays unknown", HubWarning, stacklevel=2)
        else:
            fetched += 1
    return fetched


def _cached_commits(repo: CachedRepo) -> tuple[CachedCommit, ...]:
    """The repo's commits with config and weights in the cache, newest first, with the refs naming them."""
    refs = repo.refs()
    return tuple(
        CachedCommit(commit, tuple(name for name, target in refs.items() if target == commit))
        for commit in repo.snapshot_commits(CHECKPOINT_FILES)
    )


def _licence(repo: CachedRepo) -> str:
    """The licence of the cached card of main's commit, else of the newest cached card; UNKNOWN without one."""
    main = repo.commit_of("main")
    commits = ([main] if main else []) + repo.snapshot_commits((CARD_FILE,))
    for commit in commits:
        card = repo.snapshot(commit) / CARD_FILE
        licence = card_licence(card) if card.is_file() else None
        if licence:
            return licence
    return UNKNOWN


def _other_cached_checkpoints(root: Path) -> Iterator[tuple[str, FamilyConfig]]:
    """(repo id, config) of each cached repo outside the catalog whose newest complete snapshot is a Moirai checkpoint."""
    folders = sorted(root.glob("models--*--*")) if root.is_dir() else []
    for folder in folders:
        repo = CachedRepo.from_folder(folder)
        if repo is None or find_published(repo.repo_id) is not None:
            continue
        for commit in repo.snapshot_commits(CHECKPOINT_FILES)[:1]:
            try:
                config = load_config(repo.snapshot(commit) / CONFIG_FILE)
            except Exception:  # not a Moirai checkpoint (or an unreadable config): not ours to list
                continue
            yield repo.repo_id, config


# --- how a listing is shown ---------------------------------------------------------------------


def format_parameters(count: int) -> str:
    """13827528 -> '13.8M', 152300 -> '152.3K'."""
    return f"{count / 1e6:.1f}M" if count >= 1_000_000 else f"{count / 1e3:.1f}K"


def models_frame(entries: Sequence[ModelEntry]) -> pd.DataFrame:
    """One row per entry, for CSV: patch sizes space-separated, cached revisions '; '-separated."""
    return pd.DataFrame(
        {
            "model": [e.repo_id for e in entries],
            "family": [e.family_title for e in entries],
            "size": [e.size or "" for e in entries],
            "parameters": [e.parameters for e in entries],
            "patch_sizes": [" ".join(str(p) for p in e.patch_sizes) for e in entries],
            "licence": [e.licence for e in entries],
            "cached": [bool(e.cached) for e in entries],
            "revisions": ["; ".join(c.describe() for c in e.cached) for e in entries],
        }
    )


def models_records(entries: Sequence[ModelEntry]) -> list[dict[str, object]]:
    """One JSON-ready dict per entry: patch sizes a list, cached commits a list of {commit, refs}."""
    return [
        {
            "model": e.repo_id,
            "family": e.family_title,
            "size": e.size,
            "parameters": e.parameters,
            "patch_sizes": list(e.patch_sizes),
            "licence": e.licence,
            "cached": [{"commit": c.commit, "refs": list(c.refs)} for c in e.cached],
        }
        for e in entries
    ]


def render_models(entries: Sequence[ModelEntry], cache_dir: str | Path | None = None) -> Table:
    """A rich table of the entries, for a terminal."""
    root = cache_root(cache_dir)
    table = Table(
        title="Moirai checkpoints",
        caption=(
            f"Licence: as the model card in the cache names it (unknown until the model is downloaded, or "
            f"`moirai models --refresh`). Cache: {root}"
        ),
    )
    for name, justify in (
        ("Model", "left"), ("Family", "left"), ("Size", "left"), ("Parameters", "right"),
        ("Patch sizes", "left"), ("Licence", "left"), ("Cached", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in entries:
        cached = "\n".join(c.describe(SHORT_COMMIT) for c in e.cached) or "no"
        table.add_row(
            e.repo_id,
            e.family_title,
            e.size or "-",
            format_parameters(e.parameters),
            ", ".join(str(p) for p in e.patch_sizes),
            e.licence,
            cached if not e.cached else f"[green]{cached}[/]",
        )
    return table
