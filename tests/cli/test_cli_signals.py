"""A real `moirai` process stopped by a signal, or by a reader that goes away: clean exit, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny-moe"

@pytest.fixture(scope="module")
def many_series(tmp_path_factory) -> Path:
    """1024 series: the tiny model takes seconds on them, long after the output's temporary file appears."""
    count, length = 1024, 100
    rng = np.random.default_rng(0)
    table = pd.DataFrame({
        "item_id": np.repeat([f"s{i:04d}" for i in range(count)], length),
        "timestamp": np.tile(pd.date_range("2024-01-01", periods=length, freq="h").astype(str), count),
        "target": rng.normal(size=count * length).round(3),
    })
    path = tmp_path_factory.mktemp("data") / "many.csv"
    table.to_csv(path, index=False)
    return path


def start(command: list[str], **popen) -> subprocess.Popen:
    """A `moirai` process on the working tree's package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(command, env=env, stdout=popen.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, **popen)


def wait_for_temporary_file(folder: Path, process: subprocess.Popen) -> Path:
    """The output's temporary file once it exists: the sign that the forecast is running."""
    while process.poll() is None:
        found = list(folder.glob(".out.csv.*.tmp"))
        if found:
            return found[0]
    raise AssertionError(f"the process ended ({process.returncode}) before its output was started: {process.stderr.read()!r}")


def forecast_args(data: Path, out: Path) -> list[str]:
    return ["forecast", str(data), "-H", "64", "--model", str(TINY), "--device", "cpu", "--threads", "1", "-q", "-o", str(out)]


@pytest.mark.parametrize(
    "signum, code, message",
    [
        (signal.SIGTERM, 143, "error: stopped by SIGTERM"),
        (signal.SIGHUP, 129, "error: stopped by SIGHUP"),
        (signal.SIGINT, 130, "error: interrupted"),
    ],
)
def test_signal_stops_the_run_cleanly(tmp_path, many_series, moirai_command, signum, code, message):
    out = tmp_path / "out.csv"
    out.write_text("an older result\n")
    process = start(moirai_command(*forecast_args(many_series, out)))
    try:
        temporary = wait_for_temporary_file(tmp_path, process)
        process.send_signal(signum)
        _, stderr = process.communicate()
    finally:
        process.kill()
        process.wait()
    assert process.returncode == code
    assert stderr.decode().splitlines() == [message]
    assert not temporary.exists() and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert out.read_text() == "an older result\n"


def test_hangup_ignored_at_start_stays_ignored(tmp_path, many_series, moirai_command):
    """Under `nohup` a closed terminal must not stop the run; SIGTERM still does, cleanly."""
    out = tmp_path / "out.csv"
    process = start(moirai_command(*forecast_args(many_series, out), dispositions={"SIGHUP": "SIG_IGN"}))
    try:
        wait_for_temporary_file(tmp_path, process)
        process.send_signal(signal.SIGHUP)
        process.send_signal(signal.SIGTERM)  # signals arrive in number order: SIGHUP (1) is handled first
        _, stderr = process.communicate()
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143 and stderr.decode().splitlines() == ["error: stopped by SIGTERM"]
    assert list(tmp_path.iterdir()) == []


def test_reader_closing_stdout_ends_quietly_with_141(moirai_command):
    """`moirai forecast ... | head`: exit status 141 (128 + SIGPIPE, like any command whose reader left), no message."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    data = ROOT / "sample_data" / "stocks.csv"
    process = start(moirai_command("forecast", str(data), "-H", "3", "--model", str(TINY), "--device", "cpu", "-q"), stdout=write_end)
    os.close(write_end)
    _, stderr = process.communicate()
    assert process.returncode == 141 and stderr.decode() == ""
