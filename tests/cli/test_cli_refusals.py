"""Input that gave an internal error, a wrong answer or a message that contradicted itself: now read right, or
one line and exit 2, in a real `moirai` process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests" / "fixtures" / "tiny-moe")


def forecast(data: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "moirai_cli.cli", "forecast", str(data), "-H", "2", "--model", TINY, "--device", "cpu", "-q", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def single(tmp_path: Path, dates) -> Path:
    path = tmp_path / "d.csv"
    pd.DataFrame({"date": list(dates), "y": range(len(dates))}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "dates, options, fragment",
    [
        # IndexError / ValueError with numpy warning lines, exit 1.
        (pd.date_range("2020-01-01", periods=5).strftime("%Y-%m-%d"), ["--freq", "-1D"], "--freq: '-1D' does not move forward in time"),
        (pd.date_range("2020-01-01", periods=5).strftime("%Y-%m-%d"), ["--freq", "0D"], "--freq: '0D' does not move forward in time"),
        # Yearly YY-MM-DD was read as 12 days of January 2001, exit 0.
        ([f"{year}-01-01" for year in range(13, 25)], [], "--date-format '%y-%m-%d'"),
        # "is outside the dates pandas can hold".
        (["Jan-24", "Feb-24", "Mar-24"], [], "give its format with --date-format, for example '%b-%y'"),
        # "not on the W-SUN grid ... or set --freq" although --freq was set.
        (pd.date_range("2020-01-01", periods=6, freq="MS").strftime("%Y-%m-%d"), ["--freq", "W"], "(weeks ending on Sunday)"),
    ],
)
def test_refused_in_one_line_with_exit_2(tmp_path, dates, options, fragment):
    result = forecast(single(tmp_path, dates), *options)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "set --freq" not in lines[0] or "--freq" not in options


def test_mid_month_monthly_data_is_forecast_on_the_same_day(tmp_path):
    # "2020-01-15 is not on the MS grid starting at 2020-01-15", whatever --freq was given.
    dates = pd.date_range("2020-01-15", periods=24, freq=pd.DateOffset(months=1)).strftime("%Y-%m-%d")
    result = forecast(single(tmp_path, dates), "--num-samples", "4", "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert [line.split(",")[1] for line in result.stdout.splitlines()[1:]] == ["2022-01-15", "2022-02-15"]


def test_ids_spelled_like_missing_values_are_forecast(tmp_path):
    # CSV ids NA (Namibia), None, null, nan were refused as missing ids after a misleading "rows are not grouped" note.
    path = tmp_path / "c.csv"
    path.write_text("country,date,y\n" + "".join(
        f"{code},2020-01-{day:02d},{day}\n" for code in ("NA", "None", "null", "nan") for day in range(1, 21)
    ))
    result = forecast(path, "--num-samples", "4", "--seed", "0")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1::2]] == ["NA", "None", "null", "nan"]
    path.write_text("id,date,y\nNA,2020-01-01,1\nNA,2020-01-02,2\n,2020-01-01,1\n,2020-01-02,2\n")
    empty = forecast(path)
    assert empty.returncode == 2 and empty.stderr.splitlines() == [f"error: {path}: column 'id', row 3: missing series id"]


def test_a_huge_context_length_on_short_series_forecasts(tmp_path):
    # --context-length 1000000000000 on 123-row series: "MemoryError: Unable to allocate 3.64 TiB", exit 1.
    data = single(tmp_path, pd.date_range("2020-01-01", periods=123).strftime("%Y-%m-%d"))
    huge = forecast(data, "--context-length", "1000000000000", "--num-samples", "4", "--seed", "0")
    assert huge.returncode == 0, huge.stderr
    assert huge.stdout == forecast(data, "--context-length", "4096", "--num-samples", "4", "--seed", "0").stdout
