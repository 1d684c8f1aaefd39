"""Timestamp columns: one day/month convention per column, UTC offsets, the dates pandas can hold."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import iter_series_chunks, load_dataset
from moirai_cli.errors import InputError

DAYS = pd.date_range("2024-01-01", periods=40, freq="D")


def frame(dates, values=None) -> pd.DataFrame:
    """A single-series table read the way the CLI reads CSV files (all text)."""
    values = np.arange(len(dates), dtype=float) if values is None else values
    text = pd.DataFrame({"date": list(dates), "y": values}).to_csv(index=False)
    return pd.read_csv(io.StringIO(text), dtype=str)


def test_day_first_dates_are_read_day_first_for_the_whole_column():
    # Days up to 12 were read month-first and the rest day-first: values on wrong dates, a forecast
    # starting 2024-12-02 instead of 2024-02-10.
    data = load_dataset(frame(DAYS.strftime("%d/%m/%Y")), source="d.csv")
    record = data.series[0]
    assert data.freq == "D" and record.timestamps.equals(pd.DatetimeIndex(DAYS))
    assert record.target[:, 0].tolist() == list(range(40))  # every value on its own day
    assert data.future_index(record, 1)[0] == pd.Timestamp("2024-02-10")


def test_month_first_dates_and_two_digit_years_with_times():
    data = load_dataset(frame(DAYS.strftime("%m/%d/%y %H:%M")), source="d.csv")
    assert data.series[0].timestamps.equals(pd.DatetimeIndex(DAYS))


def test_dates_that_read_either_way_are_refused_until_settled():
    # Ten day-first dates, all with a day up to 12, were read month-first as monthly data.
    dates = DAYS[:10].strftime("%d/%m/%Y")
    with pytest.raises(InputError, match=r"d\.csv: column 'date': no date settles whether '02/01/2024' \(row 2\)") as err:
        load_dataset(frame(dates), source="d.csv")
    assert "dayfirst=True" in str(err.value) and "date_format" in str(err.value)  # a Python caller's error names the parameter
    assert load_dataset(frame(dates), dayfirst=True).series[0].timestamps.equals(pd.DatetimeIndex(DAYS[:10]))
    month_first = load_dataset(frame(dates), dayfirst=False)
    assert month_first.freq == "MS" and month_first.series[0].timestamps[1] == pd.Timestamp("2024-02-01")
    by_format = load_dataset(frame(dates), date_format="%d/%m/%Y")
    assert by_format.series[0].timestamps.equals(pd.DatetimeIndex(DAYS[:10]))


def test_a_column_mixing_conventions_is_refused_naming_both_rows():
    dates = ["13/01/2024", "14/01/2024", "01/15/2024"]
    with pytest.raises(InputError, match=r"mixes day-first dates \(row 1: '13/01/2024'\) and month-first dates \(row 3: '01/15/2024'\)"):
        load_dataset(frame(dates), source="d.csv")


def test_a_settled_convention_is_enforced_on_every_row():
    with pytest.raises(InputError, match=r"row 3: cannot parse timestamp '01/15/2024' \(dates in this column are day-first\)"):
        load_dataset(frame(["13/01/2024", "14/01/2024", "01/15/2024"]), dayfirst=True, source="d.csv")
    with pytest.raises(InputError, match=r"row 2: '2024-01-02' does not match date_format '%d/%m/%Y'"):  # a Python caller's error names the parameter
        load_dataset(frame(["01/01/2024", "2024-01-02", "03/01/2024"]), date_format="%d/%m/%Y", source="d.csv")


def test_a_streamed_file_settles_the_convention_on_the_whole_column(tmp_path):
    # The first chunk only has days up to 12; a later one settles that the file is day-first.
    stamps = DAYS.strftime("%d/%m/%Y")
    table = pd.DataFrame(
        {"item_id": np.repeat(["a", "b", "c", "d"], 10), "date": np.r_[stamps[:10], stamps[:10], stamps[:10], stamps[20:30]]}
    )
    table["y"] = np.arange(40.0)
    path = tmp_path / "d.csv"
    table.to_csv(path, index=False)
    chunks = list(iter_series_chunks(path, chunk_size=1, rows_per_read=8))
    whole = load_dataset(path)
    streamed = [record for chunk in chunks for record in chunk.series]
    assert [r.timestamps[0] for r in streamed] == [pd.Timestamp("2024-01-01")] * 3 + [pd.Timestamp("2024-01-21")]
    assert all(a.timestamps.equals(b.timestamps) for a, b in zip(streamed, whole.series))


@pytest.mark.parametrize(
    "stamp, row",
    [("1600-01-01", 1), ("2300-01-01", 3), ("01/01/1600", 1)],
)
def test_dates_pandas_cannot_hold_get_one_clear_line(stamp, row):
    dates = ["2024-01-01", "2024-01-02", "2024-01-03"] if "/" not in stamp else ["01/01/2024", "02/01/2024", "13/01/2024"]
    dates[row - 1] = stamp
    with pytest.raises(InputError, match=rf"d\.csv: column 'date', row {row}: timestamp '{stamp}' is outside the dates pandas can hold \(1677-09-22 to 2262-04-11\)"):
        load_dataset(frame(dates), source="d.csv")


def test_typed_dates_past_2262_and_forecasts_past_2262(tmp_path):
    path = tmp_path / "late.parquet"
    stamps = np.array(["2021-01-01", "2021-01-02", "2300-01-03"], dtype="datetime64[us]")
    pd.DataFrame({"date": stamps, "y": [1.0, 2.0, 3.0]}).to_parquet(path)
    with pytest.raises(InputError, match=r"late\.parquet: column 'date', row 3: timestamp 2300-01-03 00:00:00 is outside"):
        load_dataset(path)
    late = frame(["2262-04-01", "2262-04-02", "2262-04-03"])
    assert load_dataset(late, horizon=8).series  # ends on 2262-04-11, the last whole day
    with pytest.raises(InputError, match=r"series 'y': 9 steps of D after 2262-04-03 00:00:00 run past 2262-04-11"):
        load_dataset(late, horizon=9, source="d.csv")


def test_one_zone_across_a_daylight_saving_change_is_not_mixed_time_zones():
    hourly = frame(["2024-03-10 00:00-05:00", "2024-03-10 01:00-05:00", "2024-03-10 03:00-04:00", "2024-03-10 04:00-04:00"])
    data = load_dataset(hourly, source="d.csv")
    assert data.freq == "h" and str(data.series[0].timestamps.tz) == "UTC"
    assert data.series[0].timestamps[-1] == pd.Timestamp("2024-03-10 08:00", tz="UTC")
    assert "UTC offsets vary" in data.describe() and "in UTC" in data.describe()
    daily = frame(["2024-03-09 00:00-05:00", "2024-03-10 00:00-05:00", "2024-03-11 00:00-04:00", "2024-03-12 00:00-04:00"])
    data = load_dataset(daily)
    assert data.freq == "D" and data.series[0].timestamps[-1] == pd.Timestamp("2024-03-12") and "local dates" in data.describe()
    with pytest.raises(InputError, match=r"mixes timestamps with a UTC offset \(row 1: .*\) and without \(row 2: '2024-03-10 01:00'\)"):
        load_dataset(frame(["2024-03-10 00:00-05:00", "2024-03-10 01:00", "2024-03-10 02:00"]))


# --- two-digit years first (YY-MM-DD) ---


def test_two_digit_years_first_are_not_read_as_days():
    # 13-01-01 ... 24-01-01 (yearly) was read day-first: 12 days of January 2001, forecasts for 2001-01-25.
    yearly = [f"{year}-01-01" for year in range(13, 25)]
    with pytest.raises(InputError) as err:
        load_dataset(frame(yearly), source="d.csv")
    message = str(err.value)
    assert message.startswith("d.csv: column 'date': '13-01-01' (row 1) reads as 2013-01-01 with the year first")
    assert "date_format='%y-%m-%d'" in message and "dayfirst=True" in message  # a Python caller's error names the parameter
    data = load_dataset(frame(yearly), date_format="%y-%m-%d", horizon=2)
    assert data.freq == "YS-JAN" and data.series[0].timestamps[0] == pd.Timestamp("2013-01-01")
    assert data.future_index(data.series[0], 2).tolist() == [pd.Timestamp("2025-01-01"), pd.Timestamp("2026-01-01")]
    day_first = load_dataset(frame(yearly), dayfirst=True)
    assert day_first.freq == "D" and day_first.series[0].timestamps[0] == pd.Timestamp("2001-01-13")


def test_a_two_digit_year_above_31_settles_year_first():
    data = load_dataset(frame([f"{year % 100:02d}-06-30" for year in range(1995, 2006)]))
    assert data.series[0].timestamps[0] == pd.Timestamp("1995-06-30") and data.series[0].timestamps[-1] == pd.Timestamp("2005-06-30")


def test_dates_that_cannot_be_year_first_keep_their_reading():
    assert load_dataset(frame(DAYS.strftime("%d-%m-%Y"))).series[0].timestamps.equals(pd.DatetimeIndex(DAYS))
    assert load_dataset(frame(DAYS.strftime("%m-%d-%y"))).series[0].timestamps.equals(pd.DatetimeIndex(DAYS))  # 01-13-24
    assert load_dataset(frame(DAYS.strftime("%d/%m/%y"))).series[0].timestamps.equals(pd.DatetimeIndex(DAYS))


# --- time zones: one rule for the whole column, whichever chunk a series lands in ---


def zone_table(hourly: bool) -> pd.DataFrame:
    """Three series of Paris times, the last crossing the daylight saving change of 2024-03-31."""
    freq, periods = ("h", 48) if hourly else ("D", 6)
    starts = ["2024-01-01", "2024-01-10", "2024-03-30" if hourly else "2024-03-29"]
    rows = []
    for number, start in enumerate(starts):
        stamps = pd.date_range(start, periods=periods, freq=freq, tz="Europe/Paris")
        text = [t.isoformat() for t in stamps]
        rows.append(pd.DataFrame({"item_id": f"s{number}", "date": text, "y": np.arange(periods, dtype=float).astype(str)}))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("hourly", [False, True])
def test_time_zones_do_not_depend_on_the_chunk_a_series_lands_in(tmp_path, hourly):
    # Series after the 1,024th that crossed a DST change were read as local dates, the others kept +01:00:
    # one output column mixed `2024-01-06 00:00:00+01:00` and `2024-04-05`.
    path = tmp_path / "z.csv"
    zone_table(hourly).to_csv(path, index=False)
    whole = load_dataset(path)
    chunks = list(iter_series_chunks(path, chunk_size=1, rows_per_read=7))
    streamed = [record for chunk in chunks for record in chunk.series]
    assert [r.timestamps.tz for r in streamed] == [r.timestamps.tz for r in whole.series]
    assert all(a.timestamps.equals(b.timestamps) for a, b in zip(streamed, whole.series))
    expected = "UTC" if hourly else None
    assert {None if r.timestamps.tz is None else str(r.timestamps.tz) for r in streamed} == {expected}
    assert all(chunk.notes == whole.notes for chunk in chunks) and len(whole.notes) == 1
    if not hourly:
        assert streamed[0].timestamps[0] == pd.Timestamp("2024-01-01")  # local dates, not 2023-12-31 23:00 UTC
