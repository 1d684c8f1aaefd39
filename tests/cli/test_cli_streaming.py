"""`moirai forecast` reads a long file grouped by id in chunks, with the same output as a whole read."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from moirai_cli.engines import local as engine
from moirai_cli.cli import app

FAST = ["--num-samples", "4", "--context-length", "32", "--seed", "3", "--device", "cpu", "-q"]


def long_table(n_series: int = 5, length: int = 30) -> pd.DataFrame:
    """Daily series s0..s{n-1} grouped by id; s1 has no observed value (skipped), s3 has a gap."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "item_id": np.repeat([f"s{i}" for i in range(n_series)], length),
            "timestamp": np.tile(pd.date_range("2021-01-01", periods=length, freq="D").astype(str), n_series),
            "target": rng.normal(10, 2, n_series * length).round(3),
        }
    )
    table.loc[table["item_id"] == "s1", "target"] = np.nan
    return table.drop(index=3 * length + 7)


@pytest.fixture
def reads(monkeypatch) -> dict[str, list]:
    """Record the chunks the streaming reader yields and the whole-file loads, with small chunks and reads."""
    monkeypatch.setattr(engine, "SERIES_PER_CHUNK", 2)
    monkeypatch.setattr(engine, "ROWS_PER_READ", 7)
    seen: dict[str, list] = {"chunks": [], "whole": []}
    stream, load = engine.iter_series_chunks, engine.load_dataset

    def recording_stream(*args, **kwargs):
        for chunk in stream(*args, **kwargs):
            seen["chunks"].append([s.item_id for s in chunk.series] + [f"skipped {i}" for i in chunk.skipped])
            yield chunk

    def recording_load(*args, **kwargs):
        seen["whole"].append(args[0])
        return load(*args, **kwargs)

    monkeypatch.setattr(engine, "iter_series_chunks", recording_stream)
    monkeypatch.setattr(engine, "load_dataset", recording_load)
    return seen


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_grouped_long_file_is_streamed_with_the_same_output(runner, tiny_checkpoint, tmp_path, reads, suffix):
    table = long_table()
    path = tmp_path / f"data{suffix}"
    (table.to_csv if suffix == ".csv" else table.to_parquet)(path, index=False)
    args = ["-H", "3", "--model", str(tiny_checkpoint), *FAST]

    streamed = runner.invoke(app, ["forecast", str(path), *args])
    assert streamed.exit_code == 0, streamed.stderr
    assert reads["whole"] == [] and reads["chunks"] == [["s0", "skipped s1"], ["s2", "s3"], ["s4"]]

    whole = runner.invoke(app, ["forecast", "-", *args], input=table.to_csv(index=False))  # stdin is read whole
    assert whole.exit_code == 0, whole.stderr
    assert reads["whole"] == ["-"]
    assert streamed.stdout == whole.stdout
    assert streamed.stderr == whole.stderr == "warning: skipped series 's1': no observed target value\n"
    frame = pd.read_csv(io.StringIO(streamed.stdout))
    assert frame["item_id"].unique().tolist() == ["s0", "s2", "s3", "s4"] and len(frame) == 4 * 3


def test_ungrouped_or_wide_files_are_read_whole(runner, fake_model, tmp_path, reads):
    table = long_table()
    shuffled = table.sort_values(["timestamp", "item_id"])
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    result = runner.invoke(app, ["forecast", str(tmp_path / "shuffled.csv"), "-H", "2"])
    assert result.exit_code == 0, result.stderr
    assert "rows are not grouped by 'item_id'; reading the whole file" in result.stderr
    assert reads["chunks"] == [] and len(reads["whole"]) == 1

    wide = table.pivot(index="timestamp", columns="item_id", values="target").reset_index()
    wide.to_csv(tmp_path / "wide.csv", index=False)
    result = runner.invoke(app, ["forecast", str(tmp_path / "wide.csv"), "-H", "2", "-q"])
    assert result.exit_code == 0, result.stderr
    assert reads["chunks"] == [] and len(reads["whole"]) == 2
    assert [len(c["target"]) for c in fake_model.calls] == [2, 2, 2, 2]  # two batches of 2 series per run


def test_bad_row_in_a_later_chunk_leaves_no_output(runner, fake_model, tmp_path, reads, one_line_error):
    table = long_table()
    table["target"] = table["target"].astype(object)
    table.iloc[-2, 2] = "oops"
    table.to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "o.csv"
    result = runner.invoke(app, ["forecast", str(tmp_path / "d.csv"), "-H", "2", "-o", str(out), "-q"])
    one_line_error(result, 2, "column 'target'", "'oops' is not a number")
    assert len(fake_model.calls) == 1  # the first batch was forecast before the bad row was read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_command_line_gives_arrow_the_system_allocator():
    """Arrow's default allocator kept more memory in long streamed runs; the CLI picks the C library's unless told."""
    probe = "import moirai_cli.cli, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    chosen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "system"
    env["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"  # the user's choice wins (pyarrow falls back if not built in)
    kept = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert kept.stdout.strip() != "system"
