"""`moirai evaluate --model A --model B ...`: one leaderboard of a folder of each family on the sample data."""

from __future__ import annotations

import io
import weakref
from pathlib import Path

import pandas as pd
import pytest

from moirai_cli.cli import app
from moirai_cli.evaluation import METRIC_NAMES
from moirai_cli.forecasting.pipeline import MoiraiForecaster

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
FAST = ["--num-samples", "8", "--context-length", "64", "--seed", "0", "--device", "cpu", "--patch-size", "16"]
FAMILIES = ("moirai-1", "moirai-moe", "moirai-2")


def model_args(checkpoints: dict[str, Path], families=FAMILIES) -> list[str]:
    return [arg for family in families for arg in ("--model", str(checkpoints[family]))]


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Record each model load; each load checks that no forecaster loaded before is still alive."""
    real = MoiraiForecaster.from_pretrained.__func__
    loaded: list[str] = []
    alive: list[weakref.ref] = []

    def from_pretrained(cls, name_or_path, **kwargs):
        assert all(ref() is None for ref in alive), "a model was loaded while the previous one was still in memory"
        forecaster = real(cls, name_or_path, **kwargs)
        alive.append(weakref.ref(forecaster))
        loaded.append(Path(name_or_path).name)
        return forecaster

    monkeypatch.setattr(MoiraiForecaster, "from_pretrained", classmethod(from_pretrained))
    return loaded


def test_leaderboard_of_a_folder_of_each_family_on_the_sample_data(runner, family_checkpoints, loads, tmp_path):
    out = tmp_path / "windows.csv"
    args = ["evaluate", str(SAMPLES / "stocks.csv"), "-H", "6", "--windows", "2", *model_args(family_checkpoints)]
    result = runner.invoke(app, args + FAST + ["-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert loads == ["tiny-moirai-1", "tiny-moe", "tiny-moirai-2"]  # in turn, each after the previous was freed
    table = result.stdout
    assert "Leaderboard: 5 series, 2 window(s) of 6 steps, stride 6, season length 12" in table
    rows = [line for line in table.splitlines() if line.startswith("│")]
    labels = [row.split("│")[1].strip() for row in rows]
    assert labels == [str(family_checkpoints[f]) for f in FAMILIES] + ["seasonal naive"]
    assert [row.split("│")[2].strip() for row in rows] == ["Moirai 1.x", "Moirai-MoE", "Moirai 2.0", "baseline"]
    assert sum(row.count("*") for row in rows) >= len(METRIC_NAMES) + 2  # every column has a best
    windows = pd.read_csv(out)
    assert list(windows.columns[:4]) == ["model", "symbol" if "symbol" in windows else "item_id", "window", "cutoff"]
    assert list(windows["model"].unique()) == labels
    assert (windows.groupby("model").size() == 5 * 2).all()
    assert windows[list(METRIC_NAMES[:2])].notna().all().all()
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("evaluated 5 series, 0 skipped as too short, 2 window(s) of 6 steps, 3 models, device cpu")


def test_each_models_rows_are_its_single_model_backtest(runner, family_checkpoints, tmp_path):
    board_out, single_out = tmp_path / "board.csv", tmp_path / "single.csv"
    base = ["evaluate", str(SAMPLES / "iowa_electricity.csv"), "-H", "3", "--windows", "2"]
    board = runner.invoke(app, base + model_args(family_checkpoints, ("moirai-moe", "moirai-2")) + FAST + ["-o", str(board_out)])
    single = runner.invoke(app, base + ["--model", str(family_checkpoints["moirai-moe"])] + FAST + ["-o", str(single_out)])
    assert board.exit_code == single.exit_code == 0, (board.stderr, single.stderr)
    rows = pd.read_csv(board_out)
    alone = pd.read_csv(single_out)
    moe = rows[rows["model"] == str(family_checkpoints["moirai-moe"])].reset_index(drop=True)
    baseline = rows[rows["model"] == "seasonal naive"].reset_index(drop=True)
    for name in METRIC_NAMES:
        pd.testing.assert_series_equal(moe[name], alone[f"model_{name}"], check_names=False)
        pd.testing.assert_series_equal(baseline[name], alone[f"baseline_{name}"], check_names=False)


def test_per_window_csv_on_stdout_puts_the_leaderboard_on_stderr(runner, family_checkpoints):
    args = ["evaluate", str(SAMPLES / "iowa_electricity.csv"), "-H", "2", *model_args(family_checkpoints, ("moirai-moe", "moirai-2"))]
    result = runner.invoke(app, args + FAST + ["-o", "-"])
    assert result.exit_code == 0, result.stderr
    windows = pd.read_csv(io.StringIO(result.stdout))
    assert len(windows) == 3 * 3 and "Leaderboard" in result.stderr
    quiet = runner.invoke(app, args + FAST + ["-o", "-", "-q"])
    # -q keeps warnings only: the random tiny Moirai 2.0's quantiles cross, which is a warning
    assert quiet.exit_code == 0 and quiet.stdout == result.stdout
    assert all(line.startswith("warning: ") and "crossing quantiles" in line for line in quiet.stderr.splitlines())


def test_num_samples_is_noted_for_each_quantile_model(runner, family_checkpoints):
    args = ["evaluate", str(SAMPLES / "iowa_electricity.csv"), "-H", "2", *model_args(family_checkpoints, ("moirai-moe", "moirai-2"))]
    result = runner.invoke(app, args + FAST)
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "--num-samples" in line]
    assert notes == [f"note: '{family_checkpoints['moirai-2']}' (Moirai 2.0) predicts quantiles directly; --num-samples does not apply"]


@pytest.mark.parametrize(
    "families, extra, fragments",
    [
        (("moirai-moe", "moirai-1"), ["--decoding", "cached"], ["--decoding cached: '", "tiny-moirai-1' is a Moirai 1.x checkpoint and offers only exact"]),
        (("moirai-1", "moirai-moe"), ["--patch-size", "32"], ["--patch-size 32 is not one of the sizes of '", "tiny-moe' (Moirai-MoE): [16]"]),
        (("moirai-moe", "moirai-moe"), [], ["--model '", "tiny-moe' is given more than once"]),
        (("moirai-moe", "moirai-2"), ["--plot", "p.png"], ["--plot draws one model's forecasts: give a single --model"]),
    ],
)
def test_options_are_checked_against_every_model_before_any_loads(
    runner, family_checkpoints, loads, tmp_path, monkeypatch, one_line_error, families, extra, fragments
):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", str(SAMPLES / "stocks.csv"), "-H", "6", *model_args(family_checkpoints, families), "-o", "w.csv"]
    result = runner.invoke(app, args + ["--device", "cpu"] + extra)
    one_line_error(result, 2, *fragments)
    assert loads == [] and list(tmp_path.iterdir()) == []


def test_a_model_that_cannot_be_found_stops_the_run_before_any_loads(runner, family_checkpoints, loads, tmp_path, one_line_error):
    missing = tmp_path / "nowhere"
    args = ["evaluate", str(SAMPLES / "stocks.csv"), "-H", "6", "--model", str(family_checkpoints["moirai-moe"]), "--model", str(missing)]
    result = runner.invoke(app, args + ["--device", "cpu"])
    one_line_error(result, 1, str(missing))
    assert loads == []
