"""`moirai finetune`: a checkpoint folder every command loads, one-line refusals, stops that leave a whole folder, resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moirai_cli.cli import app

ROOT = Path(__file__).resolve().parents[2]
DATA = str(ROOT / "sample_data" / "us_employment.csv")
QUICK = ["-H", "12", "--model", str(ROOT / "tests" / "fixtures" / "tiny-moe"), "--context-length", "48", "--batch-size", "8"]


def test_finetune_writes_a_folder_forecast_loads(runner, tmp_path):
    tuned = tmp_path / "tuned"
    result = runner.invoke(app, ["finetune", DATA, *QUICK, "--steps", "6", "--validation-interval", "3", "--output-dir", str(tuned)])
    assert result.exit_code == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("fine-tuned Moirai-MoE for 6 steps; validation loss ") and summary.endswith(f"saved to {tuned}")
    assert sorted(p.name for p in tuned.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    forecast = runner.invoke(app, ["forecast", DATA, "-H", "3", "--model", str(tuned), "--seed", "0", "-q"])
    assert forecast.exit_code == 0 and len(forecast.stdout.splitlines()) == 1 + 22 * 3


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "error: --output-dir is required (or --resume DIR to continue a stopped run)"),
        (["--output-dir", "x", "--mode", "adapter"], "--mode: 'adapter' is not one of full, lora, head"),
        (["--output-dir", "x", "--learning-rate", "0"], "error: --learning-rate must be > 0, got 0.0"),
        (["--output-dir", "x", "--patch-size", "5"], "error: --patch-size 5 is not one of this checkpoint's sizes [16]"),
        (["--output-dir", "x", "--steps", "0"], "error: --steps must be at least 1, got 0"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(runner, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["finetune", DATA, *QUICK, *extra])
    last = result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 2 and last.startswith("error: ") and message.removeprefix("error: ") in last, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_run_leaves_a_whole_folder_and_resumes(tmp_path):
    tuned = tmp_path / "tuned"
    args = [sys.executable, "-m", "moirai_cli.cli", "finetune", DATA, *QUICK, "--validation-interval", "1", "--patience", "1000",
            "--learning-rate", "3e-3", "--output-dir", str(tuned)]
    process = subprocess.Popen([*args, "--steps", "100000"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # only a bound on a broken run; the first step takes a second
    while not (tuned / "model.safetensors").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate()
    assert process.returncode == 143 and stderr.strip().splitlines()[-1] == "error: stopped by SIGTERM"
    kept = sorted(p.name for p in tuned.iterdir())
    assert kept == ["README.md", "config.json", "finetune-state.pt", "model.safetensors"]  # the best step so far, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-built folder beside it
    refused = subprocess.run([sys.executable, "-m", "moirai_cli.cli", "finetune", DATA, "--resume", str(tuned), "--batch-size", "4",
                              "--model", QUICK[3]], capture_output=True, text=True)
    assert refused.returncode == 2 and "only --steps may change, not --batch-size" in refused.stderr
    resumed = subprocess.run([sys.executable, "-m", "moirai_cli.cli", "finetune", DATA, "--resume", str(tuned), "--steps", "6",
                              "--model", QUICK[3], "-q"], capture_output=True, text=True)
    if resumed.returncode == 2 and "already trained" in resumed.stderr:  # the stop came after step 6
        return
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in tuned.iterdir()) == ["README.md", "config.json", "model.safetensors"]  # finished
