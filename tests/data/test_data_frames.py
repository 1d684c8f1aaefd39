"""Layout detection, frequency inference, grids, covariates and bad-input errors of the data layer."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import detect_layout, infer_frequency, load_dataset
from moirai_cli.data.frames import parse_numbers
from moirai_cli.errors import InputError


def csv(text: str) -> pd.DataFrame:
    """A frame read the way the CLI reads CSV files (all text)."""
    return pd.read_csv(io.StringIO(text), dtype=str)


LONG = csv(
    "unique_id,ds,y\n"
    "A,2020-01-01,1\nA,2020-01-02,2\nA,2020-01-04,4\n"  # gap on 01-03
    "B,2020-01-03,30\nB,2020-01-02,20\n"  # unsorted
)


def test_long_layout_by_name_with_gap_and_unsorted_rows():
    data = load_dataset(LONG, source="t.csv")
    assert data.layout.kind == "long" and data.id_column == "unique_id" and data.timestamp_column == "ds"
    assert data.freq == "D"
    a, b = data.series
    assert a.item_id == "A" and np.isnan(a.target[2, 0]) and a.target.shape == (4, 1)
    assert a.target.dtype == np.float64  # values stay float64 through the data layer
    assert list(b.timestamps.strftime("%m-%d")) == ["01-02", "01-03"] and b.target[:, 0].tolist() == [20, 30]
    assert "long layout" in data.describe() and "2 series" in data.describe()


def test_column_names_are_case_insensitive_and_overridable():
    frame = csv("Series,Time,Value,other\nx,2020-01-01,1,5\nx,2020-01-02,2,6\nx,2020-01-03,3,7\n")
    assert detect_layout(frame).id_column == "Series"
    lay = detect_layout(frame, target=["other"], timestamp_column="time")
    assert lay.targets == ("other",) and lay.timestamp_column == "Time"


def test_id_guessed_from_the_only_text_column():
    lay = detect_layout(csv("symbol,date,price\nA,2020-01-01,1\nB,2020-01-01,2\n"))
    assert (lay.kind, lay.id_column, lay.targets) == ("long", "symbol", ("price",))
    assert "'symbol' (guessed)" in lay.describe()


def test_wide_layout_one_series_per_numeric_column():
    frame = csv("month,a,b\n2020-01-01,1,10\n2020-02-01,2,\n2020-03-01,3,30\n2020-04-01,,40\n")
    data = load_dataset(frame)
    assert data.layout.kind == "wide" and data.freq == "MS" and data.id_column == "item_id"
    assert [s.item_id for s in data.series] == ["a", "b"]
    assert np.isnan(data.series[1].target[1, 0]) and np.isnan(data.series[0].target[3, 0])


def test_single_series_and_forced_layouts():
    data = load_dataset(csv("date,temp\n2020-01-01 00:00,1\n2020-01-01 01:00,2\n2020-01-01 02:00,3\n"))
    assert data.layout.kind == "single" and data.freq == "h" and data.series[0].item_id == "temp"
    wide = csv("date,a,b\n2020-01-01,1,2\n2020-01-02,3,4\n")
    single = load_dataset(wide, layout="single", freq="D")
    assert single.series[0].target.shape == (2, 2) and single.target_names == ("a", "b")
    with pytest.raises(InputError, match="no id column"):
        load_dataset(wide, layout="long")


def test_multivariate_long_with_past_covariates():
    frame = csv("id,date,t1,t2,rain\nA,2020-01-01,1,2,0\nA,2020-01-02,3,4,1\nA,2020-01-03,5,6,0\n")
    data = load_dataset(frame, target=["t1", "t2"], past_covariates=["rain"])
    record = data.series[0]
    assert record.target.tolist() == [[1, 2], [3, 4], [5, 6]] and record.past_covariates.shape == (3, 1)
    assert record.known_covariates is None


def test_known_covariates_from_future_file():
    frame = csv("id,date,y,promo\nA,2020-01-01,1,0\nA,2020-01-02,2,1\nB,2020-01-01,5,0\nB,2020-01-02,6,0\n")
    future = csv("id,date,promo\nA,2020-01-03,1\nA,2020-01-04,0\nB,2020-01-04,1\nB,2020-01-03,0\nB,2020-01-05,9\n")
    data = load_dataset(frame, known_covariates=["promo"], future=future, horizon=2)
    assert data.series[0].known_covariates[:, 0].tolist() == [0, 1, 1, 0]
    assert data.series[1].known_covariates[:, 0].tolist() == [0, 0, 0, 1]  # the row beyond the horizon is ignored
    missing = future[~((future["id"] == "B") & (future["date"] == "2020-01-04"))]
    with pytest.raises(InputError, match="series 'B' has no row for 2020-01-04"):
        load_dataset(frame, known_covariates=["promo"], future=missing, horizon=2)
    with pytest.raises(InputError, match="need future values"):
        load_dataset(frame, known_covariates=["promo"], horizon=2)


def test_known_covariates_without_horizon_cover_the_history_only():
    frame = csv("id,date,y,promo\nA,2020-01-01,1,0\nA,2020-01-02,2,1\n")
    data = load_dataset(frame, known_covariates=["promo"])
    assert data.series[0].known_covariates[:, 0].tolist() == [0, 1] and data.horizon is None
    with pytest.raises(InputError, match="needs the horizon"):
        load_dataset(frame, known_covariates=["promo"], future=frame)


def test_known_covariates_shared_by_wide_series():
    frame = csv("date,a,b,hol\n2020-01-01,1,2,0\n2020-01-02,3,4,1\n")
    future = csv("date,hol\n2020-01-03,1\n")
    data = load_dataset(
        frame, target=["a", "b"], layout="wide", known_covariates=["hol"], future=future, horizon=1, freq="D"
    )
    assert [s.known_covariates[:, 0].tolist() for s in data.series] == [[0, 1, 1], [0, 1, 1]]


def test_all_missing_series_is_skipped_and_leading_gaps_kept():
    frame = csv("id,date,y\nA,2020-01-01,\nA,2020-01-02,2\nA,2020-01-03,3\nB,2020-01-01,\nB,2020-01-02,\n")
    data = load_dataset(frame)
    assert data.skipped == ["B"] and [s.item_id for s in data.series] == ["A"]
    assert list(data.series[0].timestamps.strftime("%d")) == ["01", "02", "03"]  # from its first row, not its first value
    assert np.isnan(data.series[0].target[0, 0]) and data.series[0].target[1:, 0].tolist() == [2, 3]
    with pytest.raises(InputError, match="no series has an observed target value"):
        load_dataset(frame[frame["id"] == "B"], freq="D")


def test_rows_before_the_first_observed_value_are_context_in_every_layout():
    """A series starts at its first row (long: its earliest timestamp; wide and single: the table's first), with
    the covariates of those rows; the reference reads them as missing context values."""
    long = load_dataset(
        csv(
            "id,date,y,rain\n"
            "A,2020-01-03,,0.3\nA,2020-01-02,,0.2\nA,2020-01-05,5,0.5\nA,2020-01-04,,\n"  # unsorted, a covariate gap
            "B,2020-01-01,1,1.0\nB,2020-01-02,2,2.0\n"
        ),
        past_covariates=["rain"],
    )
    a, b = long.series
    assert list(a.timestamps.strftime("%m-%d")) == ["01-02", "01-03", "01-04", "01-05"]
    np.testing.assert_array_equal(a.target[:, 0], [np.nan, np.nan, np.nan, 5])
    np.testing.assert_array_equal(a.past_covariates[:, 0], [0.2, 0.3, np.nan, 0.5])
    assert b.target[:, 0].tolist() == [1, 2]
    wide = load_dataset(csv("date,a,b\n2020-01-01,,1\n2020-01-02,,2\n2020-01-03,3,3\n2020-01-04,4,\n"))
    assert [len(s.timestamps) for s in wide.series] == [4, 4]
    np.testing.assert_array_equal(wide.series[0].target[:, 0], [np.nan, np.nan, 3, 4])
    assert wide.series[0].timestamps.equals(wide.series[1].timestamps)
    single = load_dataset(csv("date,t1,t2\n2020-01-01,,\n2020-01-02,,7\n2020-01-03,1,8\n"), layout="single")
    np.testing.assert_array_equal(single.series[0].target, [[np.nan, np.nan], [np.nan, 7], [1, 8]])


def test_a_series_mostly_missing_before_its_first_value_is_named_by_the_sparse_grid_warning():
    frame = csv("id,date,y\n" + "".join(f"A,2020-01-{d:02d},\n" for d in range(1, 8)) + "A,2020-01-08,1\nA,2020-01-09,2\n")
    data = load_dataset(frame, freq="D")
    assert len(data.series[0].target) == 9
    assert len(data.warnings) == 1 and "series 'A': more than half of the D grid is missing (78% for 'A')" in data.warnings[0]


@pytest.mark.parametrize(
    "stamps, expected",
    [
        (["2020-01-31", "2020-02-29", "2020-03-31"], "ME"),
        (["2020-01-01", "2020-03-01", "2020-04-01"], "MS"),  # gap: no pd.infer_freq, calendar fallback
        (["2020-01-01", "2020-01-08", "2020-01-22"], "W-WED"),
        (["2020-01-01 00:00", "2020-01-01 00:15", "2020-01-01 01:00"], "15min"),
        (["2019-01-01", "2021-01-01", "2022-01-01"], "YS-JAN"),
    ],
)
def test_frequency_inference(stamps, expected):
    assert infer_frequency([pd.to_datetime(stamps)]) == expected


def test_frequency_override_and_off_grid_error():
    frame = csv("date,y\n2020-01-01,1\n2020-01-03,2\n2020-01-05,3\n")
    assert load_dataset(frame, freq="D").series[0].target.shape == (5, 1)
    with pytest.raises(InputError, match="'xx' is not a pandas frequency"):
        load_dataset(frame, freq="xx")
    with pytest.raises(InputError, match="not on the MS grid"):
        load_dataset(frame, freq="MS")


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        (
            "id,date,y\nA,2020-01-01,1\nA,2020-01-01,2\n",
            {},
            r"series 'A' has duplicate timestamp 2020-01-01 00:00:00 \(column 'date', rows 1 and 2\)",
        ),
        ("id,date,y\nA,2020-01-01,1\nA,someday,2\n", {}, "column 'date', row 2: cannot parse timestamp 'someday'"),
        ("id,date,y\nA,2020-01-01,1\nA,,2\n", {}, "column 'date', row 2: missing timestamp"),
        (
            "id,date,y\nA,2020-01-01,1\nA,2020-01-02,abc\nA,2020-01-03,3\n",
            {},
            "column 'y', row 2: 'abc' is not a number",
        ),
        ("id,date,y\nA,2020-01-01,1\n,2020-01-02,2\n", {}, "column 'id', row 2: missing series id"),
        ("id,date,y\n", {}, "no data rows"),
        ("id,date,y\nA,2020-01-01,1\n", {}, "cannot infer the frequency"),
        ("a,b\n1,2\n", {}, "no timestamp column found"),
        ("id,date,y\nA,2020-01-01,1\n", {"target": ["nope"]}, "no column 'nope'"),
        ("date,a,b,c\n2020-01-01,x,y,1\n", {}, "several text columns"),
        ("id,date,a,b\nA,2020-01-01,1,2\n", {}, "several numeric columns"),
    ],
)
def test_bad_input_errors_name_the_place(text, kwargs, message):
    with pytest.raises(InputError, match=message) as err:
        load_dataset(
            csv(text) if text.count("\n") > 1 else pd.read_csv(io.StringIO(text), dtype=str), source="in.csv", **kwargs
        )
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(("in.csv", "--"))


def test_parquet_typed_columns(tmp_path):
    frame = pd.DataFrame(
        {"item_id": [1, 1, 1], "timestamp": pd.date_range("2021-01-01", periods=3, freq="h"), "target": [1, 2, 3]}
    )
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)
    data = load_dataset(path)
    assert data.series[0].item_id == 1 and data.freq == "h" and data.source == str(path)


def test_values_keep_float64_precision():
    # Values were cast to float32 first: 1e-300 became 0, 1e300 became inf, 1e12 + 0.25 lost its fraction.
    frame = csv("date,tiny,huge,level\n2020-01-01,1e-300,1e300,1000000000000.25\n2020-01-02,3e-300,-2e300,1000000000000.5\n")
    data = load_dataset(frame, layout="wide")
    tiny, huge, level = (record.target[:, 0].tolist() for record in data.series)
    assert tiny == [1e-300, 3e-300] and huge == [1e300, -2e300] and level == [1e12 + 0.25, 1e12 + 0.5]


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400"])
def test_infinite_values_are_refused_naming_the_row(value):
    frame = csv(f"id,date,y\nA,2020-01-01,1\nA,2020-01-02,{value}\nA,2020-01-03,3\n")
    with pytest.raises(InputError, match=rf"in\.csv: column 'y', row 2: '{value}' is not a finite number; .*inf_as_missing=True"):  # a Python caller's error names the parameter
        load_dataset(frame, source="in.csv")
    data = load_dataset(frame, source="in.csv", inf_as_missing=True)
    assert np.isnan(data.series[0].target[1, 0]) and data.series[0].target[2, 0] == 3
    assert data.warnings == ["in.csv: column 'y': 1 infinite value(s) read as missing (first: row 2)"]


def hourly_and_daily(first: str = "H") -> pd.DataFrame:
    """Two regular series in one table: 'H' hourly for two days, 'D' daily for ten days."""
    hourly = pd.DataFrame({"id": "H", "date": pd.date_range("2024-01-01", periods=48, freq="h")})
    daily = pd.DataFrame({"id": "D", "date": pd.date_range("2024-01-01", periods=10, freq="D")})
    parts = [hourly, daily] if first == "H" else [daily, hourly]
    table = pd.concat(parts, ignore_index=True)
    table["y"] = np.arange(len(table), dtype=float)
    return csv(table.to_csv(index=False))


@pytest.mark.parametrize("first", ["H", "D"])
def test_series_of_different_frequencies_are_refused_with_their_names(first):
    # The daily series was forecast on the hourly grid from a history 96% gaps, with no warning.
    with pytest.raises(InputError, match="series have different frequencies") as err:
        load_dataset(hourly_and_daily(first), source="in.csv")
    assert "'H' is h" in str(err.value) and "'D' is D" in str(err.value) and str(err.value).startswith("in.csv: ")


def test_a_series_at_another_frequency_beyond_the_sampled_ones_is_refused(monkeypatch):
    monkeypatch.setattr("moirai_cli.data.frames.FREQUENCY_SAMPLE_SERIES", 1)  # only 'H' votes for the frequency
    with pytest.raises(InputError, match=r"series have different frequencies: 'D' is D, the others h \(like series 'H'\)"):
        load_dataset(hourly_and_daily("H"), source="in.csv")
    data = load_dataset(hourly_and_daily("H"), freq="h")  # on one grid when asked, with a warning
    assert data.freq == "h" and len(data.series[1].target) == 9 * 24 + 1
    assert data.warnings == [
        "<dataframe>: series 'D': more than half of the h grid is missing (95% for 'D'); the model reads the gaps "
        "as missing values; check freq"  # a Python caller's error names the parameter
    ]


def test_a_series_with_irregular_gaps_only_gets_a_warning():
    stamps = pd.date_range("2024-01-01", periods=60, freq="D")[[0, 2, 5, 9, 11, 20, 22, 30, 40, 43, 50, 59]]
    regular = pd.date_range("2024-01-01", periods=30, freq="D")
    table = pd.DataFrame({"id": ["sales"] * len(stamps) + ["all"] * len(regular), "date": stamps.append(regular)})
    table["y"] = 1.0
    data = load_dataset(csv(table.to_csv(index=False)), source="in.csv")
    assert data.freq == "D" and [len(r.target) for r in data.series] == [60, 30]
    assert data.warnings and "series 'sales': more than half of the D grid is missing (80% for 'sales')" in data.warnings[0]


def test_monthly_data_with_freq_daily_warns_instead_of_forecasting_silently():
    frame = csv("date,y\n" + "".join(f"{d:%Y-%m-%d},{i}\n" for i, d in enumerate(pd.date_range("2020-01-01", periods=36, freq="MS"))))
    assert load_dataset(frame).freq == "MS" and not load_dataset(frame).warnings
    data = load_dataset(frame, freq="D", source="m.csv")
    assert len(data.warnings) == 1 and "m.csv: series 'y': more than half of the D grid is missing (97% for 'y')" in data.warnings[0]


def test_one_stray_timestamp_is_an_off_grid_error_not_a_finer_grid():
    # 99 hourly rows and one at :30 became a 30-minute grid, half of it missing.
    stamps = list(pd.date_range("2024-01-01", periods=99, freq="h").strftime("%Y-%m-%d %H:%M"))
    stamps.insert(50, "2024-01-03 01:30")
    frame = csv("date,y\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps)))
    with pytest.raises(InputError, match=r"in\.csv: series 'y', row 51: timestamp 2024-01-03 01:30:00 is not on the h grid"):
        load_dataset(frame, source="in.csv")


def test_a_numeric_id_column_is_suggested_for_duplicate_timestamps():
    frame = csv("store,date,target\n1,2020-01-01,1\n1,2020-01-02,2\n2,2020-01-01,3\n2,2020-01-02,3\n")
    with pytest.raises(InputError, match=r"series 'target' has duplicate timestamp .*; if column 'store' holds series ids, pass id_column='store'"):  # a Python caller's error names the parameter
        load_dataset(frame, source="in.csv")
    assert [r.item_id for r in load_dataset(frame, id_column="store").series] == ["1", "2"]


def test_freq_error_does_not_nest_pandas_message():
    with pytest.raises(InputError) as err:
        load_dataset(csv("date,y\n2020-01-01,1\n2020-01-02,2\n"), freq="banana")
    assert str(err.value) == "freq: 'banana' is not a pandas frequency (for example h, D, W-SUN, MS, QS, YS, 15min)"


def test_nan_spelled_out_in_a_text_column_is_a_missing_value():
    # read_csv reads 'nan' as missing; a Parquet text column (or a DataFrame of strings) must read it the same way.
    values = pd.Series(["1.5", "nan", "NaN", "-nan", "", "2"])
    parsed = parse_numbers(values, "d.parquet", "y")
    np.testing.assert_array_equal(np.isnan(parsed), [False, True, True, True, True, False])
    with pytest.raises(InputError, match=r"row 2: 'nan\?' is not a number"):
        parse_numbers(pd.Series(["1", "nan?"]), "d.parquet", "y")


# --- messages that contradicted themselves, frequencies that could not be given ---


def dated(stamps) -> pd.DataFrame:
    return csv("date,y\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps)))


@pytest.mark.parametrize(
    "start, offset, freq, after",
    [
        ("2020-01-15", pd.DateOffset(months=1), "MS", ["2021-01-15", "2021-02-15"]),
        ("2020-02-15 09:30", pd.DateOffset(months=3), "QS-FEB", ["2023-02-15 09:30", "2023-05-15 09:30"]),
        ("2013-06-20", pd.DateOffset(years=1), "YS-JUN", ["2025-06-20", "2026-06-20"]),
    ],
)
def test_data_on_one_day_of_the_month_is_read_and_forecast_on_that_day(start, offset, freq, after):
    # "2020-01-15 is not on the MS grid starting at 2020-01-15", and no --freq accepted mid-month monthly data.
    stamps = pd.date_range(start, periods=12, freq=offset)
    text = dated(stamps.strftime("%Y-%m-%d %H:%M"))
    for given in (None, freq):
        data = load_dataset(text, freq=given, horizon=2, source="m.csv")
        record = data.series[0]
        assert data.freq == freq and record.timestamps.equals(pd.DatetimeIndex(stamps).as_unit("ns"))
        assert data.future_index(record, 2).tolist() == [pd.Timestamp(t) for t in after]
        assert not data.warnings


def test_monthly_data_late_in_the_month_says_what_works():
    stamps = pd.date_range("2020-01-30", periods=12, freq=pd.DateOffset(months=1))  # Feb 29, then the 30th
    with pytest.raises(InputError) as err:
        load_dataset(dated(stamps.strftime("%Y-%m-%d")), source="m.csv")
    assert str(err.value).startswith("m.csv: series 'y': timestamps a month apart on day 30 ")
    assert "freq='MS'" in str(err.value) and "ME" in str(err.value) and "set freq" not in str(err.value)  # a Python caller's error names the parameter


def test_a_given_freq_that_does_not_fit_says_so_without_asking_for_freq():
    # "--freq W on monthly data: not on the W-SUN grid ... or set --freq" although --freq was set.
    monthly = dated(pd.date_range("2020-01-01", periods=12, freq="MS").strftime("%Y-%m-%d"))
    with pytest.raises(InputError) as err:
        load_dataset(monthly, freq="W", source="m.csv")
    message = str(err.value)
    assert "W-SUN" in message and "weeks ending on Sunday" in message and "2020-01-01" in message
    assert "set --freq" not in message and "starting at 2020-01-01" not in message
    assert "the series' own timestamps are MS" in message


@pytest.mark.parametrize("freq", ["-1D", "0D", "0h", "-2MS"])
def test_a_frequency_that_does_not_move_forward_is_refused(freq):
    # --freq -1D: IndexError; --freq 0D: ValueError with numpy warning lines; both exit 1.
    with pytest.raises(InputError) as err:
        load_dataset(dated(["2020-01-01", "2020-01-02", "2020-01-03"]), freq=freq, horizon=2)
    assert str(err.value) == f"freq: '{freq}' does not move forward in time; give a positive step (for example h, D, W-SUN, MS, 15min)"


def test_a_date_pandas_misreads_gets_the_format_to_give():
    # 'Jan-24' was "outside the dates pandas can hold" (read as 0001-01-24).
    with pytest.raises(InputError) as err:
        load_dataset(dated(["Jan-24", "Feb-24", "Mar-24"]), source="m.csv")
    assert str(err.value) == (
        "m.csv: column 'date', row 1: 'Jan-24' could not be read as a date (pandas reads it as 0001-01-24); "
        "give its format with date_format, for example '%b-%y'"  # a Python caller's error names the parameter
    )
    data = load_dataset(dated(["Jan-24", "Feb-24", "Mar-24"]), date_format="%b-%y")
    assert data.freq == "MS" and data.series[0].timestamps[0] == pd.Timestamp("2024-01-01")


# --- values ---


def test_values_too_large_to_forecast_are_refused_naming_the_row():
    # 1e307 to 1.7e308 were accepted and gave mean = inf and empty quantile cells, exit 0.
    with pytest.raises(InputError) as err:
        load_dataset(csv("date,y\n2020-01-01,1\n2020-01-02,1.5e308\n2020-01-03,1\n"), source="d.csv")
    assert str(err.value).startswith("d.csv: column 'y', row 2: '1.5e308' is too large to forecast (magnitudes above 1e+302")
    assert load_dataset(csv("date,y\n2020-01-01,1e299\n2020-01-02,-1e302\n2020-01-03,1\n")).series[0].target[1, 0] == -1e302


def test_a_variate_never_observed_in_a_series_gets_a_warning_naming_it():
    frame = csv("id,date,a,b\nx,2020-01-01,1,\nx,2020-01-02,2,\nx,2020-01-03,3,\ny,2020-01-01,1,5\ny,2020-01-02,2,6\n")
    data = load_dataset(frame, target=["a", "b"], source="m.csv")
    assert [r.item_id for r in data.series] == ["x", "y"]
    assert data.warnings == ["m.csv: series 'x': target 'b' has no observed value; its forecast is left empty (NaN)"]


# --- ids spelled like missing values ---

NAMIBIA = "country,date,y\n" + "".join(
    f"{code},2020-01-0{day},{value}\n" for code in ("NA", "None", "null", "nan", "ZA") for day, value in ((1, 1), (2, "NA"), (3, 3))
)


def test_ids_spelled_like_missing_values_are_ids(tmp_path):
    # NA (Namibia), None, null, nan were refused as missing ids, with a misleading "rows are not grouped" note.
    from moirai_cli.data import is_grouped_by, iter_series_chunks, read_table

    path = tmp_path / "c.csv"
    path.write_text(NAMIBIA)
    assert read_table(path)["country"].tolist()[::3] == ["NA", "None", "null", "nan", "ZA"]
    assert is_grouped_by(path, "country")
    for data in (load_dataset(path), next(iter_series_chunks(path))):
        assert [r.item_id for r in data.series] == ["NA", "None", "null", "nan", "ZA"]
        assert data.layout.id_column == "country" and data.layout.targets == ("y",)
        assert all(np.isnan(r.target[1, 0]) and r.target[2, 0] == 3 for r in data.series)  # 'NA' in a number column: missing


def test_an_empty_id_cell_is_still_a_missing_id(tmp_path):
    from moirai_cli.data import is_grouped_by

    path = tmp_path / "c.csv"
    path.write_text("id,date,y\nNA,2020-01-01,1\nNA,2020-01-02,2\n,2020-01-01,1\n,2020-01-02,2\n")
    assert is_grouped_by(path, "id")  # the read, not the grouping check, reports the missing id
    with pytest.raises(InputError, match=r"c\.csv: column 'id', row 3: missing series id"):
        load_dataset(path)


def test_missing_value_spellings_are_missing_in_number_columns_of_any_source():
    # CSV cells are now read as text (so that 'NA' can be an id); a number column reads pandas' missing spellings
    # as missing, as read_csv did, whatever the file format.
    parsed = parse_numbers(pd.Series(["1", "NA", "n/a", "null", "None", "#N/A", " NaN ", "2"]), "d.parquet", "y")
    np.testing.assert_array_equal(np.isnan(parsed), [False, True, True, True, True, True, True, False])
