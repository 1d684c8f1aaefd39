"""Forecast and sample tables built from forecast arrays, and the plot."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from moirai_cli.data import (
    check_output_columns,
    forecast_frame,
    load_dataset,
    quantile_column,
    samples_frame,
)
from moirai_cli.errors import InputError
from moirai_cli.forecasting.job import quantile_levels
from moirai_cli.forecasting.pipeline import Forecast


def dataset(text: str, **kwargs):
    """Load a small CSV text."""
    return load_dataset(pd.read_csv(io.StringIO(text), dtype=str), **kwargs)


def test_forecast_frame_univariate_long():
    data = dataset("symbol,date,price\nA,2020-01-01,1\nA,2020-02-01,2\nB,2020-01-01,3\nB,2020-03-01,4\n")
    samples = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3, 1)
    frame = forecast_frame(data, Forecast(samples), [0.1, 0.5, 0.9])
    assert list(frame.columns) == ["symbol", "date", "mean", "0.1", "0.5", "0.9"]
    assert frame["symbol"].tolist() == ["A"] * 3 + ["B"] * 3
    assert frame["date"].dt.strftime("%Y-%m").tolist() == [
        "2020-03",
        "2020-04",
        "2020-05",
        "2020-04",
        "2020-05",
        "2020-06",
    ]
    np.testing.assert_allclose(frame["mean"], samples.mean(axis=1).reshape(-1))
    np.testing.assert_allclose(frame["0.5"], np.median(samples, axis=1).reshape(-1))


def test_forecast_frame_multivariate_has_target_column_and_offset():
    data = dataset("date,a,b\n2020-01-01,1,2\n2020-01-02,3,4\n", layout="single")
    samples = np.random.default_rng(0).normal(size=(1, 4, 2, 2)).astype(np.float32)
    frame = forecast_frame(data, Forecast(samples), [0.5])
    assert list(frame.columns) == ["item_id", "date", "target", "mean", "0.5"]
    assert frame["target"].tolist() == ["a", "a", "b", "b"]
    np.testing.assert_allclose(frame["mean"], samples.mean(axis=1)[0].T.reshape(-1), rtol=1e-6)


def test_chunk_offset_selects_the_right_series():
    data = dataset("id,date,y\nA,2020-01-01,1\nA,2020-01-02,1\nB,2020-01-05,1\nB,2020-01-06,1\n")
    frame = forecast_frame(data, Forecast(np.zeros((1, 2, 1, 1), np.float32)), [0.5], start=1)
    assert frame["id"].tolist() == ["B"] and str(frame["date"][0].date()) == "2020-01-07"


def test_samples_frame_long_paths():
    data = dataset("date,a,b\n2020-01-01,1,2\n2020-01-02,3,4\n", layout="single")
    samples = np.arange(1 * 3 * 2 * 2, dtype=np.float32).reshape(1, 3, 2, 2)
    frame = samples_frame(data, Forecast(samples))
    assert list(frame.columns) == ["item_id", "date", "target", "sample", "value"]
    assert len(frame) == 3 * 2 * 2
    path = frame[(frame["target"] == "b") & (frame["sample"] == 2)]
    assert path["value"].tolist() == samples[0, 2, :, 1].tolist()


def test_quantile_levels():
    assert quantile_levels("0.9, 0.1,0.5,0.1") == (0.1, 0.5, 0.9)
    assert [quantile_column(q) for q in (0.1, 0.05, 0.5)] == ["0.1", "0.05", "0.5"]
    for bad in ("0,0.5", "x", ""):
        with pytest.raises(InputError, match="quantile_levels"):  # a Python caller's error names the parameter
            quantile_levels(bad)


def test_plot_writes_png(tmp_path):
    from moirai_cli.plotting import plot_forecasts

    data = dataset("id,date,y\nA,2020-01-01,1\nA,2020-01-02,2\nA,2020-01-03,3\n")
    path = tmp_path / "p.png"
    plot_forecasts(data, Forecast(np.ones((1, 10, 2, 1), np.float32)), path)
    assert path.read_bytes()[:4] == b"\x89PNG" and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(InputError, match="PNG"):
        plot_forecasts(data, Forecast(np.ones((1, 10, 2, 1), np.float32)), tmp_path / "p.jpg")


def test_forecast_frame_of_a_quantile_forecast():
    from moirai_cli.forecasting.pipeline import DirectQuantileForecast

    data = dataset("symbol,date,price\nA,2020-01-01,1\nA,2020-02-01,2\nB,2020-01-01,3\nB,2020-03-01,4\n")
    values = np.cumsum(np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1), axis=1)  # (N, Q, H, V)
    forecast = DirectQuantileForecast(values, (0.1, 0.5, 0.9))
    frame = forecast_frame(data, forecast, [0.1, 0.5, 0.9])
    assert list(frame.columns) == ["symbol", "date", "mean", "0.1", "0.5", "0.9"] and len(frame) == 2 * 4
    np.testing.assert_array_equal(frame["0.9"], values[:, 2, :, 0].reshape(-1))
    np.testing.assert_array_equal(frame["mean"], frame["0.5"])
    with pytest.raises(InputError, match="no sample paths"):
        samples_frame(data, forecast)


@pytest.mark.parametrize(
    "text, kwargs, levels, samples, message",
    [
        ("mean,date,y\na,2020-01-01,1\na,2020-01-02,2\nb,2020-01-01,3\nb,2020-01-02,4\n", {}, [0.5], False,
         "the id column 'mean' has the name of a column of the forecast output"),
        ("0.5,date,y\na,2020-01-01,1\na,2020-01-02,2\n", {"id_column": "0.5"}, [0.1, 0.5], False, "the id column '0.5'"),
        ("target,date,u,v\na,2020-01-01,1,2\na,2020-01-02,2,3\n", {"id_column": "target", "target": ["u", "v"]}, [0.5], False,
         "the id column 'target'"),
        ("sample,date,y\na,2020-01-01,1\na,2020-01-02,2\n", {}, [0.5], True, "the id column 'sample' has the name of a column of the samples output"),
        ("value,y\n2020-01-01,1\n2020-01-02,2\n", {"timestamp_column": "value", "target": "y"}, [0.5], True, "the timestamp column 'value'"),
        ("item_id,a,b\n2020-01-01,1,2\n2020-01-02,2,3\n", {"timestamp_column": "item_id"}, [0.5], False,
         "the timestamp column is called 'item_id', the name the output gives the series ids"),
    ],
)
def test_key_columns_named_like_output_columns_are_refused(text, kwargs, levels, samples, message):
    # An id column called 'mean' was overwritten by the forecast: 3 series came out as 24 "ids".
    data = dataset(text, **kwargs)
    with pytest.raises(InputError, match=message):
        check_output_columns(data, levels, samples=samples)
    forecast = Forecast(np.zeros((len(data.series), 2, 2, len(data.target_names)), np.float32))
    with pytest.raises(InputError, match=message):
        (samples_frame(data, forecast) if samples else forecast_frame(data, forecast, levels))


def test_an_id_named_like_an_unwritten_column_is_fine():
    data = dataset("value,date,y\na,2020-01-01,1\na,2020-01-02,2\n", id_column="value")
    check_output_columns(data, [0.5])  # 'value' is only a column of the samples table
    frame = forecast_frame(data, Forecast(np.ones((1, 2, 2, 1), np.float32)), [0.5])
    assert frame["value"].tolist() == ["a", "a"]


def test_plot_shows_ids_with_dollar_signs_as_written(tmp_path):
    # An id containing `$...$` was read as mathtext: the plot crashed and the forecast was lost.
    pytest.importorskip("matplotlib")
    from moirai_cli.plotting import plot_forecasts

    data = dataset("id,date,y\n" + "".join(f"{name},2020-01-0{day},{day}\n" for name in (r"$\frac{$", "US$ 5$") for day in (1, 2, 3)))
    path = tmp_path / "p.png"
    plot_forecasts(data, Forecast(np.ones((2, 10, 2, 1), np.float32)), path)
    assert path.read_bytes()[:4] == b"\x89PNG"
