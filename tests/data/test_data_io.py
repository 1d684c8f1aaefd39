"""Reading tables and writing them atomically."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import signal
import stat
import tempfile

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import TableWriter, check_distinct_paths, check_output_path, output_format, read_table, write_table
from moirai_cli.data.io import current_umask, read_pieces
from moirai_cli.errors import InputError, MoiraiError
from moirai_cli.runtime import STOP_SIGNALS, StopSignal, stop_cleanly_on_signals

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


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".jsonl"])
def test_new_output_gets_the_permissions_of_a_normally_created_file(tmp_path, umask, mask, expected, suffix):
    umask(mask)
    path = tmp_path / f"out{suffix}"
    write_table(FRAME, path)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under the same umask
    assert stat.S_IMODE(path.stat().st_mode) == expected == stat.S_IMODE(plain.stat().st_mode)


def test_overwritten_output_keeps_its_permissions(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    path.chmod(0o640)
    write_table(FRAME, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text().startswith("item_id")


def test_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # still in place


def test_a_stop_signal_while_the_temporary_file_is_created_leaves_nothing(tmp_path, monkeypatch):
    """SIGTERM at the worst moment (the file exists, its clean-up is not armed yet) waits, then cleans up."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp_then_signal(*args, **kwargs):
        created = real_mkstemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler right after this call returns
        return created

    saved = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_signal)
    try:
        stop_cleanly_on_signals()  # the command line's handlers
        with pytest.raises(StopSignal) as stopped:
            write_table(FRAME, tmp_path / "out.csv")
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
    assert stopped.value.signum == signal.SIGTERM and list(tmp_path.iterdir()) == []
@pytest.mark.parametrize("separator", [";", "\t"])
def test_semicolon_and_tab_separated_files_are_read(tmp_path, separator):
    # A ';'-separated file was one column, and the error said "no timestamp column found".
    path = tmp_path / "d.csv"
    path.write_text(f"date{separator}y\n2020-01-01{separator}1\n2020-01-02{separator}2\n")
    assert read_table(path).columns.tolist() == ["date", "y"]
    assert next(read_pieces(path, 1)).columns.tolist() == ["date", "y"]


def test_a_folder_without_data_files_says_so(tmp_path):
    # A folder used to be "cannot read this file type"; now it is a dataset, and an empty one says what is missing.
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"no \.csv, \.csv\.gz, \.parquet or \.pq file is in this folder"):
        read_table(tmp_path)


def test_outputs_may_not_overwrite_inputs_or_each_other(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("x\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "in.csv")
    with pytest.raises(InputError, match=r"\./in\.csv: --output would overwrite the input file \(DATA\)"):
        check_distinct_paths({"DATA": "in.csv"}, {"--output": "./in.csv"})
    with pytest.raises(InputError, match="--plot would overwrite the input file"):
        check_distinct_paths({"DATA": "link.csv"}, {"--output": "-", "--plot": str(tmp_path / "in.csv")})
    with pytest.raises(InputError, match="--output and --samples-output name the same file"):
        check_distinct_paths({"DATA": "in.csv"}, {"--output": "o.csv", "--samples-output": str(tmp_path / "o.csv")})
    with pytest.raises(InputError, match="--output and --samples-output both write to stdout"):
        check_distinct_paths({"DATA": "-"}, {"--output": "-", "--samples-output": "-"})
    check_distinct_paths({"DATA": "-", "--future": None}, {"--output": "-", "--samples-output": "s.csv", "--plot": None})


def test_parquet_chunks_widen_float32_columns_for_float64_values(tmp_path):
    path = tmp_path / "out.parquet"
    with TableWriter(path) as writer:
        writer.write(pd.DataFrame({"id": ["a"], "mean": np.array([1.5], np.float32)}))
        writer.write(pd.DataFrame({"id": ["b"], "mean": np.array([1e12 + 0.5, 1e300])[:1]}))
        writer.write(pd.DataFrame({"id": ["c"], "mean": np.array([1e300])}))
        writer.write(pd.DataFrame({"id": ["d"], "mean": np.array([2.5], np.float32)}))
    back = pd.read_parquet(path)
    assert back["mean"].tolist() == [1.5, 1e12 + 0.5, 1e300, 2.5] and back["mean"].dtype == np.float64
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"out{suffix}"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    monkeypatch.setattr("moirai_cli.data.io.json_records", full)
    monkeypatch.setattr("pyarrow.parquet.ParquetWriter.write_table", full)
    with pytest.raises(MoiraiError) as err:
        write_table(FRAME, path)
    assert str(err.value) == f"{path}: cannot write: No space left on device" and err.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


# --- path identity: no output may be an input, lie in an input folder, or be a folder holding inputs ---


@pytest.fixture
def stock_files(tmp_path, monkeypatch):
    """A folder `data/` of two CSV files and one of Spark-style part files, the working directory at tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("MSFT", "AAPL"):
        (tmp_path / "data" / f"{name}.csv").write_text("symbol,date,price\nX,2020-01-01,1\n")
    (tmp_path / "parts").mkdir()
    for part in range(2):
        FRAME.to_parquet(tmp_path / "parts" / f"part-0000{part}.parquet")
    return tmp_path


@pytest.mark.parametrize(
    "data, output, message",
    [
        # `moirai forecast 'data/*.csv' -o data/MSFT.csv` replaced a 124-line input with the forecast.
        ("data/*.csv", "data/MSFT.csv", r"data/MSFT\.csv: --output would overwrite the input file \(DATA\)"),
        # A folder of part files written over by a dataset output of the same folder (every part deleted).
        ("parts/", "parts/", r"--output is the input folder \(DATA\)"),
        ("parts", "parts", r"--output is the input folder \(DATA\)"),
        # `moirai evaluate parts/part-00000.parquet -o parts` replaced the input with metrics.
        ("parts/part-00000.parquet", "parts", r"parts: --output is a folder that holds input files of DATA \(part-00000\.parquet\)"),
        # file:// spellings of the same file, on either side.
        ("data/MSFT.csv", "file://{root}/data/MSFT.csv", "--output would overwrite the input file"),
        ("file://{root}/data/MSFT.csv", "data/MSFT.csv", "--output would overwrite the input file"),
        ("file://{root}/data/", "data/new.csv", r"--output is inside the input folder \(DATA\)"),
        # An output in an input folder, or matching an input glob, would be read by the next run.
        ("data", "data/forecast.parquet", r"data/forecast\.parquet: --output is inside the input folder \(DATA\)"),
        ("data/*.csv", "data/new.csv", r"--output matches the input pattern \(DATA\)"),
        ("data/M*.csv", "data/../data/MSFT.csv", "--output would overwrite the input file"),
        ("data/MSFT.csv", ".", r"--output is a folder that holds input files of DATA"),
    ],
)
def test_an_output_that_is_or_holds_an_input_is_refused(stock_files, data, output, message):
    root = str(stock_files)
    with pytest.raises(InputError, match=message):
        check_distinct_paths({"DATA": data.format(root=root)}, {"--output": output.format(root=root)})


def test_outputs_beside_the_inputs_are_allowed(stock_files):
    check_distinct_paths({"DATA": "data/*.csv"}, {"--output": "data/forecast.parquet", "--plot": "p.png"})
    check_distinct_paths({"DATA": "data/MSFT.csv"}, {"--output": "data/forecast.csv"})
    check_distinct_paths({"DATA": "parts/"}, {"--output": "out/", "--samples-output": "samples/"})
    check_distinct_paths({"DATA": "missing/*.csv"}, {"--output": "o.csv"})  # reading reports what is missing


def test_links_to_an_input_are_the_input(stock_files):
    os.link(stock_files / "data" / "MSFT.csv", stock_files / "hard.csv")
    (stock_files / "soft").symlink_to(stock_files / "data")
    with pytest.raises(InputError, match=r"hard\.csv: --output would overwrite the input file \(DATA\)"):
        check_distinct_paths({"DATA": "data/"}, {"--output": "hard.csv"})
    with pytest.raises(InputError, match=r"--plot would overwrite the input file \(--future\)"):
        check_distinct_paths({"DATA": "-", "--future": "hard.csv"}, {"--plot": "data/MSFT.csv"})
    with pytest.raises(InputError, match="--output is inside the input folder"):
        check_distinct_paths({"DATA": "soft"}, {"--output": "data/x.csv"})
    with pytest.raises(InputError, match="--output is inside the input folder"):
        check_distinct_paths({"DATA": "data"}, {"--output": "soft/x.csv"})


def test_outputs_may_not_nest_in_each_other(stock_files):
    with pytest.raises(InputError, match=r"--samples-output is inside the folder of --output; give each its own path"):
        check_distinct_paths({"DATA": "-"}, {"--output": "out/", "--samples-output": "out/s.csv"})
    with pytest.raises(InputError, match="--output and --samples-output name the same file"):
        check_distinct_paths({"DATA": "-"}, {"--output": "o.csv", "--samples-output": f"file://{stock_files}/o.csv"})


@pytest.mark.parametrize(
    "data, output, message",
    [
        ("s3://bucket/data/x.csv", "S3://bucket//data/x.csv", "would overwrite the input file"),
        ("s3://bucket/data/", "s3://bucket/data/forecast.csv", "is inside the input folder"),
        ("s3://bucket/data/part-0.parquet", "s3://bucket/data", "is a folder that holds input files"),
        ("s3://bucket/data/*.csv", "s3://bucket/data/new.csv", "matches the input pattern"),
    ],
)
def test_remote_locations_are_compared_as_normalised_uris(data, output, message):
    with pytest.raises(InputError, match=message):
        check_distinct_paths({"DATA": data}, {"--output": output})
    check_distinct_paths({"DATA": data}, {"--output": "s3://bucket/elsewhere/o.csv"})


# --- one writer layer: float64 values and timestamps (resolution, time zone) round-trip exactly in every format ---

WRITE_FORMATS = [".csv", ".csv.gz", ".parquet", "folder/", ".json", ".jsonl"]


def read_back(path, suffix: str) -> pd.DataFrame:
    """A written table as text cells (JSON: the values as parsed by Python's json), for exact comparison."""
    if suffix in (".json", ".jsonl"):
        text = path.read_text()
        records = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
        return pd.DataFrame(records, dtype=object)
    if suffix in (".parquet", "folder/"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str)


def as_floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def as_stamps(values) -> list[pd.Timestamp]:
    return [pd.Timestamp(v) for v in values]


@pytest.mark.parametrize("suffix", WRITE_FORMATS)
def test_float64_values_round_trip_exactly_after_float32_chunks(tmp_path, suffix):
    # A dataset folder cast float64 forecasts after a float32 chunk to float32 (a 1e9-level series became
    # exactly 1000000000.0); JSON kept 10 decimals (1e-13 was 0.0, 5e-9 kept two digits).
    rng = np.random.default_rng(0)
    wide = np.r_[1000000005.84, 1e-13, 5.123456789e-9, 1e300, -2.5e-300, rng.normal(size=20) * 10.0 ** rng.integers(-15, 15, 20)]
    chunks = [
        pd.DataFrame({"item_id": ["a", "a"], "mean": np.array([0.5, np.nan], np.float32)}),
        pd.DataFrame({"item_id": ["b"] * len(wide), "mean": wide}),
        pd.DataFrame({"item_id": ["c"], "mean": np.array([0.25], np.float32)}),
    ]
    path = tmp_path / f"out{suffix}"
    with TableWriter(path) as writer:
        for chunk in chunks:
            writer.write(chunk)
    back = read_back(path, suffix)
    values = as_floats(back["mean"])
    expected = np.concatenate([chunk["mean"].to_numpy(np.float64) for chunk in chunks])
    np.testing.assert_array_equal(values, expected)  # bit for bit, NaN where missing
    assert back["item_id"].tolist() == ["a", "a", *["b"] * len(wide), "c"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("suffix", WRITE_FORMATS)
@pytest.mark.parametrize("zone", [None, "Europe/Paris"])
def test_timestamps_keep_their_resolution_and_time_zone(tmp_path, suffix, zone):
    # JSON cut timestamps to milliseconds: three 100-microsecond steps got one timestamp.
    stamps = pd.DatetimeIndex(
        ["2024-01-01 00:00:00", "2024-01-01 00:00:00.0001", "2024-01-01 00:00:00.0002", "2024-07-01 12:00:00.000000001"]
    ).as_unit("ns")
    if zone:
        stamps = stamps.tz_localize(zone)
    path = tmp_path / f"out{suffix}"
    write_table(pd.DataFrame({"timestamp": stamps, "y": [1.0, 2.0, 3.0, 4.0]}), path)
    back = read_back(path, suffix)["timestamp"]
    parsed = list(pd.DatetimeIndex(back)) if suffix in (".parquet", "folder/") else as_stamps(back)
    assert [t.value for t in parsed] == [t.value for t in stamps]  # the same instants, to the nanosecond
    assert [t.utcoffset() for t in parsed] == [t.utcoffset() for t in stamps]  # None, or winter +01:00, summer +02:00


def test_a_dataset_widens_its_earlier_parts_for_a_later_float64_chunk(tmp_path):
    # Later parts were cast to the first part's float32: a 1e9-level series read back as 1000000000.0.
    from moirai_cli.data import DatasetWriter

    chunks = [pd.DataFrame({"item_id": [name] * 2, "mean": np.array([0.5, 1.5], np.float32)}) for name in "abc"]
    chunks.append(pd.DataFrame({"item_id": ["d", "d"], "mean": np.array([1000000005.84, 1e-13])}))
    chunks.append(pd.DataFrame({"item_id": ["e"], "mean": np.array([2.5], np.float32)}))
    with DatasetWriter(tmp_path / "out", rows_per_part=3) as writer:
        for chunk in chunks:
            writer.write(chunk)
    parts = sorted((tmp_path / "out").iterdir())
    assert len(parts) > 2 and all(pd.read_parquet(part)["mean"].dtype == np.float64 for part in parts)
    back = pd.read_parquet(tmp_path / "out")
    assert back["mean"].tolist() == [0.5, 1.5] * 3 + [1000000005.84, 1e-13, 2.5]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_binary_parquet_ids_are_read_as_text(tmp_path):
    # Binary Parquet ids were written as "b'MSFT'".
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moirai_cli.data import iter_series_chunks, load_dataset

    days = pd.date_range("2024-01-01", periods=6, freq="D")
    ids = pa.array([b"MSFT"] * 6 + ["Zürich".encode()] * 6, pa.binary())
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ids, "date": pa.array(list(days) * 2), "y": pa.array(np.arange(12.0))}), path)
    assert read_table(path)["id"].tolist() == ["MSFT"] * 6 + ["Zürich"] * 6
    assert [r.item_id for r in load_dataset(path).series] == ["MSFT", "Zürich"]
    assert [r.item_id for chunk in iter_series_chunks(path, chunk_size=1, rows_per_read=4) for r in chunk.series] == ["MSFT", "Zürich"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": pa.array([b"\xff\xfe"] * 6, pa.binary()), "date": pa.array(list(days)), "y": pa.array(np.arange(6.0))}), bad)
    with pytest.raises(InputError, match=r"bad\.parquet: column 'id', row 1: series id b'\\xff\\xfe' is not UTF-8 text"):
        load_dataset(bad)


# --- a run's outputs published together, or none ---


def test_outputs_are_published_together_only_when_every_one_succeeded(tmp_path):
    # `evaluate -o e.csv --forecasts-output <unwritable>` replaced the old e.csv, then failed; so did a crashing --plot.
    from moirai_cli.data.io import atomic_path, publish_together

    old = {name: f"old {name}\n" for name in ("e.csv", "f.parquet", "plot.png")}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "windows").mkdir()
    with pytest.raises(RuntimeError, match="the plot failed"):
        with publish_together():
            write_table(FRAME, tmp_path / "e.csv")  # closed and complete, but not published yet
            write_table(FRAME, tmp_path / "f.parquet")
            write_table(FRAME, tmp_path / "windows")  # a dataset folder
            with atomic_path(tmp_path / "plot.png") as tmp:
                tmp.write_bytes(b"png")
            assert {name: (tmp_path / name).read_text() for name in old} == old
            raise RuntimeError("the plot failed")
    assert {name: (tmp_path / name).read_text() for name in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "f.parquet", "plot.png", "windows"]
    assert list((tmp_path / "windows").iterdir()) == []

    with publish_together():
        write_table(FRAME, tmp_path / "e.csv")
        with pytest.raises(InputError, match="does not exist"):  # an output that cannot be written: the run stops
            write_table(FRAME, tmp_path / "missing" / "f.csv")
        write_table(FRAME, tmp_path / "windows")
        with atomic_path(tmp_path / "plot.png") as tmp:
            tmp.write_bytes(b"png")
    assert read_table(tmp_path / "e.csv")["item_id"].tolist() == ["007", "008"]
    assert read_table(tmp_path / "windows")["item_id"].tolist() == ["007", "008"]
    assert (tmp_path / "plot.png").read_bytes() == b"png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "f.parquet", "plot.png", "windows"]


def test_a_stop_signal_before_publishing_removes_every_staged_file(tmp_path):
    from moirai_cli.data.io import publish_together

    with pytest.raises(StopSignal):
        with publish_together():
            write_table(FRAME, tmp_path / "a.csv")
            with TableWriter(tmp_path / "b.jsonl") as writer:
                writer.write(FRAME)
            raise StopSignal(signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []


def test_staged_uploads_wait_for_the_whole_run(s3_bucket, tmp_path):
    import pyarrow.fs as pafs

    from moirai_cli.data.io import publish_together

    uri = f"s3://{s3_bucket}/f.csv"
    with pytest.raises(RuntimeError):
        with publish_together():
            write_table(FRAME, uri)
            write_table(FRAME, tmp_path / "local.csv")
            raise RuntimeError("a later output failed")
    fs, path = pafs.FileSystem.from_uri(uri)
    assert fs.get_file_info(path).type == pafs.FileType.NotFound and list(tmp_path.iterdir()) == []
    with publish_together():
        write_table(FRAME, uri)
        assert fs.get_file_info(path).type == pafs.FileType.NotFound
    assert read_table(uri)["item_id"].tolist() == ["007", "008"]


# --- temporary files of killed runs ---

HOLDER = """
import sys, time
from pathlib import Path
import pandas as pd
from moirai_cli.data import TableWriter
with TableWriter(sys.argv[1]) as writer:
    writer.write(pd.DataFrame({"x": [1.0, 2.0]}))
    print("writing", flush=True)
    time.sleep(600)
"""


def start_writer(target) -> "subprocess.Popen":
    """A real process writing `target`, paused after its first chunk (its temporary file exists)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "writing\n"
    return process


@pytest.mark.parametrize("name", ["out.csv", "out.parquet", "folder"])
def test_a_later_run_removes_what_a_killed_run_left_and_keeps_a_live_runs_files(tmp_path, name):
    # `kill -9` left `.out.csv.XXXX.tmp` (or a dataset's hidden folder) that no later run removed.
    target = tmp_path / name
    killed = start_writer(target)
    left = sorted(p.name for p in tmp_path.iterdir())
    killed.kill()
    killed.wait()
    live = start_writer(target)
    try:
        running = sorted(set(p.name for p in tmp_path.iterdir()) - set(left))
        assert len(left) == 1 and left[0].startswith(f".{name}.") and len(running) == 1
        write_table(FRAME, target)  # a later run writing the same output
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, *running])  # the killed run's file is gone
    finally:
        live.kill()
        live.wait()
