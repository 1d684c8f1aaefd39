"""`moirai evaluate` end to end with the tiny checkpoint: every sample file, outputs, plot and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.cli import app
from moirai_cli.evaluation import METRIC_INFO, METRIC_NAMES

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
FAST = ["--num-samples", "8", "--context-length", "64", "--seed", "0", "--device", "cpu"]
SERIES = {
    "stocks.csv": 5,
    "stocks.parquet": 5,
    "us_employment.csv": 22,
    "seattle_temps.csv": 1,
    "seattle_weather.csv": 4,
    "iowa_electricity.csv": 3,
}


@pytest.mark.parametrize("name", sorted(SERIES))
def test_every_sample_file_prints_the_table_and_writes_windows(runner, tiny_checkpoint, tmp_path, name):
    out = tmp_path / "windows.csv"
    args = [
        "evaluate",
        str(SAMPLES / name),
        "-H",
        "3",
        "--windows",
        "2",
        "--model",
        str(tiny_checkpoint),
        "-o",
        str(out),
    ]
    result = runner.invoke(app, args + FAST)
    assert result.exit_code == 0, result.stderr
    for name_ in METRIC_NAMES:
        assert METRIC_INFO[name_].label in result.stdout
    assert f"evaluated {SERIES[name]} series, 0 skipped as too short, 2 window(s) of 3 steps" in result.stderr
    windows = pd.read_csv(out)
    assert len(windows) == 2 * SERIES[name] and set(windows["window"]) == {0, 1}
    assert {f"model_{m}" for m in METRIC_NAMES} | {f"baseline_{m}" for m in METRIC_NAMES} <= set(windows.columns)
    assert windows["model_mae"].notna().all()


def test_windows_stride_season_and_plot(runner, tiny_checkpoint, tmp_path):
    out, png = tmp_path / "w.parquet", tmp_path / "p.png"
    args = [
        "evaluate",
        str(SAMPLES / "stocks.parquet"),
        "-H",
        "2",
        "--windows",
        "3",
        "--stride",
        "1",
        "--season-length",
        "4",
        "--quantiles",
        "0.1,0.5,0.9",
        "--model",
        str(tiny_checkpoint),
        "-o",
        str(out),
        "--plot",
        str(png),
    ]
    result = runner.invoke(app, args + FAST)
    assert result.exit_code == 0, result.stderr
    assert "season length 4" in result.stdout and "stride 1" in result.stdout
    windows = pd.read_parquet(out)
    rows = windows[windows["symbol"] == "MSFT"]["window_start_row"].tolist()
    assert rows == [rows[0], rows[0] + 1, rows[0] + 2]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "w.parquet"]


def test_per_window_csv_on_stdout_puts_the_table_on_stderr(runner, tiny_checkpoint):
    args = ["evaluate", str(SAMPLES / "iowa_electricity.csv"), "-H", "2", "--model", str(tiny_checkpoint), "-o", "-"]
    result = runner.invoke(app, args + FAST)
    assert result.exit_code == 0, result.stderr
    windows = pd.read_csv(io.StringIO(result.stdout))
    assert len(windows) == 3 and "Seasonal naive" in result.stderr
    quiet = runner.invoke(app, args + FAST + ["-q"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == result.stdout


def test_multivariate_with_covariates_and_json_output(runner, tiny_checkpoint, tmp_path):
    weather = pd.read_csv(SAMPLES / "seattle_weather.csv").tail(80)
    weather.to_csv(tmp_path / "w.csv", index=False)
    args = [
        "evaluate",
        str(tmp_path / "w.csv"),
        "-H",
        "3",
        "--target",
        "temp_max,temp_min",
        "--past-covariates",
        "precipitation",
        "--known-covariates",
        "wind",
        "--model",
        str(tiny_checkpoint),
        "-o",
        str(tmp_path / "w.json"),
    ]
    result = runner.invoke(app, args + FAST)
    assert result.exit_code == 0, result.stderr
    rows = json.loads((tmp_path / "w.json").read_text())
    assert [row["target"] for row in rows] == ["temp_max", "temp_min"]


def test_too_short_series_are_skipped_and_counted(runner, tiny_checkpoint, tmp_path):
    data = tmp_path / "d.csv"
    short = pd.DataFrame({"id": "short", "date": pd.date_range("2021-01-01", periods=3), "y": [1.0, 2.0, 3.0]})
    long = pd.DataFrame({"id": "long", "date": pd.date_range("2021-01-01", periods=40), "y": range(40)})
    pd.concat([short, long]).to_csv(data, index=False)
    result = runner.invoke(app, ["evaluate", str(data), "-H", "3", "--model", str(tiny_checkpoint), *FAST])
    assert result.exit_code == 0, result.stderr
    assert "evaluated 1 series, 1 skipped as too short" in result.stderr
    assert (
        "warning: skipped series 'short': too short for 1 window(s) of 3 steps 3 apart (it needs more than 3 rows, "
        "with an observed value before the first window)\n"
    ) in result.stderr


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--windows", "0"], ["--windows must be at least 1, got 0"]),
        (["--stride", "0"], ["--stride must be at least 1"]),
        (["--season-length", "-1"], ["--season-length must be at least 1"]),
        (["-H", "0"], ["--horizon must be at least 1"]),
        (["-H", "500"], ["no series is long enough", "horizon 500"]),
        (["--windows", "40", "--stride", "20"], ["no series is long enough for 40 window(s)"]),
        (["--quantiles", "0.5,2"], ["--quantiles"]),
        (["--plot", "p.svg"], ["PNG"]),
        (["-o", "w.txt"], ["w.txt", "cannot write this file type"]),
        (["--known-covariates", "nope"], ["no column 'nope'"]),
    ],
)
def test_bad_input_exit_2(runner, tiny_checkpoint, tmp_path, monkeypatch, one_line_error, args, fragments):
    monkeypatch.chdir(tmp_path)
    base = ["evaluate", str(SAMPLES / "iowa_electricity.csv"), "-H", "2", "--model", str(tiny_checkpoint), "-q"]
    result = runner.invoke(app, base + args)
    one_line_error(result, 2, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_outputs_keep_the_input_id_column_and_date_the_cutoff(runner, tiny_checkpoint, tmp_path):
    windows_file, forecasts_file = tmp_path / "w.csv", tmp_path / "f.parquet"
    args = ["evaluate", str(SAMPLES / "stocks.csv"), "-H", "2", "--windows", "2", "--model", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, *FAST, "-o", str(windows_file), "--forecasts-output", str(forecasts_file)])
    assert result.exit_code == 0, result.stderr
    stocks = pd.read_csv(SAMPLES / "stocks.csv", parse_dates=["date"])
    msft = stocks[stocks["symbol"] == "MSFT"].reset_index(drop=True)  # one row per month, no gaps
    windows = pd.read_csv(windows_file, parse_dates=["cutoff", "forecast_start"])
    assert list(windows.columns[:5]) == ["symbol", "window", "cutoff", "window_start_row", "forecast_start"]
    rows = windows[windows["symbol"] == "MSFT"]
    starts = [len(msft) - 4, len(msft) - 2]  # windows of 2 steps, 2 apart, cut from the end
    assert rows["window_start_row"].tolist() == starts
    assert rows["cutoff"].tolist() == msft["date"][[s - 1 for s in starts]].tolist()  # the forecast origin
    assert rows["forecast_start"].tolist() == msft["date"][starts].tolist()
    forecasts = pd.read_parquet(forecasts_file)
    assert list(forecasts.columns[:5]) == ["symbol", "window", "step", "timestamp", "actual"]
    assert len(forecasts) == 5 * 2 * 2 and {"model_mean", "model_0.5", "baseline_0.5"} <= set(forecasts.columns)
    last = forecasts[(forecasts["symbol"] == "MSFT") & (forecasts["window"] == 1)]
    assert last["actual"].tolist() == pytest.approx(msft["price"].tail(2).tolist())
    assert f"-> {windows_file} -> {forecasts_file}" in result.stderr


def test_forecasts_on_stdout_put_the_table_on_stderr_and_two_tables_on_stdout_are_refused(
    runner, tiny_checkpoint, one_line_error
):
    args = ["evaluate", str(SAMPLES / "iowa_electricity.csv"), "-H", "2", "--model", str(tiny_checkpoint), *FAST]
    result = runner.invoke(app, [*args, "--forecasts-output", "-"])
    assert result.exit_code == 0, result.stderr
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 3 * 2 and "Seasonal naive" in result.stderr
    refused = runner.invoke(app, [*args, "-o", "-", "--forecasts-output", "-"])
    one_line_error(refused, 2, "two tables to stdout")


def test_an_id_column_named_like_an_output_column_is_refused(runner, tiny_checkpoint, tmp_path, one_line_error):
    stocks = pd.read_csv(SAMPLES / "stocks.csv").rename(columns={"symbol": "window"})
    stocks.to_csv(tmp_path / "d.csv", index=False)
    args = ["evaluate", str(tmp_path / "d.csv"), "-H", "2", "--id-column", "window", "--model", str(tiny_checkpoint)]
    result = runner.invoke(app, [*args, *FAST, "-o", str(tmp_path / "w.csv")])
    one_line_error(result, 2, "id column 'window'", "rename it")


def test_evaluate_seed_help_speaks_of_series(runner):
    result = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert "the same seed gives the same samples for a series, whatever else is in the file" in " ".join(result.stdout.split())


def test_evaluate_progress_counts_series_times_windows(runner, tiny_checkpoint):
    args = ["evaluate", str(SAMPLES / "stocks.csv"), "-H", "2", "--windows", "2", "--model", str(tiny_checkpoint), *FAST]
    result = runner.invoke(app, args, env={"FORCE_COLOR": "1", "COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    assert "10/10" in [line for line in result.stderr.split("\r") if "evaluating" in line][-1]


def test_actuals_reach_the_metrics_unrounded(runner, tiny_checkpoint, tmp_path):
    values = 1e8 + np.arange(40) % 4 * 0.25  # a float32 keeps only 1e8
    frame = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=40, freq="D"), "y": values})
    frame.to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "f.csv"
    args = ["evaluate", str(tmp_path / "d.csv"), "-H", "4", "--model", str(tiny_checkpoint), *FAST, "--forecasts-output", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(out)["actual"].tolist() == values[-4:].tolist()
