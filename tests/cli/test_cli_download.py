"""`moirai download` and the model options of `forecast`, against a Hub-like server on 127.0.0.1.

The first tests stub the resolver to pin down the command's contract; the rest run the real
fetching code against tests/fake_hub.py: in-process through `main([...])`, and in a subprocess
where signals or a terminal matter. Waits are 0.5 s (MOIRAI_HUB_TIMEOUT, set by hub_env).
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from fake_hub import HUB_COMMIT, HUB_REPO

from moirai_cli.cli import models as cli
from moirai_cli.cli import app, main
from moirai_cli.errors import ModelError
from moirai_cli.forecasting.pipeline import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]
SERIES = ROOT / "sample_data" / "seattle_temps.csv"
FORECAST = ["--horizon", "4", "--num-samples", "4", "--context-length", "64", "--device", "cpu"]


# --- the command's contract (resolver stubbed) ----------------------------------------------------


def test_download_prints_the_checked_folder(runner, fake_model, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(cli, "_resolve_checkpoint", lambda name, rev, cache, **options: seen.append((name, rev, cache, options)) or tmp_path)
    result = runner.invoke(app, ["download", "--revision", "v1", "--cache-dir", str(tmp_path), "--force", "-q"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path)
    assert seen == [(DEFAULT_MODEL, "v1", str(tmp_path), {"force": True, "quiet": True})]
    assert fake_model.loads[0][0] == str(tmp_path) and fake_model.loads[0][1]["device"] == "cpu"


def test_download_offline_is_one_line_exit_1(runner, monkeypatch):
    def offline(name, rev, cache, **options):
        raise ModelError(f"cannot reach the Hugging Face Hub to fetch '{name}'")

    monkeypatch.setattr(cli, "_resolve_checkpoint", offline)
    result = runner.invoke(app, ["download", "org/model"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: cannot reach") and result.stderr.count("\n") == 1


def test_download_unexpected_failure_becomes_model_error(runner, monkeypatch):
    def boom(name, rev, cache, **options):
        raise ConnectionError("Max retries exceeded\nwith url")

    monkeypatch.setattr(cli, "_resolve_checkpoint", boom)
    result = runner.invoke(app, ["download", "org/model"])
    assert result.exit_code == 1
    assert result.stderr == "error: cannot download 'org/model': Max retries exceeded with url\n"


# --- against the fake Hub, in-process ------------------------------------------------------------------


def run(capsys, *args: str) -> tuple[int, str, list[str]]:
    """main([...]): exit code, stdout, and the stderr lines."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def assert_one_error_line(lines: list[str], *fragments: str) -> str:
    """Exactly one line, an `error:` line holding every fragment, tidy (no '.;', no clipped names)."""
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("error: ") and ".;" not in line and "(…)" not in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture
def snapshot(hub_env) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / "models--Org--tiny-moe" / "snapshots" / HUB_COMMIT


@pytest.fixture
def downloaded(hub_env, fake_hub, capsys, snapshot) -> Path:
    """`moirai download HUB_REPO` once against a healthy server."""
    assert run(capsys, "download", HUB_REPO) == (0, f"{snapshot}\n", [])
    fake_hub.requests.clear()
    return snapshot


def test_download_is_quiet_when_stderr_is_not_a_terminal(downloaded, tiny_checkpoint):
    # The fixture asserted exit 0, the folder on stdout and nothing at all on stderr (no bar frames).
    for name in ("config.json", "model.safetensors"):
        assert (downloaded / name).read_bytes() == (tiny_checkpoint / name).read_bytes()


def test_download_force_fetches_again(downloaded, fake_hub, capsys):
    assert run(capsys, "download", HUB_REPO, "--force") == (0, f"{downloaded}\n", [])
    assert fake_hub.count("GET", r"/resolve/.*/model\.safetensors$") == 1


def test_download_repairs_a_damaged_cache_without_force(downloaded, fake_hub, capsys, tiny_checkpoint):
    import fake_hub as server_module

    blob = (downloaded / "model.safetensors").resolve()
    blob.write_bytes(server_module.corrupted(blob.read_bytes()))
    code, out, lines = run(capsys, "forecast", str(SERIES), *FORECAST, "--model", HUB_REPO, "-q")
    assert code == 1 and out == ""
    assert_one_error_line(
        lines, f"{downloaded / 'model.safetensors'}: tensor ", "NaN or infinite", f"`moirai download {HUB_REPO} --force`"
    )
    code, out, lines = run(capsys, "download", HUB_REPO)
    assert (code, out) == (0, f"{downloaded}\n")
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "downloading it again" in lines[0]
    assert blob.read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes()
    code, out, _ = run(capsys, "forecast", str(SERIES), *FORECAST, "--model", HUB_REPO, "-q")
    assert code == 0 and out.startswith("item_id,")


def test_forecast_with_a_cached_model_and_a_silent_hub_warns_once_and_forecasts(downloaded, fake_hub, capsys):
    fake_hub.set_fault("hang")
    code, out, lines = run(capsys, "forecast", str(SERIES), *FORECAST, "--model", HUB_REPO, "-q")
    assert code == 0 and len(out.splitlines()) == 5
    (warning,) = lines
    assert warning == (
        f"warning: the Hub at {fake_hub.url} did not answer within 0.5 s; using cached commit {HUB_COMMIT} of '{HUB_REPO}'"
    )


@pytest.mark.parametrize("command", ["forecast", "download"])
def test_an_uncached_model_and_a_silent_hub_fail_with_one_line(command, hub_env, fake_hub, capsys):
    fake_hub.set_fault("hang")
    args = [str(SERIES), *FORECAST, "--model", HUB_REPO, "-q"] if command == "forecast" else [HUB_REPO]
    code, out, lines = run(capsys, command, *args)
    assert code == 1 and out == ""
    line = assert_one_error_line(lines, fake_hub.url, "did not answer within 0.5 s", "HF_HUB_OFFLINE", "not in the cache")
    # The way out fits the command: forecast takes --model, download takes the model as its argument.
    assert ("pass --model with a local checkpoint folder" in line) == (command == "forecast")
    assert "--model" not in line or command == "forecast"


@pytest.mark.parametrize(
    "setup, fragments",
    [
        ("500", ["answered HTTP 500 (server error)", "try again later"]),
        ("gated", ["is gated", "accept the licence on", "HF_TOKEN"]),
        ("private", ["was not found", "or it is private", "HF_TOKEN"]),
        ("bad-token", ["rejected your token", "HF_TOKEN"]),
        ("revision", ["has no revision 'v9'"]),
        ("corrupt", ["does not match the sha256", "twice; nothing was kept"]),
        ("truncated", ["arrived incomplete", "twice; nothing was kept"]),
    ],
)
def test_download_failures_name_their_cause_in_one_line(setup, fragments, hub_env, fake_hub, capsys, monkeypatch):
    args = ["download", HUB_REPO]
    if setup in ("500", "corrupt", "truncated"):
        fake_hub.set_fault(setup)
    elif setup == "gated":
        fake_hub.repos[HUB_REPO].gated = True
    elif setup == "private":
        fake_hub.repos[HUB_REPO].private = True
    elif setup == "bad-token":
        monkeypatch.setenv("HF_TOKEN", "bad")
    elif setup == "revision":
        args += ["--revision", "v9"]
    code, out, lines = run(capsys, *args)
    assert code == 1 and out == ""
    warnings_ = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings_) <= 1  # the one retry of bad bytes
    assert_one_error_line([line for line in lines if not line.startswith("warning: ")], *fragments)


def test_a_dropped_connection_costs_one_warning_line(hub_env, fake_hub, capsys, snapshot):
    fake_hub.set_fault("drop", times=1)
    code, out, lines = run(capsys, "download", HUB_REPO)
    assert (code, out) == (0, f"{snapshot}\n")
    (warning,) = lines
    assert warning.startswith("warning: ") and "model.safetensors" in warning and "broke" in warning


# --- in a subprocess: signals and terminals -------------------------------------------------------------


def subprocess_env(hub_env: dict[str, str]) -> dict[str, str]:
    return {**hub_env, "PYTHONPATH": os.pathsep.join([str(ROOT), hub_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.mark.parametrize(
    "signum, code, message", [(signal.SIGTERM, 143, "error: stopped by SIGTERM"), (signal.SIGINT, 130, "error: interrupted")]
)
def test_a_signal_ends_a_download_and_leaves_no_partial_file(
    signum, code, message, hub_env, fake_hub, snapshot, moirai_command
):
    fake_hub.set_fault("slow")  # the weights trickle in for about five seconds
    process = subprocess.Popen(
        moirai_command("download", HUB_REPO),  # SIGINT at its default even when the tests run in the background
        env=subprocess_env(hub_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    blobs = snapshot.parent.parent / "blobs"
    weights_partial = []
    while process.poll() is None and not weights_partial:  # wait for the weights' partial file
        weights_partial = [p for p in blobs.glob("*.incomplete")] if blobs.is_dir() else []
        weights_partial = [p for p in weights_partial if len(p.name.split(".")[0]) == 64]
        time.sleep(0.01)
    assert weights_partial, "the download ended before it could be interrupted"
    process.send_signal(signum)
    out, err = process.communicate()
    assert process.returncode == code
    assert (out, err) == ("", f"{message}\n")
    assert sorted(p.name for p in blobs.iterdir()) == [(snapshot / "config.json").resolve().name]
    assert not (snapshot / "model.safetensors").exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bars_appear_on_a_terminal_unless_quiet(quiet, hub_env, fake_hub, snapshot):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "moirai_cli.cli", "download", HUB_REPO, *(["--quiet"] if quiet else [])],
            env=subprocess_env(hub_env),
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process has exited
                break
            if not chunk:
                break
            shown += chunk
        out, _ = process.communicate()
    finally:
        os.close(controller)
    assert process.returncode == 0 and out.decode().strip() == str(snapshot)
    if quiet:
        assert shown == b""
    else:
        assert b"model.safetensors" in shown and b"100%" in shown
