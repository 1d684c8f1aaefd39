"""`moirai forecast`, `evaluate` and `download` with a checkpoint folder of each family (Moirai 1.x, MoE, 2.0)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moirai_cli.cli import app

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
FAMILIES = ["moirai-1", "moirai-moe", "moirai-2"]
FAST = ["--context-length", "64", "--seed", "0", "--device", "cpu"]
LEVELS = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


@pytest.mark.parametrize("family", FAMILIES)
def test_forecast_with_each_family(runner, family_checkpoints, family, tmp_path):
    out, plot = tmp_path / "f.csv", tmp_path / "f.png"
    args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "20", "--model", str(family_checkpoints[family]), "-o", str(out)]
    result = runner.invoke(app, args + FAST + ["--plot", str(plot)])
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["symbol", "date", "mean", *LEVELS] and len(frame) == 5 * 20
    values = frame[["mean", *LEVELS]].to_numpy()
    assert np.isfinite(values).all()
    assert plot.stat().st_size > 0
    if family == "moirai-2":  # the reference's mean of a quantile forecast is its median
        np.testing.assert_array_equal(frame["mean"], frame["0.5"])
    else:  # quantiles of sample paths never cross (a random quantile head's may)
        assert (np.diff(frame[LEVELS].to_numpy(), axis=1) >= 0).all()


def test_moirai_2_forecast_is_the_models_own_quantiles(runner, moirai2_checkpoint, tmp_path):
    from moirai_cli.data import load_dataset
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    out = tmp_path / "f.parquet"
    args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "70", "--model", str(moirai2_checkpoint), "-o", str(out), "-q"]
    assert runner.invoke(app, args + FAST).exit_code == 0
    dataset = load_dataset(str(SAMPLES / "stocks.csv"))
    forecaster = MoiraiForecaster.from_pretrained(str(moirai2_checkpoint), device="cpu")
    expected = forecaster.predict_dataset(dataset, 70, context_length=64)
    got = pd.read_parquet(out)[LEVELS].to_numpy().reshape(5, 70, 9).transpose(0, 2, 1)
    np.testing.assert_array_equal(got, expected.values[..., 0])


def test_moirai_2_refuses_samples_output_before_writing_anything(runner, moirai2_checkpoint, tmp_path):
    out, samples = tmp_path / "f.csv", tmp_path / "s.csv"
    args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "3", "--model", str(moirai2_checkpoint)]
    result = runner.invoke(app, args + ["-o", str(out), "--samples-output", str(samples)] + FAST)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --samples-output: Moirai 2.0 predicts quantiles, not sample paths; leave --samples-output out"
    )
    assert list(tmp_path.iterdir()) == []


def test_moirai_2_says_num_samples_does_not_apply(runner, moirai2_checkpoint):
    args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "3", "--model", str(moirai2_checkpoint)] + FAST
    plain = runner.invoke(app, args)
    with_samples = runner.invoke(app, args + ["--num-samples", "7"])
    assert plain.exit_code == with_samples.exit_code == 0
    note = "note: Moirai 2.0 predicts quantiles directly; --num-samples does not apply"
    assert note in with_samples.stderr.splitlines() and note not in plain.stderr
    assert with_samples.stdout == plain.stdout
    quiet = runner.invoke(app, args + ["--num-samples", "7", "-q"])
    # -q keeps warnings only: the random tiny model's quantiles cross, which is a warning
    assert quiet.exit_code == 0 and all(line.startswith("warning: ") and "crossing quantiles" in line for line in quiet.stderr.splitlines())


@pytest.mark.parametrize("family", ["moirai-1", "moirai-2"])
def test_cached_decoding_is_refused_for_one_pass_families(runner, family_checkpoints, family, tmp_path):
    out = tmp_path / "f.csv"
    args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "3", "--model", str(family_checkpoints[family]), "-o", str(out)]
    result = runner.invoke(app, args + ["--decoding", "cached"] + FAST)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --decoding cached: Moirai ")
    assert "offer only exact" in result.stderr and not out.exists()


def test_moirai_1_patch_size_auto_by_default_and_fixed_on_request(runner, moirai1_checkpoint):
    base = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "12", "--model", str(moirai1_checkpoint)] + FAST
    default, auto, fixed = (runner.invoke(app, base + extra) for extra in ([], ["--patch-size", "auto"], ["--patch-size", "128"]))
    assert default.exit_code == auto.exit_code == fixed.exit_code == 0
    assert default.stdout == auto.stdout and fixed.stdout != auto.stdout
    bad = runner.invoke(app, base + ["--patch-size", "12"])
    assert bad.exit_code == 2 and "not one of this checkpoint's sizes [8, 16, 32, 64, 128]" in bad.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_with_each_family(runner, family_checkpoints, family, tmp_path):
    out = tmp_path / "w.json"
    args = ["evaluate", str(SAMPLES / "stocks.csv"), "-H", "6", "--windows", "2", "--model", str(family_checkpoints[family])]
    result = runner.invoke(app, args + FAST + ["-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "MASE" in result.stdout and "WQL" in result.stdout
    windows = pd.DataFrame(json.loads(out.read_text()))
    assert len(windows) == 5 * 2 and np.isfinite(windows["model_mae"]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_download_checks_a_folder_of_each_family(runner, family_checkpoints, family):
    result = runner.invoke(app, ["download", str(family_checkpoints[family])])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(family_checkpoints[family])


def test_a_folder_of_no_known_family_is_one_line_exit_1(runner, tiny_checkpoint, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 512}))
    (folder / "model.safetensors").write_bytes((tiny_checkpoint / "model.safetensors").read_bytes())
    result = runner.invoke(app, ["download", str(folder)])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "not a Moirai checkpoint config" in line


def test_weights_of_another_family_are_named(runner, moirai1_checkpoint, moirai2_checkpoint, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "config.json").write_bytes((moirai1_checkpoint / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes((moirai2_checkpoint / "model.safetensors").read_bytes())
    result = runner.invoke(app, ["download", str(folder)])
    assert result.exit_code == 1
    assert "of a Moirai 1.x network (as config.json describes)" in result.stderr


def test_crossing_quantiles_are_counted_once_and_sorted_on_request(runner, moirai2_checkpoint):
    args = ["forecast", str(SAMPLES / "stocks.csv"), "-H", "6", "--model", str(moirai2_checkpoint), *FAST, "-q"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.stderr
    values = pd.read_csv(io.StringIO(plain.stdout))[LEVELS].to_numpy()
    crossing = int((np.diff(values, axis=1) < 0).any(axis=1).sum())
    assert 0 < crossing <= len(values)  # the random head's levels cross: the output keeps them as the model predicts them
    assert plain.stderr == (
        f"warning: {crossing} of {len(values)} forecast rows have crossing quantiles (a lower level above a higher one), "
        "as the model predicted them; pass --sort-quantiles to sort each row's quantiles\n"
    )
    fixed = runner.invoke(app, args + ["--sort-quantiles"])
    assert fixed.exit_code == 0 and fixed.stderr == ""
    sorted_values = pd.read_csv(io.StringIO(fixed.stdout))[LEVELS].to_numpy()
    np.testing.assert_array_equal(sorted_values, np.sort(values, axis=1))  # the model's own levels, each row in order


def test_evaluate_says_when_rows_crossed_and_scores_sorted_quantiles_on_request(runner, moirai2_checkpoint, tmp_path):
    args = ["evaluate", str(SAMPLES / "stocks.csv"), "-H", "6", "--windows", "2", "--model", str(moirai2_checkpoint), *FAST]
    plain = runner.invoke(app, args + ["-o", str(tmp_path / "plain.csv")])
    fixed = runner.invoke(app, args + ["-o", str(tmp_path / "fixed.csv"), "--sort-quantiles"])
    assert plain.exit_code == fixed.exit_code == 0
    assert "forecast rows have crossing quantiles" in plain.stderr and "crossing" not in fixed.stderr
    plain_wql, fixed_wql = (pd.read_csv(tmp_path / f"{name}.csv")["model_wql"] for name in ("plain", "fixed"))
    assert not np.allclose(plain_wql, fixed_wql)  # the option changes what is scored
    board = runner.invoke(app, args + ["--model", str(SAMPLES.parent / "tests" / "fixtures" / "tiny-moe")])
    assert board.exit_code == 0 and f"model '{moirai2_checkpoint}':" in board.stderr  # a leaderboard names the model


def test_predict_df_warns_about_crossing_quantiles_once(moirai2_checkpoint):
    import warnings

    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    forecaster = MoiraiForecaster.from_pretrained(str(moirai2_checkpoint), device="cpu")
    table = pd.read_csv(SAMPLES / "stocks.csv")
    with pytest.warns(UserWarning, match=r"forecast rows have crossing quantiles.*pass sort_quantiles=True") as caught:
        forecaster.predict_df(table, 6, context_length=64)
    assert sum("crossing" in str(w.message) for w in caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sorted_frame = forecaster.predict_df(table, 6, context_length=64, sort_quantiles=True)
    assert (np.diff(sorted_frame[LEVELS].to_numpy(), axis=1) >= 0).all()
