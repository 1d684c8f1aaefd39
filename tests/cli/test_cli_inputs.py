"""Inputs that used to give a wrong answer with exit 0, or destroy data: now right, or one line and exit 2."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.engines import local as engine
from moirai_cli.cli import app

DAYS = pd.date_range("2024-01-01", periods=40, freq="D")
FAST = ["--num-samples", "20", "--seed", "0", "--device", "cpu", "-q"]


def write(path: Path, dates, values) -> Path:
    pd.DataFrame({"date": list(dates), "y": values}).to_csv(path, index=False)
    return path


def test_day_first_file_is_forecast_after_its_last_day(runner, fake_model, tmp_path):
    data = write(tmp_path / "d.csv", DAYS.strftime("%d/%m/%Y"), np.arange(40.0))
    result = runner.invoke(app, ["forecast", str(data), "-H", "2"])
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(io.StringIO(result.stdout))["date"].tolist() == ["2024-02-10", "2024-02-11"]
    assert fake_model.calls[0]["target"][0][:, 0].tolist() == list(range(40))


def test_ambiguous_dates_are_refused_then_settled_by_option(runner, fake_model, tmp_path, one_line_error):
    data = write(tmp_path / "d.csv", DAYS[:10].strftime("%d/%m/%Y"), np.arange(10.0))
    one_line_error(runner.invoke(app, ["forecast", str(data), "-H", "2"]), 2, "d.csv", "column 'date'", "--dayfirst")
    settled = runner.invoke(app, ["forecast", str(data), "-H", "1", "--dayfirst"])
    assert settled.exit_code == 0 and "2024-01-11" in settled.stdout
    month_first = runner.invoke(app, ["forecast", str(data), "-H", "1", "--monthfirst"])
    assert month_first.exit_code == 0 and "2024-11-01" in month_first.stdout
    by_format = runner.invoke(app, ["forecast", str(data), "-H", "1", "--date-format", "%d/%m/%Y"])
    assert by_format.exit_code == 0 and "2024-01-11" in by_format.stdout
    both = runner.invoke(app, ["forecast", str(data), "-H", "1", "--dayfirst", "--date-format", "%d/%m/%Y"])
    one_line_error(both, 2, "--date-format")


def test_an_id_column_named_mean_is_refused_before_any_work(runner, fake_model, tmp_path, one_line_error):
    data = tmp_path / "d.csv"
    pd.DataFrame(
        {"mean": np.repeat(["a", "b", "c"], 5), "date": np.tile(DAYS[:5].strftime("%Y-%m-%d"), 3), "y": np.arange(15.0)}
    ).to_csv(data, index=False)
    out = tmp_path / "o.csv"
    one_line_error(runner.invoke(app, ["forecast", str(data), "-H", "2", "-o", str(out)]), 2, "id column 'mean'")
    assert fake_model.calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["-o", "{data}"], ["--output would overwrite the input file"]),
        (["-o", "o.csv", "--samples-output", "o.csv"], ["--output and --samples-output name the same file"]),
        (["--plot", "p.png"], ["--plot would overwrite the input file"]),  # p.png: a link to the data
        (["--samples-output", "-"], ["stdout already carries the forecast table"]),
    ],
)
def test_outputs_that_would_destroy_data_are_refused(runner, fake_model, tmp_path, monkeypatch, one_line_error, extra, fragments):
    # -o equal to the input replaced the input; --samples-output equal to -o dropped one of them.
    monkeypatch.chdir(tmp_path)
    data = write(tmp_path / "d.csv", DAYS[:5].strftime("%Y-%m-%d"), np.arange(5.0))
    (tmp_path / "p.png").symlink_to(data)
    before = data.read_bytes()
    args = [a.replace("{data}", "./d.csv") for a in extra]
    result = runner.invoke(app, ["forecast", "d.csv", "-H", "2", *args])
    one_line_error(result, 2, *fragments)
    assert data.read_bytes() == before and fake_model.calls == []


def test_evaluate_refuses_to_overwrite_its_input(runner, fake_model, tmp_path, one_line_error):
    data = write(tmp_path / "d.csv", DAYS[:20].strftime("%Y-%m-%d"), np.arange(20.0))
    before = data.read_bytes()
    one_line_error(runner.invoke(app, ["evaluate", str(data), "-H", "2", "-o", str(data)]), 2, "would overwrite")
    assert data.read_bytes() == before


def test_small_offset_and_huge_series_keep_their_scale(runner, tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    unit = np.sin(np.arange(60) / 4) + 0.2 * rng.normal(size=60)
    table = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=60).strftime("%Y-%m-%d"), "tiny": 1e-9 * unit,
                          "level": 1e12 + unit, "huge": 1e300 * unit})
    data = tmp_path / "d.csv"
    table.to_csv(data, index=False)
    out = tmp_path / "o.parquet"
    result = runner.invoke(app, ["forecast", str(data), "-H", "4", "--model", str(tiny_checkpoint), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.stderr
    assert "Warning" not in result.stderr and "warning" not in result.stderr
    forecast = pd.read_parquet(out).set_index("item_id")
    for name, scale, level in (("tiny", 1e-9, 0.0), ("level", 1.0, 1e12), ("huge", 1e300, 0.0)):
        rows = forecast.loc[name]
        band = (rows["0.9"] - rows["0.1"]) / scale
        middle = (rows["0.5"] - level) / scale
        assert np.isfinite(rows[["mean", "0.1", "0.5", "0.9"]].to_numpy()).all(), name
        assert (band > 0.05).all() and (band < 20).all(), (name, band.tolist())  # a band like the unit series'
        assert (middle.abs() < 10).all(), (name, middle.tolist())


def test_a_million_step_horizon_is_refused_leaving_no_file(runner, tiny_checkpoint, tmp_path, one_line_error):
    hours = pd.date_range("2024-01-01", periods=40, freq="h").strftime("%Y-%m-%d %H:%M")  # a million hours: 114 years
    data = write(tmp_path / "d.csv", hours, np.arange(40.0))
    out = tmp_path / "o.csv"
    result = runner.invoke(app, ["forecast", str(data), "-H", "1000000", "--model", str(tiny_checkpoint), "-o", str(out)])
    one_line_error(result, 2, "horizon 1000000", "available", "a horizon of at most")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]  # no output, no 0-byte temporary file


def test_infinite_values_exit_2_or_are_read_as_missing_on_request(runner, fake_model, tmp_path, one_line_error):
    values = np.arange(10.0)
    values[3] = np.inf
    data = write(tmp_path / "d.csv", DAYS[:10].strftime("%Y-%m-%d"), values)
    one_line_error(runner.invoke(app, ["forecast", str(data), "-H", "2"]), 2, "column 'y', row 4", "'inf' is not a finite number")
    result = runner.invoke(app, ["forecast", str(data), "-H", "2", "--inf-as-missing"])
    assert result.exit_code == 0 and "warning: " in result.stderr and "1 infinite value(s) read as missing" in result.stderr
    assert np.isnan(fake_model.calls[0]["target"][0][3, 0])


def test_monthly_data_with_freq_daily_warns(runner, fake_model, tmp_path):
    data = write(tmp_path / "m.csv", pd.date_range("2020-01-01", periods=24, freq="MS").strftime("%Y-%m-%d"), np.arange(24.0))
    result = runner.invoke(app, ["forecast", str(data), "-H", "2", "--freq", "D"])
    assert result.exit_code == 0 and "warning: " in result.stderr and "(97% for 'y')" in result.stderr


def test_misleading_messages_now_say_what_is_wrong(runner, fake_model, tmp_path, one_line_error):
    semi = tmp_path / "semi.csv"
    semi.write_text("date;y\n2020-01-01;1\n2020-01-02;2\n2020-01-03;3\n")
    assert runner.invoke(app, ["forecast", str(semi), "-H", "1"]).exit_code == 0
    empty = tmp_path / "empty"
    empty.mkdir()  # a folder is a dataset; one without data files says so
    one_line_error(runner.invoke(app, ["forecast", str(empty), "-H", "1"]), 2, "no .csv, .csv.gz, .parquet or .pq file is in this folder")
    late = write(tmp_path / "late.csv", ["2262-04-01", "2262-04-02", "2262-04-03"], [1.0, 2.0, 3.0])
    one_line_error(runner.invoke(app, ["forecast", str(late), "-H", "30"]), 2, "run past 2262-04-11")
    early = write(tmp_path / "early.csv", ["1600-01-01", "1600-01-02", "1600-01-03"], [1.0, 2.0, 3.0])
    one_line_error(runner.invoke(app, ["forecast", str(early), "-H", "1"]), 2, "outside the dates pandas can hold")
    banana = runner.invoke(app, ["forecast", str(semi), "-H", "1", "--freq", "banana"])
    one_line_error(banana, 2, "--freq: 'banana' is not a pandas frequency")
    assert "Invalid frequency" not in banana.stderr


def test_a_full_disk_names_the_output_file(runner, fake_model, tmp_path, monkeypatch, one_line_error):
    import errno

    data = write(tmp_path / "d.csv", DAYS[:10].strftime("%Y-%m-%d"), np.arange(10.0))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    out = tmp_path / "o.csv"
    one_line_error(runner.invoke(app, ["forecast", str(data), "-H", "2", "-o", str(out)]), 1, f"{out}: cannot write: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_streamed_parquet_output_keeps_float64_forecasts_after_float32_ones(runner, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "SERIES_PER_CHUNK", 1)
    rng = np.random.default_rng(1)
    unit = np.sin(np.arange(30) / 3) + 0.1 * rng.normal(size=30)
    table = pd.DataFrame({"item_id": np.repeat(["plain", "level"], 30), "date": np.tile(DAYS[:30].strftime("%Y-%m-%d"), 2),
                          "y": np.r_[unit, 1e12 + unit]})
    data = tmp_path / "d.csv"
    table.to_csv(data, index=False)
    out = tmp_path / "o.parquet"
    result = runner.invoke(app, ["forecast", str(data), "-H", "2", "--model", str(tiny_checkpoint), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.stderr
    forecast = pd.read_parquet(out).set_index("item_id")
    assert forecast["0.5"].dtype == np.float64
    assert (abs(forecast.loc["level", "0.5"] - 1e12) < 10).all() and (forecast.loc["level", "0.9"] > forecast.loc["level", "0.1"]).all()
