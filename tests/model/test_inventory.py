"""What `moirai models` lists: catalog entries, licences from cached model cards, cached commits, offline.

The cache is filled by the real fetching code from the Hub-like server of tests/fake_hub.py,
which serves the tiny checkpoints under published repo ids (with a model card where a test needs one).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from fake_hub import HUB_COMMIT, HUB_REPO

from moirai_cli.model.catalog import PUBLISHED, parameter_count
from moirai_cli.model.checkpoint import download_checkpoint
from moirai_cli.model.config import load_config
from moirai_cli.model.hub import HubWarning
from moirai_cli.model.inventory import (
    UNKNOWN,
    CachedCommit,
    card_licence,
    list_models,
    models_frame,
    models_records,
    refresh_model_cards,
)

MOIRAI_2 = "Salesforce/moirai-2.0-R-small"
CARD = "---\nlicense: cc-by-nc-4.0\nlibrary_name: uni2ts\n---\n# Moirai 2.0\n"


@pytest.fixture
def cache(hub_env) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def serve(fake_hub, repo_id: str, checkpoint: Path, tmp_path: Path, commit: str, card: str | None = CARD) -> None:
    """Serve `checkpoint`'s files (and a model card) as `repo_id` at `commit` (branch main)."""
    folder = tmp_path / f"{repo_id.replace('/', '_')}-{commit[:6]}"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((checkpoint / name).read_bytes())
    if card is not None:
        (folder / "README.md").write_text(card)
    fake_hub.add_repo(repo_id, folder, commit)


def entry(entries, repo_id: str):
    (found,) = [e for e in entries if e.repo_id == repo_id]
    return found


def caught_warnings(call, *args, **kwargs) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call(*args, **kwargs)
    return value, [str(w.message) for w in caught if issubclass(w.category, HubWarning)]


@pytest.mark.parametrize(
    "text, licence",
    [
        ("---\nlicense: cc-by-nc-4.0\n---\n# card", "cc-by-nc-4.0"),
        ("---\nlicense: apache-2.0\ntags:\n- time series\n---\n", "apache-2.0"),
        ("---\nlicense: other\nlicense_name: salesforce-research\n---\n", "salesforce-research"),
        ("---\nlicense: other\n---\n", "other"),
        ("---\nlicense:\n- mit\n- cc-by-4.0\n---\n", "mit, cc-by-4.0"),
        ("---\npipeline_tag: time-series-forecasting\n---\n", None),
        ("# no front matter\nlicense: mit\n", None),
        ("---\nlicense: [unclosed\n---\n", None),
    ],
)
def test_card_licence_reads_the_front_matter(tmp_path, text, licence):
    card = tmp_path / "README.md"
    card.write_text(text)
    assert card_licence(card) == licence


def test_an_empty_cache_lists_the_catalog_with_unknown_licences(tmp_path):
    entries = list_models(tmp_path / "nothing-here")
    assert [e.repo_id for e in entries] == [c.repo_id for c in PUBLISHED]
    for e, published in zip(entries, PUBLISHED):
        assert (e.family, e.size, e.patch_sizes) == (published.family, published.size, tuple(published.config.patch_sizes))
        assert e.parameters == parameter_count(published.config) and e.published
        assert e.licence == UNKNOWN and e.cached == ()
    assert entry(entries, "Salesforce/moirai-moe-1.0-R-base").parameters == 935_066_592


def test_a_download_caches_the_licence_and_listing_asks_nothing(cache, fake_hub, moirai2_checkpoint, tmp_path):
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, HUB_COMMIT)
    download_checkpoint(MOIRAI_2)
    fake_hub.set_fault("hang")  # any request would now wait: listing must make none
    fake_hub.requests.clear()
    listed = entry(list_models(), MOIRAI_2)
    assert listed.licence == "cc-by-nc-4.0"
    assert listed.cached == (CachedCommit(HUB_COMMIT, ("main",)),)
    assert fake_hub.requests == []
    others = [e for e in list_models() if e.repo_id != MOIRAI_2]
    assert all(e.cached == () and e.licence == UNKNOWN for e in others)


def test_a_model_without_a_card_is_cached_with_an_unknown_licence(cache, fake_hub, moirai2_checkpoint, tmp_path):
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, HUB_COMMIT, card=None)
    download_checkpoint(MOIRAI_2)
    listed = entry(list_models(), MOIRAI_2)
    assert listed.licence == UNKNOWN and listed.cached == (CachedCommit(HUB_COMMIT, ("main",)),)


def test_a_partial_snapshot_is_not_cached(cache, fake_hub, moirai2_checkpoint, tmp_path):
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, HUB_COMMIT)
    folder = download_checkpoint(MOIRAI_2)
    (folder / "model.safetensors").unlink()
    listed = entry(list_models(), MOIRAI_2)
    assert listed.cached == () and listed.licence == "cc-by-nc-4.0"


def test_several_cached_commits_with_their_refs(cache, fake_hub, moirai2_checkpoint, tmp_path):
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, HUB_COMMIT, card="---\nlicense: mit\n---\n")
    download_checkpoint(MOIRAI_2)
    newer = "b" * 40
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, newer)
    fake_hub.repos[MOIRAI_2].refs["v1"] = HUB_COMMIT
    download_checkpoint(MOIRAI_2)  # main moves to the newer commit
    download_checkpoint(MOIRAI_2, revision="v1")
    listed = entry(list_models(), MOIRAI_2)
    assert {c.commit: c.refs for c in listed.cached} == {newer: ("main",), HUB_COMMIT: ("v1",)}
    assert listed.licence == "cc-by-nc-4.0"  # main's card


def test_other_moirai_checkpoints_in_the_cache_are_listed_after_the_catalog(cache, fake_hub, tiny_checkpoint, tmp_path):
    download_checkpoint(HUB_REPO)  # Org/tiny-moe: not a published checkpoint
    not_moirai = tmp_path / "t5"
    not_moirai.mkdir()
    (not_moirai / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 512}))
    (not_moirai / "model.safetensors").write_bytes(b"\0" * 16)
    fake_hub.add_repo("Org/t5", not_moirai, "d" * 40)
    download_checkpoint("Org/t5")
    entries = list_models()
    assert [e.repo_id for e in entries[len(PUBLISHED) :]] == [HUB_REPO]
    other = entries[-1]
    config = load_config(tiny_checkpoint / "config.json")
    assert (other.family, other.size, other.published) == ("moirai-moe", None, False)
    assert other.parameters == parameter_count(config) and other.patch_sizes == (16,)
    assert other.cached == (CachedCommit(HUB_COMMIT, ("main",)),) and other.licence == UNKNOWN


def test_refresh_fetches_cards_without_touching_the_cached_weights(cache, fake_hub, moirai2_checkpoint, tmp_path):
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, HUB_COMMIT, card=None)
    download_checkpoint(MOIRAI_2)
    newer = "e" * 40
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, newer)  # main moves on, now with a card
    fetched, caught = caught_warnings(refresh_model_cards, [MOIRAI_2])
    assert fetched == 1 and caught == []
    listed = entry(list_models(), MOIRAI_2)
    assert listed.licence == "cc-by-nc-4.0"
    assert listed.cached == (CachedCommit(HUB_COMMIT, ("main",)),)  # main still names the weights in the cache
    assert fake_hub.count("GET", r"model\.safetensors") == 1  # the first download only


def test_refresh_warns_per_repo_and_goes_on(cache, fake_hub, moirai2_checkpoint, tmp_path):
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, HUB_COMMIT)
    serve(fake_hub, "Org/no-card", moirai2_checkpoint, tmp_path, HUB_COMMIT, card=None)
    fetched, caught = caught_warnings(refresh_model_cards, ["Org/missing", "Org/no-card", MOIRAI_2])
    assert fetched == 1 and len(caught) == 2
    assert caught[0].startswith("no model card for 'Org/missing': model 'Org/missing' was not found")
    assert caught[1] == "'Org/no-card' has no model card (README.md) on the Hub; its licence stays unknown"
    assert entry(list_models(), MOIRAI_2).licence == "cc-by-nc-4.0"


def test_refresh_stops_at_the_first_outage_with_one_warning(cache, fake_hub):
    fake_hub.set_fault("hang")
    fetched, caught = caught_warnings(refresh_model_cards, [c.repo_id for c in PUBLISHED])
    assert fetched == 0
    (warning,) = caught
    assert "did not answer within 0.5 s" in warning and warning.endswith("licences are shown as the cache knows them")
    assert len(fake_hub.requests) == 1


def test_frame_and_records_carry_every_field(cache, fake_hub, moirai2_checkpoint, tmp_path):
    serve(fake_hub, MOIRAI_2, moirai2_checkpoint, tmp_path, HUB_COMMIT)
    download_checkpoint(MOIRAI_2)
    entries = list_models()
    frame = models_frame(entries)
    assert list(frame.columns) == ["model", "family", "size", "parameters", "patch_sizes", "licence", "cached", "revisions"]
    row = frame.set_index("model").loc[MOIRAI_2]
    assert (row["family"], row["licence"], bool(row["cached"]), row["revisions"]) == (
        "Moirai 2.0", "cc-by-nc-4.0", True, f"{HUB_COMMIT} (main)"
    )
    assert frame.set_index("model").loc["Salesforce/moirai-1.1-R-small", "patch_sizes"] == "8 16 32 64 128"
    record = next(r for r in models_records(entries) if r["model"] == MOIRAI_2)
    assert record["cached"] == [{"commit": HUB_COMMIT, "refs": ["main"]}] and record["patch_sizes"] == [16]
    json.dumps(models_records(entries))  # plain JSON types
