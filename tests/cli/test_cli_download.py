"""`moirai download`: resolve, check that it loads, print the folder; clear errors when offline."""

from __future__ import annotations

from moirai_cli import cli
from moirai_cli.cli import app
from moirai_cli.errors import ModelError
from moirai_cli.forecasting.pipeline import DEFAULT_MODEL


def test_download_prints_the_checked_folder(runner, fake_model, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(
        cli, "_resolve_checkpoint", lambda name, rev, cache: seen.append((name, rev, cache)) or tmp_path
    )
    result = runner.invoke(app, ["download", "--revision", "v1", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path)
    assert seen == [(DEFAULT_MODEL, "v1", str(tmp_path))]
    assert fake_model.loads[0][0] == str(tmp_path) and fake_model.loads[0][1]["device"] == "cpu"


def test_download_offline_is_one_line_exit_1(runner, monkeypatch):
    def offline(name, rev, cache):
        raise ModelError(f"cannot reach the Hugging Face Hub to fetch '{name}'; pass --model with a local folder")

    monkeypatch.setattr(cli, "_resolve_checkpoint", offline)
    result = runner.invoke(app, ["download", "org/model"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: cannot reach") and result.stderr.count("\n") == 1


def test_download_unexpected_failure_becomes_model_error(runner, monkeypatch):
    def boom(name, rev, cache):
        raise ConnectionError("Max retries exceeded\nwith url")

    monkeypatch.setattr(cli, "_resolve_checkpoint", boom)
    result = runner.invoke(app, ["download", "org/model"])
    assert result.exit_code == 1
    assert result.stderr == "error: cannot download 'org/model': Max retries exceeded with url\n"
