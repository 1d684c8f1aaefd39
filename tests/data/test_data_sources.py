"""DATA as a folder, glob, hive-partitioned dataset or URI (a local S3 server for object stores); -o as a Parquet dataset."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from moirai_cli.cli import app
from moirai_cli.data import DatasetWriter, TableWriter, is_grouped_by, iter_series_chunks, read_table, resolve_source
from moirai_cli.data.io import read_pieces
from moirai_cli.errors import InputError

@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


FAST = ["-H", "3", "--num-samples", "4", "--context-length", "32", "--seed", "3", "--device", "cpu", "-q"]


def shop_table(shops: int = 3, items: int = 2, length: int = 20) -> pd.DataFrame:
    """Daily sales of `items` items in each of `shops` shops (ids unique across shops)."""
    rng = np.random.default_rng(1)
    frames = [
        pd.DataFrame({
            "shop": f"shop{s}", "item_id": f"shop{s}-item{i}",
            "date": pd.date_range("2024-01-01", periods=length).astype(str),
            "y": rng.normal(50, 5, length).round(2),
        })
        for s in range(shops) for i in range(items)
    ]
    return pd.concat(frames, ignore_index=True)


def write_hive(table: pd.DataFrame, root, suffix: str = ".parquet") -> None:
    """One file per shop under shop=<name>/, without the partition column inside the file (as Hive writes)."""
    for shop, rows in table.groupby("shop"):
        folder = root / f"shop={shop}"
        folder.mkdir(parents=True)
        rows = rows.drop(columns="shop")
        (rows.to_parquet if suffix == ".parquet" else rows.to_csv)(folder / f"part-0{suffix}", index=False)


def forecast_frame_of(runner, *args: str) -> pd.DataFrame:
    result = runner.invoke(app, ["forecast", *args])
    assert result.exit_code == 0, result.stderr
    return pd.read_csv(io.StringIO(result.stdout)).sort_values(["item_id", "date"]).reset_index(drop=True)


def test_folder_glob_and_hive_partitions_read_as_one_table(tmp_path):
    table = shop_table()
    write_hive(table, tmp_path / "sales")
    (tmp_path / "sales" / "_SUCCESS").write_text("")  # bookkeeping files are not data
    source = resolve_source(tmp_path / "sales")
    assert [f.partitions for f in source.files] == [(("shop", "shop0"),), (("shop", "shop1"),), (("shop", "shop2"),)]
    whole = read_table(tmp_path / "sales")
    pd.testing.assert_frame_equal(whole[table.columns].astype({"y": float}), table, check_dtype=False)
    assert len(read_table(str(tmp_path / "sales" / "shop=shop1" / "*.parquet"))) == 40
    assert read_table(f"file://{tmp_path}/sales")["shop"].unique().tolist() == ["shop0", "shop1", "shop2"]
    assert is_grouped_by(tmp_path / "sales", "item_id")
    chunks = list(iter_series_chunks(tmp_path / "sales", chunk_size=5))
    assert [len(c.series) for c in chunks] == [2, 2, 2]  # one file at a time
    assert chunks[1].source == f"{tmp_path}/sales/shop=shop1/part-0.parquet"


def test_a_series_in_two_files_is_not_grouped_by_file(tmp_path):
    table = shop_table(shops=1, items=2)
    (tmp_path / "d").mkdir()
    table.iloc[:30].to_csv(tmp_path / "d" / "a.csv", index=False)  # item1 continues in b.csv
    table.iloc[30:].to_csv(tmp_path / "d" / "b.csv", index=False)
    assert not is_grouped_by(tmp_path / "d", "item_id")


@pytest.mark.parametrize("location, message", [
    ("missing", "missing: no such file"),
    ("empty_dir", "empty_dir: no .csv, .csv.gz, .parquet or .pq file is in this folder"),
    ("empty_dir/*.csv", "no .csv, .csv.gz, .parquet or .pq file matches this pattern"),
    ("nosuch://x/y", "unknown location type 'nosuch://'"),
])
def test_sources_that_hold_nothing_are_one_line_errors(tmp_path, monkeypatch, location, message):
    (tmp_path / "empty_dir").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        resolve_source(location)


def test_forecast_of_a_dataset_equals_the_forecast_of_one_file(runner, tiny_checkpoint, tmp_path):
    table = shop_table()
    write_hive(table, tmp_path / "sales", ".csv")
    table.drop(columns="shop").to_csv(tmp_path / "all.csv", index=False)
    model = ["--model", str(tiny_checkpoint), *FAST]
    from_dataset = forecast_frame_of(runner, str(tmp_path / "sales"), *model)
    pd.testing.assert_frame_equal(from_dataset, forecast_frame_of(runner, str(tmp_path / "all.csv"), *model))
    noted = runner.invoke(app, ["forecast", str(tmp_path / "sales"), *[a for a in model if a != "-q"]])
    assert noted.stderr.startswith(f"{tmp_path / 'sales'}: long layout")  # the input note names the dataset


def test_output_folder_is_a_parquet_dataset_replaced_whole(runner, tiny_checkpoint, tmp_path):
    table = shop_table()
    table.to_csv(tmp_path / "in.csv", index=False)
    args = ["forecast", str(tmp_path / "in.csv"), "--model", str(tiny_checkpoint), *FAST]
    out = tmp_path / "forecasts"
    assert runner.invoke(app, [*args, "-o", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet"]
    expected = forecast_frame_of(runner, *args[1:])
    pd.testing.assert_frame_equal(
        read_table(out).assign(date=lambda f: f["date"].astype(str)).sort_values(["item_id", "date"]).reset_index(drop=True),
        expected, check_dtype=False,
    )
    assert runner.invoke(app, [*args, "-o", str(out) + "/"]).exit_code == 0  # rerun: parts replaced, nothing left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecasts", "in.csv"]
    (out / "notes.txt").write_text("mine")
    refused = runner.invoke(app, [*args, "-o", str(out)])
    assert refused.exit_code == 2 and "folder holds other files (notes.txt)" in refused.stderr


def test_dataset_writer_rolls_parts_and_leaves_nothing_on_failure(tmp_path):
    frame = pd.DataFrame({"a": np.arange(5)})
    with DatasetWriter(tmp_path / "ds", rows_per_part=2) as writer:
        for start in range(0, 5, 2):
            writer.write(frame.iloc[start : start + 2])
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert read_table(tmp_path / "ds")["a"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        with TableWriter(tmp_path / "other") as writer:
            writer.write(frame)
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_object_store_read_and_write_against_a_local_s3_server(runner, tiny_checkpoint, tmp_path, s3_bucket):
    import pyarrow.fs as pafs

    table = shop_table()
    write_hive(table, tmp_path / "sales")
    s3 = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")[0]
    pafs.copy_files(str(tmp_path / "sales"), f"{s3_bucket}/sales", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    source = resolve_source(f"s3://{s3_bucket}/sales/")
    assert [f.label for f in source.files][0] == f"s3://{s3_bucket}/sales/shop=shop0/part-0.parquet"
    model = ["--model", str(tiny_checkpoint), *FAST]
    local = forecast_frame_of(runner, str(tmp_path / "sales"), *model)
    pd.testing.assert_frame_equal(forecast_frame_of(runner, f"s3://{s3_bucket}/sales", *model), local)

    written = runner.invoke(app, ["forecast", f"s3://{s3_bucket}/sales", *model, "-o", f"s3://{s3_bucket}/out/"])
    assert written.exit_code == 0, written.stderr
    names = [i.path for i in s3.get_file_info(pafs.FileSelector(s3_bucket, recursive=True)) if i.type == pafs.FileType.File]
    assert sorted(n for n in names if "/out/" in n) == [f"{s3_bucket}/out/part-00000.parquet"]
    assert not [n for n in names if ".tmp" in n]
    back = read_table(f"s3://{s3_bucket}/out").assign(date=lambda f: f["date"].astype(str))
    pd.testing.assert_frame_equal(back.sort_values(["item_id", "date"]).reset_index(drop=True), local, check_dtype=False)

    single = runner.invoke(app, ["forecast", f"s3://{s3_bucket}/sales/shop=shop1/part-0.parquet", *model, "-o", f"s3://{s3_bucket}/one.csv"])
    assert single.exit_code == 0, single.stderr
    with s3.open_input_stream(f"{s3_bucket}/one.csv") as stream:
        one = pd.read_csv(io.BytesIO(stream.read()))
    assert sorted(one["item_id"].unique()) == ["shop1-item0", "shop1-item1"]
    missing = runner.invoke(app, ["forecast", f"s3://{s3_bucket}/nothing/", *model])
    assert missing.exit_code == 2 and f"s3://{s3_bucket}/nothing/: no such file" in missing.stderr


def test_csv_files_on_the_object_store_read_like_local_ones(tmp_path, s3_bucket):
    import gzip

    import pyarrow.fs as pafs

    table = shop_table()
    (tmp_path / "csv").mkdir()
    table.to_csv(tmp_path / "csv" / "a.csv", index=False)  # commas
    with gzip.open(tmp_path / "csv" / "b.csv.gz", "wt") as handle:  # semicolons, compressed
        table.to_csv(handle, index=False, sep=";")
    s3 = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")[0]
    pafs.copy_files(str(tmp_path / "csv"), f"{s3_bucket}/csv", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    for name in ("a.csv", "b.csv.gz"):
        local = read_table(tmp_path / "csv" / name)
        pd.testing.assert_frame_equal(read_table(f"s3://{s3_bucket}/csv/{name}"), local)
        streamed = pd.concat(read_pieces(f"s3://{s3_bucket}/csv/{name}", 7))
        pd.testing.assert_frame_equal(streamed, local)
    assert read_table(tmp_path / "csv" / "b.csv.gz").columns.tolist() == table.columns.tolist()


def test_a_named_pipe_or_device_is_not_data(tmp_path):
    # A FIFO or /dev/null said "cannot list this location: ... Not a directory".
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(InputError, match=r"pipe\.csv: not a regular file \(a named pipe\); .* DATA '-'"):
        resolve_source(tmp_path / "pipe.csv")
    with pytest.raises(InputError, match=r"^/dev/null: not a regular file \(a device\)"):
        resolve_source("/dev/null")


def test_a_closed_stdin_is_one_line(monkeypatch):
    # "AttributeError: 'NoneType' object has no attribute 'read'"
    monkeypatch.setattr("sys.stdin", None)
    with pytest.raises(InputError, match=r"^<stdin>: stdin is closed; pipe the CSV into the command"):
        read_table("-")
