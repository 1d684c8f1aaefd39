"""Outputs that would destroy an input, and DATA that is no file: refused in a real `moirai` process before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests" / "fixtures" / "tiny-moe")
STOCKS = ROOT / "sample_data" / "stocks.csv"


def moirai(*args: str, cwd: Path, stdin=subprocess.DEVNULL, **options) -> subprocess.CompletedProcess:
    """Run `python -m moirai_cli.cli ARGS` as a user would, in `cwd`; the tiny checkpoint for any model."""
    command = [sys.executable, "-m", "moirai_cli.cli", *args]
    if args[0] in ("forecast", "evaluate"):
        command += ["--model", TINY, "--num-samples", "5", "--seed", "0", "--device", "cpu", "-q"]
    return subprocess.run(command, cwd=cwd, stdin=stdin, capture_output=True, text=True, timeout=600, **options)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2 after one `error:` line naming what is wrong, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def stock_folders(tmp_path) -> Path:
    """`data/` with one CSV per stock, `parts/` with the same rows as two Spark-style Parquet parts."""
    stocks = pd.read_csv(STOCKS)
    (tmp_path / "data").mkdir()
    (tmp_path / "parts").mkdir()
    for symbol, rows in stocks.groupby("symbol"):
        rows.to_csv(tmp_path / "data" / f"{symbol}.csv", index=False)
    half = stocks["symbol"].isin(["AAPL", "AMZN"])
    stocks[half].to_parquet(tmp_path / "parts" / "part-00000.parquet")
    stocks[~half].to_parquet(tmp_path / "parts" / "part-00001.parquet")
    return tmp_path


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "args, fragment",
    [
        # A 124-line input became an 11-line forecast.
        (["forecast", "data/*.csv", "-H", "3", "-o", "data/MSFT.csv"], "--output would overwrite the input file (DATA)"),
        # Every input part was deleted.
        (["forecast", "parts/*.parquet", "-H", "3", "-o", "parts/"], "--output is a folder that holds input files of DATA"),
        (["forecast", "parts/", "-H", "3", "-o", "parts/"], "--output is the input folder (DATA)"),
        # The input part was replaced with metrics.
        (["evaluate", "parts/part-00000.parquet", "-H", "3", "-o", "parts"], "--output is a folder that holds input files of DATA"),
        (["forecast", "data/MSFT.csv", "-H", "3", "-o", "file://{root}/data/MSFT.csv"], "--output would overwrite the input file"),
        (["forecast", "file://{root}/data/MSFT.csv", "-H", "3", "-o", "data/MSFT.csv"], "--output would overwrite the input file"),
    ],
)
def test_an_output_naming_an_input_is_refused_and_the_inputs_stay(stock_folders, args, fragment):
    before = {folder: contents(stock_folders / folder) for folder in ("data", "parts")}
    result = moirai(*[arg.format(root=stock_folders) for arg in args], cwd=stock_folders)
    assert_refused(result, fragment)
    assert {folder: contents(stock_folders / folder) for folder in ("data", "parts")} == before


def test_a_named_pipe_or_a_device_as_data_is_refused(tmp_path):
    # A FIFO or /dev/null said "cannot list this location ... Not a directory".
    os.mkfifo(tmp_path / "pipe.csv")
    assert_refused(moirai("forecast", "pipe.csv", "-H", "3", cwd=tmp_path), "pipe.csv: not a regular file (a named pipe)", "'-'")
    assert_refused(moirai("forecast", "/dev/null", "-H", "3", cwd=tmp_path), "/dev/null: not a regular file (a device)")


def test_data_from_a_closed_stdin_is_refused(tmp_path):
    # stdin closed (`<&-`) with DATA '-': "AttributeError: 'NoneType' object has no attribute 'read'".
    closed = moirai("forecast", "-", "-H", "3", cwd=tmp_path, stdin=None, preexec_fn=lambda: os.close(0))
    assert_refused(closed, "<stdin>: stdin is closed")
