"""A tuned folder is a checkpoint like any other: `moirai forecast`, `moirai evaluate` (a leaderboard with its base), Ray and Spark load it.

The engines are skipped, with the reason, where Ray, pyspark or Java is missing.
"""

from __future__ import annotations

import os
import shutil
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from moirai_cli.cli import app
from moirai_cli.evaluation import compare
from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.training import FinetuneSettings, finetune

# pyspark warns that it does not fully support pandas 3, on every conversion (as in tests/test_spark.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
OPTIONS = dict(num_samples=10, context_length=48, seed=5)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, forecasters, employment):
    """The tiny Moirai-MoE checkpoint fine-tuned on the employment series: its folder."""
    folder = tmp_path_factory.mktemp("tuned") / "employment-moe"
    settings = FinetuneSettings(context_length=48, steps=24, batch_size=16, learning_rate=3e-3, validation_interval=8)
    finetune(forecasters["moirai-moe"], employment.series, 12, settings, folder, freq=employment.freq)
    return folder


@pytest.fixture(scope="module")
def table(employment) -> pd.DataFrame:
    """The employment series in the long layout, up to the last year."""
    return pd.concat(
        [pd.DataFrame({"item_id": r.item_id, "month": r.timestamps[:-12], "value": r.target[:-12, 0]}) for r in employment.series],
        ignore_index=True,
    )


@pytest.fixture(scope="module")
def local(tuned, table) -> pd.DataFrame:
    """The tuned folder's forecast of the table, by the library."""
    forecaster = MoiraiForecaster.from_pretrained(str(tuned), device="cpu")
    return forecaster.predict_df(table, 6, **OPTIONS).sort_values(["item_id", "month"]).reset_index(drop=True)


def test_moirai_forecast_loads_the_tuned_folder(tuned, table, local, tmp_path):
    table.to_csv(tmp_path / "jobs.csv", index=False)
    result = CliRunner().invoke(app, ["forecast", str(tmp_path / "jobs.csv"), "-H", "6", "--model", str(tuned), "--num-samples", "10",
                                      "--context-length", "48", "--seed", "5", "--device", "cpu", "-q", "-o", str(tmp_path / "out.parquet")])
    assert result.exit_code == 0, result.stderr
    out = pd.read_parquet(tmp_path / "out.parquet").sort_values(["item_id", "month"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, local, check_dtype=False)


def test_a_leaderboard_of_the_base_and_the_tuned_folder(tuned, employment, tiny_checkpoint, tmp_path):
    board = compare(
        {"base": lambda: MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="cpu"),
         "tuned": lambda: MoiraiForecaster.from_pretrained(str(tuned), device="cpu")},
        employment.series, 12, freq=employment.freq, seed=0, context_length=48,
    )
    assert board.table.loc["tuned", "wql"] < board.table.loc["base", "wql"]
    wide = tmp_path / "jobs.csv"
    shutil.copy(employment.source, wide)
    result = CliRunner().invoke(app, ["evaluate", str(wide), "-H", "12", "--model", str(tiny_checkpoint), "--model", str(tuned),
                                      "--context-length", "48", "--seed", "0", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.stderr
    assert tuned.name in result.stdout and tiny_checkpoint.name in result.stdout


def test_the_ray_engine_loads_the_tuned_folder(tuned, table, local):
    ray = pytest.importorskip("ray", reason="the Ray engine needs ray[data] (pip install -e '.[dev]')")
    from moirai_cli import distributed

    with distributed.RayCluster(num_cpus=2):
        out = distributed.forecast_dataset(ray.data.from_pandas(table), 6, model=str(tuned), workers=1, **OPTIONS).to_pandas()
    out = out.sort_values(["item_id", "month"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, local, check_dtype=False)


def test_spark_loads_the_tuned_folder(tuned, table, local):
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]'")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Java is not installed: Spark needs a Java runtime (17 or newer)")
    from pyspark.sql import SparkSession

    from moirai_cli import spark as moirai_spark

    running = SparkSession.getActiveSession()  # the Spark tests' session, when they ran first: reused, left running
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        session = running or (
            SparkSession.builder.master("local[2]").appName("moirai-finetune-tests")
            .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1").config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.showConsoleProgress", "false").getOrCreate()
        )
        try:
            session.sparkContext.setLogLevel("ERROR")
            out = moirai_spark.forecast(session.createDataFrame(table), 6, model=str(tuned), device="cpu", **OPTIONS).toPandas()
        finally:
            if running is None:
                session.stop()
    out = out.sort_values(["item_id", "month"]).reset_index(drop=True)
    out["month"] = out["month"].astype("datetime64[ns]")
    pd.testing.assert_frame_equal(out, local, check_dtype=False)
