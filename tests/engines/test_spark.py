"""The Spark engine on a real local Spark (local[2]): the same forecasts and backtests as the library and the CLI.

Skipped, with the reason shown, only where pyspark or Java is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from moirai_cli.cli import app
from moirai_cli.data import load_dataset
from moirai_cli.errors import InputError, ModelError
from moirai_cli.evaluation import evaluate as evaluate_locally
from moirai_cli.forecasting.pipeline import MoiraiForecaster

# pyspark 4.3 warns that it does not fully support pandas 3, on every conversion; the tests check the results.
pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

CHECKPOINT = str(Path(__file__).resolve().parent.parent / "fixtures" / "tiny-moe")
OPTIONS = dict(num_samples=10, context_length=64, seed=11, device="cpu")


@pytest.fixture(scope="module")
def forecaster() -> MoiraiForecaster:
    return MoiraiForecaster.from_pretrained(CHECKPOINT, device="cpu")


def shops(count: int = 8) -> pd.DataFrame:
    """Daily sales of `count` shops, of different lengths (several token lengths), one with gaps, one never observed."""
    rng = np.random.default_rng(3)
    frames = []
    for i in range(count):
        length = 20 + 13 * i
        sales = rng.normal(0, 1, length).cumsum() + 40
        if i == 2:
            sales[4:9] = np.nan
        frames.append(pd.DataFrame({"shop": f"shop-{i}", "date": pd.date_range("2024-01-01", periods=length), "sales": sales}))
    frames.append(pd.DataFrame({"shop": "shop-empty", "date": pd.date_range("2024-02-01", periods=5), "sales": np.nan}))
    return pd.concat(frames, ignore_index=True)


def by_key(frame: pd.DataFrame, *keys: str) -> pd.DataFrame:
    """Rows in key order, nanosecond timestamps (Spark's come back in microseconds on some versions)."""
    frame = frame.sort_values(list(keys)).reset_index(drop=True)
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].astype("datetime64[ns]")
    return frame


# --- Build 1 and 3: the forecast, the same as predict_df's and `moirai forecast`'s ------------------------------


def test_forecast_equals_predict_df_and_moirai_forecast_exactly(spark, forecaster, tmp_path):
    from moirai_cli import spark as moirai_spark

    table = shops()
    with pytest.warns(UserWarning, match=r"skipped 1 series with no observed target value: 'shop-empty'"):
        result = moirai_spark.forecast(
            spark.createDataFrame(table), 7, model=CHECKPOINT, partitions=3, series_per_call=2, **OPTIONS
        )
    assert [f.name for f in result.schema.fields] == ["shop", "date", "mean", *(f"0.{k}" for k in range(1, 10))]
    from_spark = by_key(result.toPandas(), "shop", "date")

    local = forecaster.predict_df(table, 7, num_samples=10, context_length=64, seed=11)
    pd.testing.assert_frame_equal(from_spark, by_key(local, "shop", "date"))  # values, float32 types, names

    table.to_parquet(tmp_path / "shops.parquet")
    cli = CliRunner().invoke(
        app,
        ["forecast", str(tmp_path / "shops.parquet"), "-H", "7", "--num-samples", "10", "--context-length", "64",
         "--seed", "11", "--device", "cpu", "--model", CHECKPOINT, "-q", "-o", str(tmp_path / "cli.parquet")],
    )
    assert cli.exit_code == 0, cli.stderr
    pd.testing.assert_frame_equal(from_spark, by_key(pd.read_parquet(tmp_path / "cli.parquet"), "shop", "date"))


def test_covariates_and_multivariate_targets_as_in_predict_df(spark, forecaster):
    from moirai_cli import spark as moirai_spark

    rng = np.random.default_rng(8)
    history, future = [], []
    for i, length in enumerate((30, 45, 61)):
        dates = pd.date_range("2023-03-01", periods=length + 5, freq="h")
        price = rng.uniform(1, 2, length + 5)
        history.append(pd.DataFrame({
            "store": 100 + i, "hour": dates[:length], "visits": rng.normal(size=length).cumsum(),
            "orders": rng.normal(size=length).cumsum(), "promo": rng.integers(0, 2, length).astype(float), "price": price[:length],
        }))
        future.append(pd.DataFrame({"store": 100 + i, "hour": dates[length:], "price": price[length:]}))
    history, future = pd.concat(history, ignore_index=True), pd.concat(future, ignore_index=True)
    options = dict(id_column="store", target=["visits", "orders"], past_covariates=["promo"], known_covariates=["price"], decoding="cached")

    result = moirai_spark.forecast(
        spark.createDataFrame(history), 5, model=CHECKPOINT, future_df=spark.createDataFrame(future), **options, **OPTIONS
    )
    local = forecaster.predict_df(history, 5, future_df=future, num_samples=10, context_length=64, seed=11, **options)
    assert list(local.columns[:3]) == ["store", "hour", "target"]
    pd.testing.assert_frame_equal(by_key(result.toPandas(), "store", "target", "hour"), by_key(local, "store", "target", "hour"))


def test_wide_table_is_forecast_by_one_task_like_predict_df(spark, forecaster):
    from moirai_cli import spark as moirai_spark

    months = pd.date_range("2019-01-01", periods=40, freq="MS")
    rng = np.random.default_rng(1)
    wide = pd.DataFrame({"month": months, "north": rng.normal(size=40).cumsum(), "south": rng.normal(size=40).cumsum()})
    result = moirai_spark.forecast(spark.createDataFrame(wide), 4, model=CHECKPOINT, quantile_levels=[0.5], **OPTIONS)
    local = forecaster.predict_df(wide, 4, quantile_levels=[0.5], num_samples=10, context_length=64, seed=11)
    pd.testing.assert_frame_equal(by_key(result.toPandas(), "item_id", "month"), by_key(local, "item_id", "month"))


def test_model_is_loaded_once_per_python_worker(spark):
    from moirai_cli import spark as moirai_spark

    result = moirai_spark.forecast(
        spark.createDataFrame(shops(6).query("shop != 'shop-empty'")), 3, model=CHECKPOINT, partitions=4, series_per_call=1, **OPTIONS
    )
    assert result.count() == 6 * 3  # six model calls (one series each) spread over the workers

    def cached_forecasters(batches):
        from moirai_cli.forecasting import pipeline

        for _ in batches:
            pass
        yield pd.DataFrame({"pid": [os.getpid()], "forecasters": [len(pipeline._PROCESS_FORECASTERS)]})

    probe = spark.range(0, 6, numPartitions=6).mapInPandas(cached_forecasters, "pid long, forecasters long").toPandas()
    per_process = probe.groupby("pid")["forecasters"].max()
    assert per_process.max() == 1, probe  # each reused worker process holds the one model it loaded
    assert len(per_process) <= 2  # local[2]: the same two workers ran every task


# --- Build 2: the backtest, consistent with `moirai evaluate` ---------------------------------------------------


def test_evaluate_gives_moirai_evaluates_per_window_rows_and_summary(spark, tmp_path):
    from moirai_cli import spark as moirai_spark

    table = shops(6).query("shop != 'shop-empty'")
    table = pd.concat([table, pd.DataFrame({"shop": "shop-short", "date": pd.date_range("2024-05-01", periods=6), "sales": 1.0})])
    with pytest.warns(UserWarning, match=r"skipped 1 series too short for the windows: 'shop-short'"):
        per_window = moirai_spark.evaluate(
            spark.createDataFrame(table), 5, windows=2, stride=3, model=CHECKPOINT, series_per_call=2, **OPTIONS
        )
    from_spark = by_key(per_window.toPandas(), "item_id", "window")

    table.to_parquet(tmp_path / "shops.parquet")
    cli = CliRunner().invoke(
        app,
        ["evaluate", str(tmp_path / "shops.parquet"), "-H", "5", "--windows", "2", "--stride", "3", "--num-samples", "10",
         "--context-length", "64", "--seed", "11", "--device", "cpu", "--model", CHECKPOINT, "-q", "-o", str(tmp_path / "windows.parquet")],
    )
    assert cli.exit_code == 0, cli.stderr
    # `moirai evaluate -o` names the id column as the input does; the Spark engine keeps item_id.
    from_cli = by_key(pd.read_parquet(tmp_path / "windows.parquet").rename(columns={"shop": "item_id"}), "item_id", "window")
    pd.testing.assert_frame_equal(from_spark, from_cli)

    dataset = load_dataset(table)
    local = evaluate_locally(MoiraiForecaster.from_pretrained(CHECKPOINT, device="cpu"), dataset.series, 5, windows=2, stride=3,
                             freq=dataset.freq, num_samples=10, context_length=64, seed=11)
    pd.testing.assert_frame_equal(moirai_spark.summary(per_window), local.summary, rtol=1e-12)


# --- Build 4: bad data in one group is one line naming the series ----------------------------------------------


def test_bad_value_in_one_series_is_one_line_naming_it(spark, capfd):
    from moirai_cli import spark as moirai_spark

    table = shops(5).query("shop != 'shop-empty'").astype({"sales": str}).replace("nan", "")  # a text column
    table.loc[table.index[table["shop"] == "shop-3"][7], "sales"] = "unknown"
    capfd.readouterr()
    with pytest.raises(InputError) as raised:
        moirai_spark.forecast(spark.createDataFrame(table), 3, model=CHECKPOINT, **OPTIONS)
    message = str(raised.value)
    assert message == "Spark DataFrame, series 'shop-3': column 'sales', row 8: 'unknown' is not a number"
    assert raised.value.__cause__ is None and raised.value.__context__ is None  # no Spark exception behind it
    assert "Exception" not in capfd.readouterr().err  # no task failure, so no Java stack in the logs

    duplicated = pd.concat([shops(3), shops(3).query("shop == 'shop-1'").head(1)])
    with pytest.raises(InputError, match=r"^Spark DataFrame, series 'shop-1': series 'shop-1' has duplicate timestamp 2024-01-01"):
        moirai_spark.forecast(spark.createDataFrame(duplicated), 3, model=CHECKPOINT, **OPTIONS)


def test_missing_checkpoint_and_bad_options_are_one_line_errors(spark):
    from moirai_cli import spark as moirai_spark

    frame = spark.createDataFrame(shops(2))
    with pytest.raises(ModelError, match=r"^model '/no/such/checkpoint' is neither a checkpoint folder nor a Hub repo id"):
        moirai_spark.forecast(frame, 3, model="/no/such/checkpoint", **OPTIONS)
    with pytest.raises(InputError, match=r"^patch size 5 is not one of this checkpoint's sizes \[16\]"):
        moirai_spark.forecast(frame, 3, model=CHECKPOINT, patch_size=5, **OPTIONS)
    with pytest.raises(InputError, match=r"^Spark DataFrame: no timestamp column found"):
        moirai_spark.forecast(frame.drop("date"), 3, model=CHECKPOINT, **OPTIONS)
    with pytest.raises(InputError, match="quantile_levels: 1.5 is not strictly between 0 and 1"):
        moirai_spark.forecast(frame, 3, model=CHECKPOINT, quantile_levels=[0.5, 1.5], **OPTIONS)


# --- The partition reader (no Spark needed) ---------------------------------------------------------------------


def test_series_chunks_keep_each_series_whole_across_batches():
    from moirai_cli.engines.spark import _series_chunks

    ids = np.repeat(["a", "b", "c", "d", "e"], [5, 1, 7, 2, 3])
    rows = pd.DataFrame({"id": ids, "t": np.arange(len(ids))})
    batches = [rows.iloc[start : start + 4] for start in range(0, len(rows), 4)]  # 'a' and 'c' straddle batches
    chunks = list(_series_chunks(iter(batches), "id", size=2))
    assert [list(pd.unique(c["id"])) for c in chunks] == [["a", "b"], ["c", "d"], ["e"]]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), rows)
    whole = list(_series_chunks(iter(batches), None, size=2))  # a wide or single table: one frame
    assert len(whole) == 1 and whole[0].equals(rows)


def test_a_task_with_a_gpu_loads_the_model_on_that_gpu(monkeypatch):
    pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]'")
    from pyspark.resource import ResourceInformation

    from moirai_cli.engines import spark as moirai_spark
    from moirai_cli.forecasting.job import ModelSpec

    class TaskWithGpu:
        def resources(self):
            return {"gpu": ResourceInformation("gpu", ["3"])}

    devices = []
    monkeypatch.setattr(moirai_spark, "load_forecaster_once", lambda spec, **options: devices.append(options["device"]))
    load = lambda device: moirai_spark.executor_forecaster(ModelSpec(CHECKPOINT, device=device))  # noqa: E731
    monkeypatch.setattr(pyspark.TaskContext, "get", classmethod(lambda cls: TaskWithGpu()))
    for device in ("auto", "cuda", "cpu"):
        load(device)
    monkeypatch.setattr(pyspark.TaskContext, "get", classmethod(lambda cls: None))  # no task, or no GPU assigned
    load("auto")
    assert devices == ["cuda:3", "cuda:3", "cpu", "auto"]


# --- Options Spark once lacked, and values it once rounded -------------------------------------------------------


def test_spark_reads_dates_and_infinite_values_as_predict_df_does(spark, forecaster):
    from moirai_cli import spark as moirai_spark

    table = shops(4).query("shop != 'shop-empty'")
    table = table.assign(date=table["date"].dt.strftime("%d/%m/%Y"), sales=table["sales"].astype(object))
    table.loc[table.index[5], "sales"] = "inf"
    table["sales"] = table["sales"].astype(str)
    for options in (dict(dayfirst=True, inf_as_missing=True), dict(date_format="%d/%m/%Y", inf_as_missing=True)):
        with pytest.warns(UserWarning, match="infinite value"):
            result = moirai_spark.forecast(spark.createDataFrame(table), 3, model=CHECKPOINT, **options, **OPTIONS)
        with pytest.warns(UserWarning, match="infinite value"):
            local = forecaster.predict_df(table, 3, num_samples=10, context_length=64, seed=11, **options)
        pd.testing.assert_frame_equal(by_key(result.toPandas(), "shop", "date"), by_key(local, "shop", "date"))
    with pytest.raises(InputError, match="pass inf_as_missing=True"):  # a Python caller's error names the parameter
        moirai_spark.forecast(spark.createDataFrame(table), 3, model=CHECKPOINT, dayfirst=True, **OPTIONS)


def test_spark_values_are_doubles_as_predict_dfs(spark, forecaster):
    from moirai_cli import spark as moirai_spark

    table = shops(3).query("shop != 'shop-empty'")
    table.loc[table["shop"] == "shop-1", "sales"] += 1e9  # a level float32 cannot hold to the unit
    result = moirai_spark.forecast(spark.createDataFrame(table), 3, model=CHECKPOINT, **OPTIONS)
    assert {f.name: f.dataType.simpleString() for f in result.schema.fields}["mean"] == "double"
    local = forecaster.predict_df(table, 3, num_samples=10, context_length=64, seed=11)
    pd.testing.assert_frame_equal(by_key(result.toPandas(), "shop", "date"), by_key(local, "shop", "date"))
    level = by_key(local, "shop", "date").query("shop == 'shop-1'")["mean"]
    assert (level != 1e9).all() and level.nunique() > 1  # not a flat 1.000000000e+09
