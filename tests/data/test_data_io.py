"""Reading tables and writing them atomically."""

from __future__ import annotations

import gzip
import io
import json

import pandas as pd
import pytest

from moirai_cli.data import TableWriter, check_output_path, output_format, read_table, write_table
from moirai_cli.errors import InputError

FRAME = pd.DataFrame(
    {"item_id": ["007", "008"], "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02"]), "y": [1.5, None]}
)


def test_read_csv_keeps_ids_as_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("item_id,timestamp,y\n007,2020-01-01,1\n")
    assert read_table(path)["item_id"].tolist() == ["007"]


def test_read_csv_gz_and_parquet(tmp_path):
    gz = tmp_path / "d.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write("a,b\n1,2\n")
    assert read_table(gz).shape == (1, 2)
    pq = tmp_path / "d.parquet"
    FRAME.to_parquet(pq)
    assert read_table(pq)["y"].dtype == float


def test_read_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a,b\n1,2\n"))
    assert read_table("-").columns.tolist() == ["a", "b"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "missing.csv: no such file"),
        ("empty.csv", "", "empty.csv: file is empty"),
        ("blank.csv", "\n\n", "blank.csv: file is empty"),
        ("bad.parquet", "not parquet", "bad.parquet: cannot read parquet file"),
        ("data.xlsx", "x", "cannot read this file type"),
        ("bad.csv.gz", "not gzip", "bad.csv.gz: cannot read"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_table(path)


def test_folder_without_data_files_is_refused(tmp_path):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "folder.csv" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="folder.csv: no .csv, .csv.gz, .parquet or .pq file is in this folder"):
        read_table(tmp_path / "folder.csv")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".json", ".jsonl"])
def test_round_trip_by_extension(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    write_table(FRAME, path)
    if suffix == ".json":
        records = json.loads(path.read_text())
        assert [r["item_id"] for r in records] == ["007", "008"] and records[1]["y"] is None
    elif suffix == ".jsonl":
        assert [json.loads(line)["item_id"] for line in path.read_text().splitlines()] == ["007", "008"]
    else:
        back = read_table(path)
        assert back["item_id"].tolist() == ["007", "008"]
        assert list(back.columns) == list(FRAME.columns)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json", ".jsonl"])
def test_chunks_append_and_empty_output_is_valid(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with TableWriter(path) as writer:
        writer.write(FRAME.iloc[:1])
        writer.write(FRAME.iloc[:0])
        writer.write(FRAME.iloc[1:])
    if suffix == ".json":
        assert len(json.loads(path.read_text())) == 2
    elif suffix == ".jsonl":
        assert len(path.read_text().splitlines()) == 2
    else:
        assert read_table(path)["item_id"].tolist() == ["007", "008"]
    empty = tmp_path / "empty.json"
    with TableWriter(empty):
        pass
    assert json.loads(empty.read_text()) == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_failure_mid_write_leaves_nothing(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with pytest.raises(RuntimeError):
        with TableWriter(path) as writer:
            writer.write(FRAME)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_file_intact(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with TableWriter(path) as writer:
            writer.write(FRAME)
            raise KeyboardInterrupt
    assert path.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_stdout_is_csv(capsys):
    write_table(FRAME, "-")
    assert capsys.readouterr().out.splitlines()[0] == "item_id,timestamp,y"


def test_output_checks(tmp_path):
    assert output_format("x.PARQUET") == "parquet"
    with pytest.raises(InputError, match="cannot write this file type"):
        check_output_path(tmp_path / "x.txt")
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "x.csv")
