"""`moirai forecast` with the real engine on the tiny test checkpoint (small settings, seconds on CPU)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.cli import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data"
FAST = ["--num-samples", "8", "--context-length", "64", "--seed", "0", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def checkpoint(request) -> str:
    """The suite's tiny_checkpoint fixture when defined, else the checked-in tiny checkpoint folder."""
    try:
        path = Path(request.getfixturevalue("tiny_checkpoint"))
    except pytest.FixtureLookupError:
        path = ROOT / "tests" / "fixtures" / "tiny-moe"
    if not (path / "config.json").exists():
        pytest.skip("no tiny test checkpoint available")
    return str(path)


def test_long_csv_to_parquet_is_reproducible(runner, checkpoint, tmp_path):
    outputs = []
    for name in ("a.parquet", "b.parquet"):
        args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "3", "--model", checkpoint, "-o", str(tmp_path / name)]
        result = runner.invoke(app, args + FAST)
        assert result.exit_code == 0, result.stderr
        outputs.append(pd.read_parquet(tmp_path / name))
    frame = outputs[0]
    assert list(frame.columns[:3]) == ["symbol", "date", "mean"] and len(frame) == 15
    assert np.isfinite(frame.iloc[:, 2:].to_numpy()).all()
    pd.testing.assert_frame_equal(outputs[0], outputs[1])


def test_wide_parquet_input_and_samples(runner, checkpoint, tmp_path):
    wide = pd.read_csv(SAMPLES / "us_employment.csv").iloc[:, :4]
    wide.to_parquet(tmp_path / "wide.parquet")
    args = [
        "forecast",
        str(tmp_path / "wide.parquet"),
        "-H",
        "2",
        "--model",
        checkpoint,
        "--samples-output",
        str(tmp_path / "s.csv"),
        "--quantiles",
        "0.1,0.9",
    ]
    result = runner.invoke(app, args + FAST)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame.columns) == ["item_id", "month", "mean", "0.1", "0.9"] and len(frame) == 3 * 2
    assert len(pd.read_csv(tmp_path / "s.csv")) == 3 * 8 * 2


def test_single_series_from_stdin(runner, checkpoint):
    text = (SAMPLES / "seattle_temps.csv").read_text()
    result = runner.invoke(app, ["forecast", "-", "-H", "4", "--model", checkpoint, *FAST], input=text)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert frame["date"].tolist()[0] == "2011-01-01 00:00:00" and len(frame) == 4


def test_multivariate_with_covariates(runner, checkpoint, tmp_path):
    weather = pd.read_csv(SAMPLES / "seattle_weather.csv").tail(60)
    weather.iloc[:-3].to_csv(tmp_path / "h.csv", index=False)
    weather.iloc[-3:][["date", "wind"]].to_csv(tmp_path / "f.csv", index=False)
    args = [
        "forecast",
        str(tmp_path / "h.csv"),
        "-H",
        "3",
        "--model",
        checkpoint,
        "--target",
        "temp_max,temp_min",
        "--past-covariates",
        "precipitation",
        "--known-covariates",
        "wind",
        "--future",
        str(tmp_path / "f.csv"),
        "-o",
        str(tmp_path / "o.json"),
    ]
    result = runner.invoke(app, args + FAST)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_json(tmp_path / "o.json")
    assert list(frame.columns[:4]) == ["item_id", "date", "target", "mean"] and len(frame) == 2 * 3


def test_bfloat16_weights_give_a_close_forecast_and_bad_dtypes_are_refused(runner, checkpoint, tmp_path):
    frames = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.csv"
        args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "3", "--model", checkpoint, "--dtype", dtype, "-o", str(out)]
        result = runner.invoke(app, args + FAST)
        assert result.exit_code == 0, result.stderr
        frames[dtype] = pd.read_csv(out)
    assert frames["float32"].shape == frames["bfloat16"].shape
    scale = frames["float32"]["0.5"].abs().mean()
    assert (frames["float32"]["0.5"] - frames["bfloat16"]["0.5"]).abs().mean() < 0.5 * scale
    result = runner.invoke(app, ["forecast", str(SAMPLES / "stocks.csv"), "-H", "3", "--model", checkpoint, "--dtype", "float16"])
    assert result.exit_code == 2 and "--dtype" in result.stderr


def test_context_beyond_the_checkpoints_sequence_length_is_warned(runner, checkpoint):
    base = ["forecast", str(SAMPLES / "seattle_temps.csv"), "-H", "2", "--model", checkpoint, "--num-samples", "4", "-q"]
    long = runner.invoke(app, [*base, "--context-length", "9000"])  # the file has 8,759 hourly values
    assert long.exit_code == 0, long.stderr
    assert long.stderr == (
        "warning: --context-length 9000 gives sequences longer than this checkpoint's 512 tokens (at most 8176 steps "
        "of context with horizon 2, patch size 16 and 1 token(s) per step); forecasts may degrade: use a shorter "
        "--context-length\n"
    )
    fits = runner.invoke(app, [*base, "--context-length", "8176"])
    assert fits.exit_code == 0 and fits.stderr == ""
