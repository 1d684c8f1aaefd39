"""What a series gets must not depend on the chunk of 1,024 series it lands in: a real `moirai` process on 1,100 series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests" / "fixtures" / "tiny-moe")
SERIES = 1100  # more than one chunk (SERIES_PER_CHUNK = 1024)
LATE = "s1050"  # a series of the second chunk


@pytest.fixture(scope="module")
def zoned_file(tmp_path_factory) -> Path:
    """1,100 daily series with UTC offsets, sorted by id; those after the 1,024th cross the DST change of
    2024-03-31 (Paris), and LATE runs at about 1e9 with a small spread."""
    rows = []
    for number in range(SERIES):
        start = "2024-01-01" if number < 1024 else "2024-03-25"
        stamps = pd.date_range(start, periods=12, freq="D", tz="Europe/Paris")
        name = f"s{number:04d}" if number < 1000 else f"s{number}"
        level = 1e9 if name == LATE else 10.0
        values = level + np.sin(np.arange(12) + number)
        rows.append(pd.DataFrame({"item_id": name, "date": [t.isoformat() for t in stamps], "y": values}))
    path = tmp_path_factory.mktemp("zoned") / "zoned.csv"
    pd.concat(rows, ignore_index=True).to_csv(path, index=False)
    return path


def forecast(data: Path, output: Path) -> None:
    command = [
        sys.executable, "-m", "moirai_cli.cli", "forecast", str(data), "-H", "2", "-o", str(output), "--model", TINY,
        "--num-samples", "4", "--seed", "0", "--device", "cpu", "--context-length", "16", "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def test_time_zones_and_float64_values_do_not_depend_on_the_chunk(zoned_file, tmp_path):
    # The CSV output mixed `2024-01-06 00:00:00+01:00` (first chunk) and `2024-04-05` (later series), and a
    # Parquet output shifted the later series by an hour; a Parquet folder cast the later float64 forecasts to
    # the first chunk's float32 (a 1e9-level series became exactly 1000000000.0).
    forecast(zoned_file, tmp_path / "folder")
    table = pd.read_parquet(tmp_path / "folder")
    assert table["date"].dt.tz is None and (table["date"] == table["date"].dt.normalize()).all()  # local dates
    late = table[table["item_id"] == LATE]
    assert late["date"].tolist() == [pd.Timestamp("2024-04-06"), pd.Timestamp("2024-04-07")]
    assert table["mean"].dtype == np.float64
    values = late["mean"].to_numpy()
    assert np.all(np.abs(values - 1e9) < 100) and not np.all(values == values.astype(np.float32))  # not rounded to float32
