"""`moirai models`: the catalog with licences and cache state, as CSV, table or JSON; offline unless --refresh.

The Hub is tests/fake_hub.py on 127.0.0.1 (waits 0.5 s, set by hub_env), serving the tiny Moirai 2.0
checkpoint as Salesforce/moirai-2.0-R-small with a model card.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from fake_hub import HUB_COMMIT

from moirai_cli.cli import app
from moirai_cli.model.catalog import PUBLISHED

MOIRAI_2 = "Salesforce/moirai-2.0-R-small"
CARD = "---\nlicense: cc-by-nc-4.0\n---\n# Moirai 2.0\n"


@pytest.fixture
def served(hub_env, fake_hub, moirai2_checkpoint, tmp_path) -> None:
    """The fake Hub serves MOIRAI_2 (the tiny 2.0 checkpoint and a model card) at HUB_COMMIT."""
    folder = tmp_path / "repo"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((moirai2_checkpoint / name).read_bytes())
    (folder / "README.md").write_text(CARD)
    fake_hub.add_repo(MOIRAI_2, folder, HUB_COMMIT)


def listing(runner, *args: str) -> pd.DataFrame:
    result = runner.invoke(app, ["models", *args])
    assert result.exit_code == 0, result.stderr
    return pd.read_csv(io.StringIO(result.stdout), keep_default_na=False).set_index("model")


def test_off_a_terminal_the_list_is_csv_of_every_published_checkpoint(runner, tmp_path):
    frame = listing(runner, "--cache-dir", str(tmp_path))
    assert list(frame.index) == [c.repo_id for c in PUBLISHED]
    assert list(frame.columns) == ["family", "size", "parameters", "patch_sizes", "licence", "cached", "revisions"]
    assert frame.loc["Salesforce/moirai-1.1-R-large", "parameters"] == 310_970_624
    assert frame.loc["Salesforce/moirai-moe-1.0-R-small", "patch_sizes"] == "16"
    assert set(frame["licence"]) == {"unknown"} and not frame["cached"].any()


def test_table_and_json_formats(runner, tmp_path):
    table = runner.invoke(app, ["models", "--cache-dir", str(tmp_path), "--format", "table"])
    assert table.exit_code == 0, table.stderr
    for text in ("Moirai checkpoints", "Salesforce/moirai-moe-1.0-R-base", "935.1M", "8, 16, 32, 64, 128", "unknown"):
        assert text in table.stdout
    as_json = runner.invoke(app, ["models", "--cache-dir", str(tmp_path), "--format", "json"])
    records = json.loads(as_json.stdout)
    assert [r["model"] for r in records] == [c.repo_id for c in PUBLISHED]
    assert records[0]["patch_sizes"] == [8, 16, 32, 64, 128] and records[0]["cached"] == []


def test_after_a_download_the_list_shows_licence_and_commit_without_asking_the_hub(runner, served, fake_hub):
    assert runner.invoke(app, ["download", MOIRAI_2, "-q"]).exit_code == 0
    fake_hub.set_fault("hang")  # a request would wait now
    fake_hub.requests.clear()
    frame = listing(runner)
    assert fake_hub.requests == []
    row = frame.loc[MOIRAI_2]
    assert (row["licence"], bool(row["cached"]), row["revisions"]) == ("cc-by-nc-4.0", True, f"{HUB_COMMIT} (main)")
    table = runner.invoke(app, ["models", "--format", "table"])
    assert f"{HUB_COMMIT[:7]} (main)" in table.stdout and "cc-by-nc-4.0" in table.stdout


def test_offline_mode_lists_from_the_cache(runner, served, fake_hub, monkeypatch):
    from huggingface_hub import constants

    assert runner.invoke(app, ["download", MOIRAI_2, "-q"]).exit_code == 0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    fake_hub.requests.clear()
    assert listing(runner).loc[MOIRAI_2, "licence"] == "cc-by-nc-4.0"
    assert fake_hub.requests == []


def test_refresh_fetches_the_cards(runner, served, fake_hub):
    frame = listing(runner, "--refresh")
    assert frame.loc[MOIRAI_2, "licence"] == "cc-by-nc-4.0"
    assert not frame.loc[MOIRAI_2, "cached"]  # the card only: no weights were downloaded
    assert fake_hub.count("GET", r"model\.safetensors|config\.json") == 0


def test_refresh_when_the_hub_does_not_answer_warns_once_and_lists_the_cache(runner, served, fake_hub):
    fake_hub.set_fault("hang")
    result = runner.invoke(app, ["models", "--refresh"])
    assert result.exit_code == 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("warning: the Hub at ") and "did not answer within 0.5 s" in line
    assert len(pd.read_csv(io.StringIO(result.stdout))) == len(PUBLISHED)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--format", "xml"], "--format: 'xml' is not one of table, csv, json"),
        (["--refresh"], "--refresh asks the Hub, but offline mode is on (HF_HUB_OFFLINE)"),
    ],
)
def test_bad_options_are_one_line_exit_2(runner, hub_env, monkeypatch, one_line_error, args, fragment):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    one_line_error(runner.invoke(app, ["models", *args]), 2, fragment)

