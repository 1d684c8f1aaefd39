"""Reading a long file in chunks of series (memory flat in the number of series)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import is_grouped_by, iter_series_chunks, load_dataset, peek_layout, rebatch
from moirai_cli.data.frames import SeenIds
from moirai_cli.errors import InputError


def long_table(n_series: int = 5, length: int = 4) -> pd.DataFrame:
    """Series s0..s{n-1}, grouped by id, daily, with the value `series * 100 + step`."""
    return pd.DataFrame(
        {
            "item_id": np.repeat([f"s{i}" for i in range(n_series)], length),
            "timestamp": np.tile(pd.date_range("2021-01-01", periods=length, freq="D").astype(str), n_series),
            "target": (np.repeat(np.arange(n_series) * 100, length) + np.tile(np.arange(length), n_series)).astype(
                float
            ),
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_match_whole_file(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    table = long_table()
    if suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path)
    chunks = list(iter_series_chunks(path, chunk_size=2, rows_per_read=3))
    assert [[s.item_id for s in c.series] for c in chunks] == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    whole = load_dataset(path)
    flat = [s for c in chunks for s in c.series]
    for a, b in zip(flat, whole.series, strict=True):
        np.testing.assert_array_equal(a.target, b.target)
        assert a.timestamps.equals(b.timestamps)
    assert {c.freq for c in chunks} == {"D"}


def test_unsorted_file_and_late_errors_name_the_row(tmp_path):
    table = long_table(3)
    path = tmp_path / "d.csv"
    pd.concat([table, table.iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(InputError, match="series 's0' reappears at row 13; sort the file by id"):
        list(iter_series_chunks(path, chunk_size=1, rows_per_read=2))
    table["target"] = table["target"].astype(object)
    table.loc[10, "target"] = "oops"
    table.to_csv(path, index=False)
    with pytest.raises(InputError, match="column 'target', row 11: 'oops' is not a number"):
        list(iter_series_chunks(path, chunk_size=1, rows_per_read=2))


def test_skipped_series_and_missing_file(tmp_path):
    table = long_table(2)
    table.loc[table["item_id"] == "s0", "target"] = np.nan
    path = tmp_path / "d.csv"
    table.to_csv(path, index=False)
    chunks = list(iter_series_chunks(path, chunk_size=1))
    assert chunks[0].series == [] and chunks[0].skipped == ["s0"] and chunks[1].series[0].item_id == "s1"
    with pytest.raises(InputError, match="no such file"):
        list(iter_series_chunks(tmp_path / "nope.csv"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_is_grouped_by_reads_across_pieces(tmp_path, suffix):
    def write(table: pd.DataFrame) -> Path:
        """Save the table in the format under test."""
        path = tmp_path / f"d{suffix}"
        (table.to_csv if suffix == ".csv" else table.to_parquet)(path, index=False)
        return path

    table = long_table(3)
    assert is_grouped_by(write(table), "item_id", rows_per_read=5)  # blocks straddle the pieces
    shuffled = table.iloc[[0, 4, 1, 2, 3, *range(5, 12)]]  # s1's first row comes before s0's last ones
    assert not is_grouped_by(write(shuffled), "item_id", rows_per_read=5)


def test_seen_ids_finds_repeats_of_any_id_type():
    seen = SeenIds()
    assert seen.first_repeat(np.array(["a", "b"], dtype=object)) is None  # nothing met yet
    seen.add(np.array(["a", "b"], dtype=object))
    seen.add(np.array(["c"], dtype=object))
    assert seen.first_repeat(np.array(["x", "y", "c", "a"], dtype=object)) == 2
    assert seen.first_repeat(np.array(["ab", "ba", "d"], dtype=object)) is None
    numbers = SeenIds()
    numbers.add(np.arange(0, 100_000, 2))
    assert numbers.first_repeat(np.array([1, 3, 99_999, 50_000])) == 3
    assert numbers.first_repeat(np.arange(1, 100_000, 2)) is None


def test_peek_layout_reads_the_first_rows(tmp_path):
    path = tmp_path / "d.csv"
    long_table().to_csv(path, index=False)
    layout = peek_layout(path, rows=3)
    assert (layout.kind, layout.id_column, layout.targets) == ("long", "item_id", ("target",))
    wide = tmp_path / "w.csv"
    pd.DataFrame({"date": ["2021-01-01", "2021-01-02"], "a": [1, 2], "b": [3, 4]}).to_csv(wide, index=False)
    assert peek_layout(wide).kind == "wide"
    (tmp_path / "h.csv").write_text("item_id,timestamp,target\n")
    with pytest.raises(InputError, match="no data rows"):
        peek_layout(tmp_path / "h.csv")


def test_rebatch_cuts_batches_by_series_whatever_the_chunks():
    table = long_table(5)
    table.loc[table["item_id"] == "s1", "target"] = np.nan  # skipped
    whole = load_dataset(table)
    chunks = [load_dataset(table[table["item_id"].isin(ids)]) for ids in (["s0"], ["s1", "s2", "s3"], ["s4"])]
    for source in ([whole], chunks):
        batches = list(rebatch(source, 2))
        assert [[s.item_id for s in b.series] for b in batches] == [["s0", "s2"], ["s3", "s4"]]
        assert [b.skipped for b in batches] == [["s1"], []]
        assert {b.freq for b in batches} == {"D"}


def test_chunks_attach_the_future_file_like_a_whole_read(tmp_path):
    table = long_table(5, length=6)
    table["promo"] = np.arange(len(table), dtype=float)
    future = long_table(5, length=8).groupby("item_id").tail(2)  # the 2 days after each series
    future = future.assign(promo=-np.arange(len(future), dtype=float)).drop(columns="target")
    path, future_path = tmp_path / "d.csv", tmp_path / "f.csv"
    table.to_csv(path, index=False)
    future.to_csv(future_path, index=False)
    options = dict(known_covariates=["promo"], future=future_path, horizon=2)
    chunks = list(iter_series_chunks(path, chunk_size=2, rows_per_read=3, **options))
    whole = load_dataset(path, **options)
    flat = [s for c in chunks for s in c.series]
    assert len(flat) == 5 and len(chunks) == 3
    for a, b in zip(flat, whole.series, strict=True):
        assert a.known_covariates.shape == (8, 1)
        np.testing.assert_array_equal(a.known_covariates, b.known_covariates)
    # Without a future file or horizon (a backtest), known covariates cover the history only.
    history_only = [s for c in iter_series_chunks(path, chunk_size=2, known_covariates=["promo"]) for s in c.series]
    assert [s.known_covariates.shape for s in history_only] == [(6, 1)] * 5


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_keep_the_rows_before_a_series_first_value_like_a_whole_read(tmp_path, suffix):
    """Leading missing values (some cut by a read boundary, one series with none observed) stream as they read whole."""
    table = long_table(5, length=7)
    table["rain"] = np.arange(len(table), dtype=float)
    for series, lead in (("s0", 3), ("s2", 5), ("s3", 7), ("s4", 1)):  # s3: nothing observed
        table.loc[table.index[table["item_id"] == series][:lead], "target"] = np.nan
    path = tmp_path / f"d{suffix}"
    (table.to_csv if suffix == ".csv" else table.to_parquet)(path, index=False)
    chunks = list(iter_series_chunks(path, chunk_size=2, rows_per_read=4, past_covariates=["rain"]))
    whole = load_dataset(path, past_covariates=["rain"])
    flat = [s for c in chunks for s in c.series]
    assert [s.item_id for s in flat] == ["s0", "s1", "s2", "s4"] and [x for c in chunks for x in c.skipped] == ["s3"]
    for a, b in zip(flat, whole.series, strict=True):
        assert len(a.target) == 7 and a.timestamps[0] == pd.Timestamp("2021-01-01")
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.past_covariates, b.past_covariates)
        assert a.timestamps.equals(b.timestamps)
    assert np.isnan(flat[2].target[:5, 0]).all() and flat[2].target[5:, 0].tolist() == [205, 206]


def test_a_broken_file_read_in_pieces_is_a_one_line_input_error(tmp_path):
    path = tmp_path / "d.csv.gz"
    data = gzip.compress(long_table(50).to_csv(index=False).encode())
    path.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(InputError, match=r"d\.csv\.gz: cannot read csv\.gz file"):
        list(iter_series_chunks(path, chunk_size=2, rows_per_read=10))


class _CountingNumpy:
    """numpy, counting the elements that SeenIds sorts, merges or unites (its work, not its lookups)."""

    COUNTED = ("sort", "concatenate", "union1d", "unique")

    def __init__(self) -> None:
        self.elements = 0

    def __getattr__(self, name):
        function = getattr(np, name)
        if name not in self.COUNTED:
            return function

        def counted(*args, **kwargs):
            first = args[0]
            arrays = first if isinstance(first, (list, tuple)) else args[:2]
            self.elements += sum(np.size(a) for a in arrays if isinstance(a, np.ndarray))
            return function(*args, **kwargs)

        return counted


def test_seen_ids_work_grows_as_n_log_n(monkeypatch):
    # Each add used to unite all ids met so far (np.union1d): quadratic, 377 s before any output at 1M series.
    counting = _CountingNumpy()
    monkeypatch.setattr("moirai_cli.data.frames.np", counting)
    seen, n, per_add = SeenIds(), 20_000, 16
    for start in range(0, n, per_add):
        ids = np.arange(start, start + per_add)
        assert seen.first_repeat(ids) is None
        seen.add(ids)
    assert seen.first_repeat(np.array([5, n + 1])) == 0 and seen.first_repeat(np.array([n + 1])) is None
    assert counting.elements <= 2 * n * np.log2(n)  # each id is copied O(log n) times; a union per add: n^2 / 32


def test_an_id_repeated_within_one_read_is_an_unsorted_file(tmp_path):
    table = long_table(3).iloc[[0, 1, 4, 5, 2, 3, *range(6, 12)]]  # s0, s1, s0 again, s2, in one piece
    path = tmp_path / "d.csv"
    table.to_csv(path, index=False)
    with pytest.raises(InputError, match="series 's0' reappears at row 5; sort the file by id"):
        list(iter_series_chunks(path, chunk_size=1, rows_per_read=100))
