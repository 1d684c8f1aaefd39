"""Every surface gives the same forecast: predict_df, the command line (local and Ray), forecast_dataset and Spark,
key for key and float64 value for value; every writer round-trips those values and timestamps exactly.

One seeded workload in two files: series of several lengths with missing values, a past and a known covariate
(with a future file); and a multivariate target. Backtests: `moirai evaluate`, the library and Spark agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from moirai_cli.cli import app
from moirai_cli.data import load_dataset
from moirai_cli.evaluation.procedure import PER_WINDOW, backtest_chunk
from moirai_cli.forecasting.job import BacktestJob

pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

CHECKPOINT = str(Path(__file__).resolve().parent.parent / "fixtures" / "tiny-moe")
HORIZON = 4
PREDICT = dict(num_samples=5, context_length=32, seed=7, quantile_levels=(0.1, 0.5, 0.9))
FLAGS = ["-H", str(HORIZON), "--num-samples", "5", "--context-length", "32", "--seed", "7", "--quantiles", "0.1,0.5,0.9",
         "--device", "cpu", "--model", CHECKPOINT, "-q"]


def covariates_workload() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Daily sales of five stores (lengths 26 to 51, three missing values each), a past covariate, a known one and its future."""
    rng = np.random.default_rng(21)
    history, future = [], []
    for i, length in enumerate((26, 40, 33, 51, 40)):
        days = pd.date_range("2024-01-01", periods=length + HORIZON, freq="D")
        sales = (rng.normal(0, 1, length).cumsum() + 20 + 5 * i).round(4)
        sales[rng.choice(length - 1, 3, replace=False)] = np.nan
        price = rng.uniform(1, 2, length + HORIZON).round(3)
        history.append(pd.DataFrame({
            "store": f"s{i}", "day": days[:length], "sales": sales, "promo": rng.integers(0, 2, length).astype(float), "price": price[:length],
        }))
        future.append(pd.DataFrame({"store": f"s{i}", "day": days[length:], "price": price[length:]}))
    options = dict(id_column="store", timestamp_column="day", target=["sales"], past_covariates=["promo"], known_covariates=["price"])
    return pd.concat(history, ignore_index=True), pd.concat(future, ignore_index=True), options


def multivariate_workload() -> tuple[pd.DataFrame, None, dict]:
    """Hourly visits and orders of three shops (two target variates), one with missing orders."""
    rng = np.random.default_rng(22)
    frames = []
    for i, length in enumerate((30, 45, 38)):
        visits, orders = rng.normal(0, 1, (2, length)).cumsum(axis=1).round(4) + 10
        if i == 1:
            orders[5:9] = np.nan
        frames.append(pd.DataFrame({"store": f"m{i}", "day": pd.date_range("2024-03-01", periods=length, freq="h"), "visits": visits, "orders": orders}))
    return pd.concat(frames, ignore_index=True), None, dict(id_column="store", timestamp_column="day", target=["visits", "orders"])


WORKLOADS = {"covariates": covariates_workload, "multivariate": multivariate_workload}


def cli_flags(options: dict) -> list[str]:
    """The command-line flags of a workload's column options."""
    flags = []
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}", ",".join(value) if isinstance(value, list) else value]
    return flags


def keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in key order, nanosecond wall-clock timestamps, ids as text: the form every surface is compared in."""
    keys = [c for c in ("store", "target", "day") if c in frame.columns]
    frame = frame.copy()
    frame["day"] = pd.to_datetime(frame["day"]).astype("datetime64[ns]")
    frame["store"] = frame["store"].astype(str)
    if "target" in frame.columns:
        frame["target"] = frame["target"].astype(str)
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The same columns, keys and float64 values, bit for bit."""
    frame, expected = keyed(frame), keyed(expected)
    assert list(frame.columns) == list(expected.columns)
    for column in expected.columns:
        if pd.api.types.is_float_dtype(expected[column]):
            assert expected[column].dtype == np.float64, column
            assert str(frame[column].dtype) in ("float64", "double[pyarrow]"), column  # 64 bits (Ray hands back Arrow doubles)
            values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
            assert np.array_equal(values, expected[column].to_numpy(), equal_nan=True), column
        else:
            assert frame[column].tolist() == expected[column].tolist(), column


@pytest.fixture(scope="module", params=list(WORKLOADS))
def workload(request, tmp_path_factory, tiny_forecaster):
    """A workload's files and what predict_df forecasts for it (the reference every surface is held to)."""
    history, future, options = WORKLOADS[request.param]()
    folder = tmp_path_factory.mktemp(request.param)
    history.to_csv(folder / "history.csv", index=False)
    flags = cli_flags(options)
    if future is not None:
        future.to_csv(folder / "future.csv", index=False)
        flags += ["--future", str(folder / "future.csv")]
    expected = tiny_forecaster.predict_df(history, HORIZON, future_df=future, **options, **PREDICT)
    return dict(history=history, future=future, options=options, folder=folder, flags=flags, expected=expected)


def run_cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("suffix", ["out.csv", "out.parquet", "out_dataset/", "out.json", "out.jsonl"])
def test_the_command_line_and_every_writer_give_predict_dfs_values(workload, suffix):
    folder = workload["folder"]
    output = folder / suffix
    run_cli("forecast", str(folder / "history.csv"), *FLAGS, *workload["flags"], "-o", str(output))
    if suffix.endswith(".csv"):
        written = pd.read_csv(output, dtype={"store": str})
    elif suffix.endswith(".json") or suffix.endswith(".jsonl"):
        written = pd.read_json(output, lines=suffix.endswith(".jsonl"), dtype={"store": str}, precise_float=True)
    else:
        written = pd.read_parquet(output)
    assert_same(written, workload["expected"])


def test_the_ray_engine_gives_predict_dfs_values(workload, ray_cluster):
    output = workload["folder"] / "ray.parquet"
    run_cli("forecast", str(workload["folder"] / "history.csv"), *FLAGS, *workload["flags"], "--engine", "ray", "--workers", "2", "-o", str(output))
    assert_same(pd.read_parquet(output), workload["expected"])


def test_forecast_dataset_gives_predict_dfs_values(workload, ray_cluster):
    import ray

    from moirai_cli.distributed import forecast_dataset

    rows = ray.data.from_pandas(workload["history"])
    out = forecast_dataset(rows, HORIZON, model=CHECKPOINT, workers=2, future_df=workload["future"], **workload["options"], **PREDICT)
    assert_same(out.to_pandas(), workload["expected"])


def test_spark_gives_predict_dfs_values(workload, spark):
    from moirai_cli import spark as moirai_spark

    future = workload["future"]
    result = moirai_spark.forecast(
        spark.createDataFrame(workload["history"]), HORIZON, model=CHECKPOINT, device="cpu",
        future_df=None if future is None else spark.createDataFrame(future), **workload["options"], **PREDICT,
    )
    assert_same(result.toPandas(), workload["expected"])


def test_backtests_agree_on_every_surface(workload, spark, tiny_forecaster):
    from moirai_cli import spark as moirai_spark

    options = workload["options"]
    backtest = dict(windows=2, stride=3)
    dataset = load_dataset(workload["history"], **options)
    job = BacktestJob.build(HORIZON, **options, **backtest, **PREDICT).with_run_seed()
    library = backtest_chunk(tiny_forecaster, dataset, job).tables[PER_WINDOW]

    output = workload["folder"] / "windows.parquet"
    run_cli("evaluate", str(workload["folder"] / "history.csv"), *FLAGS, *cli_flags(options), "--windows", "2", "--stride", "3", "-o", str(output))
    from_cli = pd.read_parquet(output).rename(columns={"store": "item_id"})
    from_spark = moirai_spark.evaluate(spark.createDataFrame(workload["history"]), HORIZON, model=CHECKPOINT, device="cpu", **options, **backtest, **PREDICT)
    ordered = lambda frame: frame.sort_values([c for c in ("item_id", "window", "target") if c in frame]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(ordered(from_cli), ordered(library), check_exact=True)
    pd.testing.assert_frame_equal(ordered(from_spark.toPandas()), ordered(library), check_exact=True, check_dtype=False)
