"""`moirai forecast` end to end with a fake forecaster: layouts, formats, covariates, options."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from moirai_cli.engines import local as engine
from moirai_cli.cli import app

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
QUANTILE_COLUMNS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


def read_stdout(text: str) -> pd.DataFrame:
    """Parse CSV written to stdout."""
    return pd.read_csv(io.StringIO(text))


@pytest.mark.parametrize(
    "name, id_column, ts_column, n_series",
    [
        ("stocks.csv", "symbol", "date", 5),
        ("stocks.parquet", "symbol", "date", 5),
        ("us_employment.csv", "item_id", "month", 22),
        ("seattle_temps.csv", "item_id", "date", 1),
        ("iowa_electricity.csv", "source", "year", 3),
    ],
)
def test_sample_files_every_layout(runner, fake_model, name, id_column, ts_column, n_series):
    result = runner.invoke(app, ["forecast", str(SAMPLES / name), "--horizon", "4", "--seed", "0"])
    assert result.exit_code == 0, result.stderr
    frame = read_stdout(result.stdout)
    assert list(frame.columns) == [id_column, ts_column, "mean", *QUANTILE_COLUMNS]
    assert len(frame) == 4 * n_series and frame[id_column].nunique() == n_series
    assert (frame["0.1"] <= frame["0.9"]).all()
    assert "layout" in result.stderr and f"forecast {n_series} series, horizon 4" in result.stderr


def test_predict_receives_arrays_and_settings(runner, fake_model):
    args = [
        "forecast",
        str(SAMPLES / "stocks.csv"),
        "-H",
        "2",
        "--seed",
        "7",
        "--num-samples",
        "5",
        "--context-length",
        "64",
        "--batch-size",
        "3",
        "--patch-size",
        "auto",
        "--decoding",
        "cached",
        "--model",
        "some/model",
        "--device",
        "cpu",
        "--revision",
        "main",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    (call,) = fake_model.calls
    assert call["horizon"] == 2 and call["seed"] == 7 and call["num_samples"] == 5
    assert (call["context_length"], call["batch_size"], call["patch_size"], call["decoding"]) == (
        64,
        3,
        "auto",
        "cached",
    )
    assert all(t.shape[1] == 1 and t.dtype == np.float64 for t in call["target"])  # float64 from the data layer
    assert fake_model.loads == [
        ("some/model", {"revision": "main", "cache_dir": None, "device": "cpu", "dtype": torch.float32, "progress": True})
    ]


def test_parquet_json_and_samples_outputs(runner, fake_model, tmp_path):
    out, samples = tmp_path / "f.parquet", tmp_path / "s.json"
    result = runner.invoke(
        app,
        [
            "forecast",
            str(SAMPLES / "stocks.csv"),
            "-H",
            "3",
            "--num-samples",
            "4",
            "-o",
            str(out),
            "--samples-output",
            str(samples),
            "--quantiles",
            "0.05,0.5,0.95",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["symbol", "date", "mean", "0.05", "0.5", "0.95"]
    assert pd.api.types.is_datetime64_any_dtype(frame["date"])
    records = json.loads(samples.read_text())
    assert len(records) == 5 * 4 * 3 and set(records[0]) == {"symbol", "date", "sample", "value"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "s.json"]


def test_stdin_to_stdout_with_gap(runner, fake_model):
    text = "item_id,timestamp,target\nA,2021-01-01,1\nA,2021-01-02,2\nA,2021-01-04,4\nA,2021-01-05,5\n"
    result = runner.invoke(app, ["forecast", "-", "-H", "2", "--quiet"], input=text)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    frame = read_stdout(result.stdout)
    assert frame["timestamp"].tolist() == ["2021-01-06", "2021-01-07"]
    assert np.isnan(fake_model.calls[0]["target"][0][2])


def test_multivariate_with_covariates_and_future_file(runner, fake_model, tmp_path):
    dates = pd.date_range("2022-01-01", periods=6, freq="D")
    history = pd.DataFrame(
        {
            "id": ["A"] * 6 + ["B"] * 6,
            "date": list(dates) * 2,
            "t1": np.arange(12.0),
            "t2": np.arange(12.0) * 2,
            "rain": np.ones(12),
            "promo": np.zeros(12),
        }
    )
    future_dates = pd.date_range("2022-01-07", periods=3, freq="D")
    future = pd.DataFrame({"id": ["A"] * 3 + ["B"] * 3, "date": list(future_dates) * 2, "promo": [1.0] * 6})
    history.to_parquet(tmp_path / "h.parquet")
    future.to_csv(tmp_path / "f.csv", index=False)
    out = tmp_path / "out.csv"
    result = runner.invoke(
        app,
        [
            "forecast",
            str(tmp_path / "h.parquet"),
            "-H",
            "3",
            "--target",
            "t1",
            "--target",
            "t2",
            "--past-covariates",
            "rain",
            "--known-covariates",
            "promo",
            "--future",
            str(tmp_path / "f.csv"),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.stderr
    call = fake_model.calls[0]
    assert call["target"][0].shape == (6, 2) and call["past_covariates"][0].shape == (6, 1)
    assert call["known_covariates"][1][:, 0].tolist() == [0] * 6 + [1] * 3
    frame = pd.read_csv(out)
    assert list(frame.columns[:4]) == ["id", "date", "target", "mean"]
    assert len(frame) == 2 * 2 * 3 and set(frame["target"]) == {"t1", "t2"}


def test_quiet_and_skipped_series_warning(runner, fake_model):
    text = "id,date,y\nA,2021-01-01,1\nA,2021-01-02,2\nA,2021-01-03,3\nB,2021-01-01,\n"
    result = runner.invoke(app, ["forecast", "-", "-H", "1", "-q"], input=text)
    assert result.exit_code == 0
    assert result.stderr == "warning: skipped series 'B': no observed target value\n"
    assert read_stdout(result.stdout)["id"].tolist() == ["A"]


def test_chunks_and_plot(runner, fake_model, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "SERIES_PER_CHUNK", 2)
    out, png = tmp_path / "o.csv", tmp_path / "p.png"
    result = runner.invoke(
        app, ["forecast", str(SAMPLES / "stocks.csv"), "-H", "2", "--seed", "1", "-o", str(out), "--plot", str(png)]
    )
    assert result.exit_code == 0, result.stderr
    assert [c["seed"] for c in fake_model.calls] == [1, 1, 1]  # one seed; each series keyed by its id
    assert sorted(i for c in fake_model.calls for i in c["item_ids"]) == sorted(pd.read_csv(SAMPLES / "stocks.csv")["symbol"].unique())
    assert pd.read_csv(out)["symbol"].nunique() == 5
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("moirai-cli ")


def test_output_files_and_plot_get_normal_permissions(runner, fake_model, tmp_path):
    previous = os.umask(0o022)
    try:
        out, samples, png = tmp_path / "o.parquet", tmp_path / "s.csv", tmp_path / "p.png"
        args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "2", "-q", "-o", str(out), "--samples-output", str(samples)]
        result = runner.invoke(app, [*args, "--plot", str(png)])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.stderr
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {
        "o.parquet": 0o644, "s.csv": 0o644, "p.png": 0o644
    }


@pytest.mark.parametrize("args, env, expected", [(["--threads", "3"], "2", 3), ([], "2", 2)])
def test_threads_option_and_environment(runner, fake_model, monkeypatch, args, env, expected):
    before = torch.get_num_threads()
    seen = []
    predict = fake_model.predict
    monkeypatch.setattr(fake_model, "predict", lambda *a, **k: seen.append(torch.get_num_threads()) or predict(*a, **k))
    monkeypatch.setenv("MOIRAI_NUM_THREADS", env)
    try:
        result = runner.invoke(app, ["forecast", str(SAMPLES / "stocks.csv"), "-H", "2", "-q", *args])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.stderr
    assert seen == [expected]


def test_bad_thread_count_is_refused_before_reading(runner, fake_model, monkeypatch, one_line_error):
    monkeypatch.setenv("MOIRAI_NUM_THREADS", "many")
    result = runner.invoke(app, ["forecast", str(SAMPLES / "stocks.csv"), "-H", "2"])
    one_line_error(result, 2, "MOIRAI_NUM_THREADS: 'many' is not a whole number")
    assert fake_model.calls == []


@pytest.mark.parametrize(
    "name, shown, hidden",
    [("us_employment.csv", "22/22", "/?"), ("stocks.csv", "5 series", "/")],  # wide: read whole; long: streamed
)
def test_progress_shows_the_total_when_it_is_known(runner, fake_model, name, shown, hidden):
    result = runner.invoke(app, ["forecast", str(SAMPLES / name), "-H", "2"], env={"FORCE_COLOR": "1", "COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    bar = [line for line in result.stderr.split("\r") if "forecasting" in line][-1]
    assert shown in bar and hidden not in bar.replace("\x1b[", "")


def test_samples_and_forecast_both_on_stdout_are_refused(runner, fake_model, tmp_path, one_line_error):
    result = runner.invoke(app, ["forecast", str(SAMPLES / "stocks.csv"), "-H", "2", "--samples-output", "-"])
    one_line_error(result, 2, "--samples-output -", "stdout already carries the forecast table")
    assert fake_model.calls == []
    out = tmp_path / "f.csv"
    result = runner.invoke(app, ["forecast", str(SAMPLES / "stocks.csv"), "-H", "2", "-q", "-o", str(out), "--samples-output", "-"])
    assert result.exit_code == 0, result.stderr
    assert list(read_stdout(result.stdout).columns) == ["symbol", "date", "sample", "value"] and out.exists()
