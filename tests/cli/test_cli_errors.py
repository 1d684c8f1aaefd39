"""Bad input and failures: one-line `error:` message, exit code, no traceback, no output file."""

from __future__ import annotations

from pathlib import Path

import pytest

from moirai_cli.engines import local as engine
from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.cli import app
from moirai_cli.errors import ModelError

GOOD = "id,date,y\nA,2021-01-01,1\nA,2021-01-02,2\nA,2021-01-03,3\n"


@pytest.mark.parametrize(
    "content, args, fragments",
    [
        (None, [], ["missing.csv", "no such file"]),
        ("", [], ["data.csv", "file is empty"]),
        ("id,date,y\n", [], ["data.csv", "no data rows"]),
        (
            "id,date,y\nA,2021-01-01,1\nA,2021-01-01,2\n",
            [],
            ["data.csv", "series 'A'", "duplicate timestamp", "rows 1 and 2"],
        ),
        ("id,date,y\nA,2021-01-01,1\nA,tomorrow,2\n", [], ["data.csv", "column 'date'", "row 2", "'tomorrow'"]),
        ("id,date,y\nA,2021-01-01,1\nA,2021-01-02,n/a!\nA,2021-01-03,1\n", [], ["column 'y'", "row 2", "not a number"]),
        (GOOD, ["--horizon", "0"], ["--horizon must be at least 1"]),
        (GOOD, ["-o", "out.xlsx"], ["out.xlsx", "cannot write this file type"]),
        (GOOD, ["--target", "nope"], ["no column 'nope'"]),
        (GOOD, ["--freq", "fortnightly"], ["--freq", "'fortnightly'"]),
        (GOOD, ["--known-covariates", "y"], ["--future"]),
        (GOOD, ["--device", "tpu"], ["--device", "'tpu'"]),
        (GOOD, ["--patch-size", "big"], ["--patch-size"]),
        (GOOD, ["--plot", "p.jpg"], ["PNG"]),
    ],
)
def test_bad_input_exit_2(runner, fake_model, tmp_path, monkeypatch, content, args, fragments, one_line_error):
    monkeypatch.chdir(tmp_path)
    name = "missing.csv" if content is None else "data.csv"
    if content is not None:
        Path(name).write_text(content)
    base = ["forecast", name, "--horizon", "2", "-o", "out.csv"]
    result = runner.invoke(app, base + args)
    one_line_error(result, 2, *fragments)
    assert not any(p.name.startswith(("out", ".out", "p.")) for p in tmp_path.iterdir())
    assert fake_model.calls == []


def test_missing_future_rows(runner, fake_model, tmp_path, one_line_error):
    data = tmp_path / "d.csv"
    data.write_text("id,date,y,promo\nA,2021-01-01,1,0\nA,2021-01-02,2,0\n")
    future = tmp_path / "f.csv"
    future.write_text("id,date,promo\nA,2021-01-03,1\n")
    result = runner.invoke(
        app, ["forecast", str(data), "-H", "2", "--known-covariates", "promo", "--future", str(future)]
    )
    one_line_error(result, 2, "f.csv", "series 'A'", "2021-01-04")


@pytest.mark.parametrize("failure", [ModelError("model 'x/y' not found on the Hub"), OSError("bad header\nin file")])
def test_unknown_or_broken_model_exit_1(runner, monkeypatch, tmp_path, failure, one_line_error):
    def from_pretrained(*args, **kwargs):
        raise failure

    monkeypatch.setattr(MoiraiForecaster, "from_pretrained", staticmethod(from_pretrained))
    data = tmp_path / "d.csv"
    data.write_text(GOOD)
    result = runner.invoke(app, ["forecast", str(data), "-H", "2", "--model", "x/y", "-o", str(tmp_path / "o.csv")])
    one_line_error(result, 1, "x/y" if isinstance(failure, OSError) else "not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_failure_mid_forecast_leaves_no_output(runner, fake_model, tmp_path, monkeypatch, one_line_error):
    monkeypatch.setattr(engine, "SERIES_PER_CHUNK", 1)
    calls = {"n": 0}
    original = fake_model.predict

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return original(*args, **kwargs)

    monkeypatch.setattr(fake_model, "predict", flaky)
    data = tmp_path / "d.csv"
    data.write_text(GOOD + "B,2021-01-01,1\nB,2021-01-02,2\n")
    out, samples = tmp_path / "o.parquet", tmp_path / "s.csv"
    result = runner.invoke(app, ["forecast", str(data), "-H", "2", "-o", str(out), "--samples-output", str(samples)])
    one_line_error(result, 1, "RuntimeError", "device lost", "--debug")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_debug_shows_the_traceback_and_keeps_the_exit_code(runner, fake_model, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("id,date,y\nA,2021-01-01,1\nA,2021-01-01,2\n")
    result = runner.invoke(app, ["forecast", str(data), "-H", "2", "--debug"])
    assert result.exit_code == 2  # bad input stays exit 2 with --debug (it was 1)
    assert "Traceback" in result.stderr and "InputError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "duplicate timestamp" in result.stderr


def test_missing_matplotlib_is_explained(runner, fake_model, tmp_path, monkeypatch, one_line_error):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    data = tmp_path / "d.csv"
    data.write_text(GOOD)
    result = runner.invoke(app, ["forecast", str(data), "-H", "2", "--plot", str(tmp_path / "p.png")])
    one_line_error(result, 1, "matplotlib", "pip install matplotlib")
