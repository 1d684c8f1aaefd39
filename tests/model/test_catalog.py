"""The catalog of published checkpoints: architectures, parameter counts, lookups, and the README's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from moirai_cli.model.catalog import PUBLISHED, find_published, find_size, parameter_count
from moirai_cli.model.config import Moirai1Config, Moirai2Config, MoiraiMoEConfig, load_config
from moirai_cli.model.network import build_network

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_family_and_size_is_listed():
    assert {(c.family, c.size) for c in PUBLISHED} == {
        ("moirai-1", "small"), ("moirai-1", "base"), ("moirai-1", "large"),
        ("moirai-moe", "small"), ("moirai-moe", "base"),
        ("moirai-2", "small"),
    }
    assert len({c.repo_id for c in PUBLISHED}) == len(PUBLISHED) == 9


@pytest.mark.parametrize(
    "repo_id, millions",
    [
        # The published parameter counts: 14M, 91M and 311M for Moirai 1.x, 117M and 935M for
        # Moirai-MoE (all experts), 11.4M for Moirai 2.0 small.
        ("Salesforce/moirai-1.1-R-small", 13.8),
        ("Salesforce/moirai-1.0-R-base", 91.4),
        ("Salesforce/moirai-1.1-R-large", 311.0),
        ("Salesforce/moirai-moe-1.0-R-small", 117.0),
        ("Salesforce/moirai-moe-1.0-R-base", 935.1),
        ("Salesforce/moirai-2.0-R-small", 11.4),
    ],
)
def test_parameter_counts_match_the_published_sizes(repo_id, millions):
    assert round(parameter_count(find_published(repo_id).config) / 1e6, 1) == millions


def test_parameter_count_equals_a_built_network(moirai1_checkpoint, tiny_checkpoint, moirai2_checkpoint):
    for folder in (moirai1_checkpoint, tiny_checkpoint, moirai2_checkpoint):
        config = load_config(folder / "config.json")
        assert parameter_count(config) == sum(p.numel() for p in build_network(config).parameters())


def test_lookups():
    assert find_published("salesforce/MOIRAI-2.0-R-small").config == Moirai2Config(
        d_model=384, d_ff=1024, num_layers=6, patch_size=16, num_predict_token=4
    )
    assert find_published("Salesforce/moirai-3") is None
    assert find_size("moirai-1", "large").repo_id == "Salesforce/moirai-1.1-R-large"
    assert isinstance(find_size("moirai-moe", "base").config, MoiraiMoEConfig)
    assert find_size("moirai-1", "small").config == Moirai1Config(d_model=384, num_layers=6, patch_sizes=(8, 16, 32, 64, 128))
    with pytest.raises(KeyError, match="choices"):
        find_size("moirai-2", "large")


def test_the_readme_lists_every_published_checkpoint():
    text = README.read_text()
    for checkpoint in PUBLISHED:
        assert f"`{checkpoint.repo_id}`" in text, checkpoint.repo_id
