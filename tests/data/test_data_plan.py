"""A read plan settled once from a sample makes every part of a table read as the whole table is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import check_rows, infer_table_frequency, load_dataset, plan_file_reading, plan_reading
from moirai_cli.errors import InputError


def long_table() -> pd.DataFrame:
    """Three daily series; 'c' has a single row, so on its own it has no frequency."""
    frames = [
        pd.DataFrame({"shop": "a", "day": pd.date_range("2024-01-01", periods=9).astype(str), "sales": np.arange(9.0), "price": 1.0}),
        pd.DataFrame({"shop": "b", "day": pd.date_range("2024-01-03", periods=6).astype(str), "sales": np.arange(6.0), "price": 2.0}),
        pd.DataFrame({"shop": "c", "day": ["2024-01-05"], "sales": [3.0], "price": [3.0]}),
    ]
    return pd.concat(frames, ignore_index=True)


def test_plan_fixes_roles_and_frequency_so_each_part_reads_like_the_whole():
    table = long_table()
    plan = plan_reading(table.head(4), series_rows=lambda layout: table, target="sales", past_covariates=["price"])
    assert (plan.layout.kind, plan.layout.id_column, plan.layout.timestamp_column) == ("long", "shop", "day")
    assert plan.freq == "D" and plan.columns == ["shop", "day", "sales", "price"]
    whole = load_dataset(table, target="sales", past_covariates=["price"])
    parts = [load_dataset(table[table["shop"] == shop], **plan.read_options()) for shop in ("a", "b", "c")]
    for record, part in zip(whole.series, parts):
        (alone,) = part.series
        assert alone.item_id == record.item_id and part.freq == whole.freq
        assert alone.timestamps.equals(record.timestamps)
        np.testing.assert_array_equal(alone.target, record.target)
        np.testing.assert_array_equal(alone.past_covariates, record.past_covariates)
    with pytest.raises(InputError, match="cannot infer the frequency"):  # what the plan's frequency prevents
        load_dataset(table[table["shop"] == "c"], target="sales")


def test_plan_reads_the_frequency_from_the_series_rows_not_the_sample():
    table = long_table()
    head = table.iloc[[0, 2, 4]]  # every other day of 'a': a sample alone would say 2D
    assert plan_reading(head, target="sales").freq == "2D"
    rows = lambda layout: table[[layout.id_column, layout.timestamp_column]]  # noqa: E731
    assert plan_reading(head, series_rows=rows, target="sales").freq == "D"
    assert infer_table_frequency(table, plan_reading(head, target="sales").layout) == "D"


def test_plan_of_a_wide_table_and_an_explicit_frequency():
    wide = pd.DataFrame({"month": pd.date_range("2020-01-01", periods=5, freq="MS"), "x": np.arange(5.0), "z": np.ones(5)})
    plan = plan_reading(wide)
    assert plan.layout.kind == "wide" and plan.freq == "MS"
    read = load_dataset(wide, **plan.read_options())
    assert (read.layout.kind, read.layout.targets, read.freq) == ("wide", ("x", "z"), "MS")
    assert plan_reading(wide, freq="W").freq == "W-SUN"  # validated and made canonical
    with pytest.raises(InputError, match="not a pandas frequency"):
        plan_reading(wide, freq="fortnightly")


def test_plan_errors_name_the_table():
    with pytest.raises(InputError, match="sample: no data rows"):
        plan_reading(long_table().head(0), source="sample")
    irregular = pd.DataFrame({"id": ["a", "a"], "ts": ["2024-01-01", "2024-01-01 00:00:01"], "y": [1.0, 2.0]})
    with pytest.raises(InputError, match="sample: cannot infer the frequency"):
        plan_reading(irregular.head(1), source="sample")


def test_require_series_false_reads_a_part_whose_series_are_all_empty():
    empty = pd.DataFrame({"id": ["a", "a"], "ts": ["2024-01-01", "2024-01-02"], "y": [np.nan, np.nan]})
    with pytest.raises(InputError, match="no series has an observed target value"):
        load_dataset(empty)
    dataset = load_dataset(empty, require_series=False)
    assert dataset.series == [] and dataset.skipped == ["a"]


def day_first_table(days: pd.DatetimeIndex) -> pd.DataFrame:
    """Two daily series whose dates are written dd/mm/yyyy."""
    return pd.DataFrame(
        {"shop": np.repeat(["a", "b"], len(days)), "day": np.tile(days.strftime("%d/%m/%Y"), 2), "sales": np.arange(2.0 * len(days))}
    )


def test_plan_settles_the_date_convention_so_a_part_of_ambiguous_dates_reads_like_the_whole():
    table = day_first_table(pd.date_range("2024-02-01", periods=20))  # 13/02 onwards settle it: day first
    plan = plan_reading(table, target="sales")
    assert plan.dayfirst is True and plan.freq == "D" and plan.freq_inferred
    early = table[table["day"].str[:2].astype(int) <= 12]  # 01/02 .. 12/02: either convention would do
    with pytest.raises(InputError, match="pass dayfirst=True or dayfirst=False"):  # a Python caller's error names the parameter
        load_dataset(early, target="sales")  # alone, this part cannot be settled
    part = load_dataset(early, **plan.read_options())
    assert part.series[0].timestamps[0] == pd.Timestamp("2024-02-01") and part.freq == "D"


def test_plan_refuses_a_sample_that_cannot_settle_the_dates_unless_told():
    table = day_first_table(pd.date_range("2024-02-01", periods=10))  # every date reads both ways
    with pytest.raises(InputError, match="pass dayfirst=True or dayfirst=False"):  # a Python caller's error names the parameter
        plan_reading(table, target="sales")
    assert plan_reading(table, target="sales", dayfirst=True).read_options()["dayfirst"] is True


def test_an_inferred_plan_frequency_still_refuses_series_of_another_frequency():
    hourly = pd.DataFrame({"id": "h", "t": pd.date_range("2024-01-01", periods=48, freq="h").astype(str), "y": 1.0})
    daily = pd.DataFrame({"id": "d", "t": pd.date_range("2024-01-01", periods=10, freq="D").astype(str), "y": 1.0})
    plan = plan_reading(hourly, target="y")
    assert plan.freq == "h" and plan.freq_inferred
    with pytest.raises(InputError, match="series have different frequencies: 'd' is D"):
        load_dataset(pd.concat([hourly, daily]), **plan.read_options())
    told = plan_reading(hourly, target="y", freq="h")  # a frequency the user gave puts every series on its grid
    assert not told.freq_inferred
    assert len(load_dataset(pd.concat([hourly, daily]), **told.read_options()).series) == 2


def test_the_plan_settles_varying_utc_offsets_on_every_file(tmp_path):
    # Each worker decided on its own part: a file without a daylight saving change kept +01:00, one with it
    # was read as local dates.
    from moirai_cli.data import plan_file_reading

    (tmp_path / "d").mkdir()
    for name, start in (("a", "2024-01-01"), ("b", "2024-03-29")):
        stamps = pd.date_range(start, periods=6, freq="D", tz="Europe/Paris")
        pd.DataFrame({"item_id": name, "date": [t.isoformat() for t in stamps], "y": range(6)}).to_csv(
            tmp_path / "d" / f"{name}.csv", index=False
        )
    plan = plan_file_reading(tmp_path / "d")
    assert plan.utc_offsets == "local" and plan.value_options()["utc_offsets"] == "local"
    part = load_dataset(tmp_path / "d" / "a.csv", **plan.read_options())
    assert part.series[0].timestamps.tz is None and part.series[0].timestamps[0] == pd.Timestamp("2024-01-01")


def test_a_year_first_order_settled_by_the_plan_reaches_every_part(tmp_path):
    # The first series' years (95-99) settle YY-MM-DD; a part holding only the other one (years 10-19) reads it as
    # the plan says, not as an ambiguous column of its own.
    rows = [("a", f"{y:02d}-01-01", float(y)) for y in range(95, 100)] + [("b", f"{y:02d}-01-01", float(y)) for y in range(10, 20)]
    pd.DataFrame(rows, columns=["id", "date", "y"]).to_csv(tmp_path / "t.csv", index=False)
    plan = plan_file_reading(str(tmp_path / "t.csv"))
    part = pd.DataFrame(rows[5:], columns=["id", "date", "y"])
    dataset = load_dataset(part, **plan.read_options())
    assert list(dataset.series[0].timestamps[:2]) == [pd.Timestamp("2010-01-01"), pd.Timestamp("2011-01-01")]
    check_rows(part, plan.layout, "t.csv", **plan.value_options())  # a worker's check reads it the same way
