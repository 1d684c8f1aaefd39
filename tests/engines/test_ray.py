"""`--engine ray` on a local Ray cluster: the same forecasts as the local engine, whole series, faults, errors, the API."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from moirai_cli.cli import app

ray = pytest.importorskip("ray", reason="the Ray engine tests need ray[data] (pip install -e '.[dev]')")

from moirai_cli.data import plan_file_reading, resolve_source  # noqa: E402
from moirai_cli.engines import ray as distributed  # noqa: E402
from moirai_cli.engines import transport  # noqa: E402
from moirai_cli.forecasting.job import ForecastJob  # noqa: E402
from moirai_cli.forecasting.procedure import FORECAST  # noqa: E402

CHECKPOINT = str(Path(__file__).parent.parent / "fixtures" / "tiny-moe")
FAST = ["-H", "4", "--num-samples", "5", "--context-length", "32", "--seed", "11", "--device", "cpu",
        "--decoding", "cached", "--model", CHECKPOINT]


@pytest.fixture
def cluster(ray_cluster):
    """The session's local Ray cluster (tests/engines/conftest.py)."""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def sales(n_series: int = 12, seed: int = 0) -> pd.DataFrame:
    """Daily series of several lengths (several token lengths per batch), one without any observed value."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_series):
        length = 20 + 7 * (i % 4)
        values = (rng.normal(0, 1, length).cumsum() + 40).round(3)
        if i == 5:
            values[:] = np.nan
        frames.append(pd.DataFrame({"item_id": f"sku-{i:03d}", "date": pd.date_range("2024-03-01", periods=length).astype(str), "y": values}))
    return pd.concat(frames, ignore_index=True)


def split_by_series(table: pd.DataFrame, folder: Path, files: int) -> None:
    """Write the table as `files` Parquet files, each holding whole series."""
    folder.mkdir()
    ids = table["item_id"].unique()
    for k in range(files):
        table[table["item_id"].isin(ids[k::files])].to_parquet(folder / f"part-{k}.parquet", index=False)


def forecast(runner, data, *extra: str) -> tuple[str, str]:
    """(sorted output CSV text, stderr) of one `moirai forecast` run."""
    result = runner.invoke(app, ["forecast", str(data), *FAST, *extra])
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    return "\n".join([header, *sorted(rows)]), result.stderr


@pytest.mark.parametrize("layout", ["files holding whole series", "one file, shuffled by id", "series split across files"])
def test_ray_output_is_byte_identical_to_local(runner, cluster, tmp_path, layout):
    table = sales()
    if layout == "files holding whole series":
        data = tmp_path / "ds"
        split_by_series(table, data, files=3)
    elif layout == "one file, shuffled by id":
        data = tmp_path / "one.csv"
        table.to_csv(data, index=False)
    else:  # a file per stretch of time, each holding a piece of every series: only a shuffle keeps series whole
        data = tmp_path / "ds"
        data.mkdir()
        for k, rows in table.groupby(table.groupby("item_id").cumcount() // 10):
            rows.to_csv(data / f"days-{k}.csv", index=False)
    local, local_err = forecast(runner, data)
    on_ray, ray_err = forecast(runner, data, "--engine", "ray", "--workers", "2")
    assert on_ray == local
    assert local.count("\n") == 11 * 4  # 11 series (one skipped) x horizon 4
    assert "warning: skipped series 'sku-005': no observed target value" in ray_err
    assert "forecast 11 series (1 skipped)" in ray_err and "engine ray (2 workers, device cpu)" in ray_err
    # Our note, warning and summary lines only: none of Ray's log lines or progress bars.
    assert len(ray_err.splitlines()) == 3 and ray_err.splitlines()[0].startswith(f"{data}: long layout")
    plan = distributed.plan_source(resolve_source(data), "item_id", workers=2)
    assert plan.rows == len(table) and plan.by_file == (layout == "files holding whole series")
    assert plan.series == table["item_id"].nunique()  # the progress total: each file is grouped by id
    if layout == "one file, shuffled by id":
        unsorted = tmp_path / "unsorted.csv"
        table.sample(frac=1, random_state=0).to_csv(unsorted, index=False)
        assert distributed.plan_source(resolve_source(unsorted), "item_id", workers=2).series is None  # not counted


def test_a_file_of_series_without_observed_values(runner, cluster, tmp_path):
    table = sales(6)
    empty = table["item_id"] == "sku-005"
    (tmp_path / "ds").mkdir()
    table[~empty].to_parquet(tmp_path / "ds" / "part-0.parquet", index=False)
    table[empty].to_parquet(tmp_path / "ds" / "part-1.parquet", index=False)  # this file has nothing to forecast
    local, _ = forecast(runner, tmp_path / "ds")
    on_ray, ray_err = forecast(runner, tmp_path / "ds", "--engine", "ray", "--workers", "2")
    assert on_ray == local and "warning: skipped series 'sku-005'" in ray_err
    (tmp_path / "ds" / "part-0.parquet").unlink()  # now no series has an observed value: the same error
    results = [runner.invoke(app, ["forecast", str(tmp_path / "ds"), *FAST, *engine]) for engine in ([], ["--engine", "ray"])]
    assert [r.exit_code for r in results] == [2, 2]
    assert {r.stderr.strip().splitlines()[-1] for r in results} == {f"error: {tmp_path / 'ds'}: no series has an observed target value"}


def test_known_covariates_from_a_future_file(runner, cluster, tmp_path):
    table = sales(8)
    table["promo"] = (pd.to_datetime(table["date"]).dt.day % 3 == 0).astype(int)
    split_by_series(table, tmp_path / "ds", files=2)
    last = pd.to_datetime(table.groupby("item_id")["date"].max())
    future = pd.concat(
        pd.DataFrame({"item_id": item, "date": pd.date_range(end + pd.Timedelta(days=1), periods=4).astype(str), "promo": [1, 0, 0, 1]})
        for item, end in last.items()
    )
    future.to_csv(tmp_path / "future.csv", index=False)
    extra = ["--target", "y", "--known-covariates", "promo", "--future", str(tmp_path / "future.csv")]
    local, _ = forecast(runner, tmp_path / "ds", *extra)
    on_ray, _ = forecast(runner, tmp_path / "ds", *extra, "--engine", "ray", "--workers", "2")
    assert on_ray == local and local.count("\n") == 7 * 4
    assert forecast(runner, tmp_path / "ds", "--target", "y")[0] != local  # the covariate changes the forecast


def worker_job(reading, **options) -> distributed.WorkerJob:
    """What each actor gets for a forecast of 4 steps with the tiny model, seed 11, on the CPU."""
    return distributed.WorkerJob(ForecastJob.build(4, model=CHECKPOINT, seed=11, device="cpu", **options), reading)


def forecast_rows(frames) -> tuple[pd.DataFrame, list]:
    """(forecast rows, skipped ids) of the workers' output frames."""
    results = list(transport.unpacked(frames, FORECAST))
    return pd.concat([r.tables[FORECAST] for r in results], ignore_index=True), sum((r.skipped for r in results), [])


def test_each_series_goes_whole_to_one_worker_call(cluster, tmp_path):
    table = sales(30)
    table.sample(frac=1, random_state=1).to_parquet(tmp_path / "mixed.parquet", index=False)  # rows in any order
    source = resolve_source(tmp_path / "mixed.parquet")
    reading = plan_file_reading(source)
    job = worker_job(reading, num_samples=3, context_length=32)
    plan = distributed.SourcePlan(by_file=False, rows=len(table), buckets=7)
    frames = list(distributed.collect(distributed.forecast_source(source, job, workers=2, plan=plan)))
    forecast_rows_, skipped = forecast_rows(frames)
    assert forecast_rows_.groupby("item_id").size().eq(4).all()  # every series exactly once, all its steps
    assert sorted(forecast_rows_["item_id"].unique()) == sorted(set(table["item_id"]) - {"sku-005"})
    assert skipped == ["sku-005"]
    frames = [result.tables[FORECAST] for result in transport.unpacked(frames, FORECAST) if FORECAST in result.tables]
    assert all(frame["item_id"].nunique() == frame.groupby("item_id").ngroups for frame in frames)


def _forecasting_actor_pids() -> list[int]:
    """Processes of our forecasting actors, found by the title Ray gives them (ray::MapWorker(...Forecaster...))."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and "Forecaster" in title:
            pids.append(int(entry))
    return pids


def test_local_cluster_shares_the_cores_and_keeps_one_for_reading():
    assert distributed.local_cluster_cpus(1, cores=2) == (2, 1)
    assert distributed.local_cluster_cpus(2, cores=2) == (3, 1)  # never fewer than one CPU per worker, plus reading
    assert distributed.local_cluster_cpus(2, cores=16) == (16, 7)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker's process through /proc (Linux)")
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(runner, cluster, tmp_path):
    table = sales(24)
    split_by_series(table, tmp_path / "ds", files=8)
    local, _ = forecast(runner, tmp_path / "ds")
    source = resolve_source(tmp_path / "ds")
    job = worker_job(
        plan_file_reading(source), quantile_levels=tuple(np.arange(1, 10) / 10), num_samples=5, context_length=32, decoding="cached"
    )
    frames, killed = [], []
    for frame in distributed.collect(distributed.forecast_source(source, job, workers=1)):
        frames.append(frame)
        if not killed:  # the first file is done: kill the worker while the other seven are queued or running
            pids = _forecasting_actor_pids()
            assert pids, "no forecasting actor process found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)
    assert killed and len(frames) >= 2
    assert not set(killed) & set(_forecasting_actor_pids())  # the pool runs on a restarted process
    out, skipped = forecast_rows(frames)
    assert skipped == ["sku-005"]
    text = out.to_csv(index=False, date_format="%Y-%m-%d").splitlines()
    assert "\n".join([text[0], *sorted(text[1:])]) == local


@pytest.mark.parametrize("split", ["by file", "shuffled"])
def test_a_bad_value_gives_the_local_error_naming_the_file(runner, cluster, tmp_path, split):
    table = sales()
    table["y"] = table["y"].astype(object)
    bad_row = int(np.flatnonzero(table["item_id"] == "sku-010")[13])
    table.loc[bad_row, "y"] = "n/a?"
    data = tmp_path / "ds"
    if split == "by file":
        split_by_series(table.astype({"y": str}), data, files=3)
    else:  # files by stretch of time; the bad value is in the second file, beyond what the driver samples
        data.mkdir()
        for k, rows in table.groupby(table.groupby("item_id").cumcount() // 10):
            rows.to_csv(data / f"days-{k}.csv", index=False)
    local = runner.invoke(app, ["forecast", str(data), *FAST, "-o", str(tmp_path / "local.csv")])
    on_ray = runner.invoke(app, ["forecast", str(data), *FAST, "--engine", "ray", "--workers", "2", "-o", str(tmp_path / "ray.csv")])
    assert local.exit_code == on_ray.exit_code == 2
    error = local.stderr.strip().splitlines()[-1]
    assert error == on_ray.stderr.strip().splitlines()[-1]
    assert "'n/a?' is not a number" in error and ("part-1.parquet" in error if split == "by file" else "days-1.csv, column 'y', row" in error.replace(":", ","))
    assert "Traceback" not in on_ray.stderr
    assert not (tmp_path / "ray.csv").exists() and not (tmp_path / "local.csv").exists()


def test_ray_engine_refuses_what_it_cannot_do(runner, tmp_path):
    sales().to_csv(tmp_path / "d.csv", index=False)
    sales().pivot(index="date", columns="item_id", values="y").reset_index().to_csv(tmp_path / "wide.csv", index=False)
    wide = runner.invoke(app, ["forecast", str(tmp_path / "wide.csv"), *FAST, "--engine", "ray"])
    assert wide.exit_code == 2 and "the Ray engine needs a long table" in wide.stderr and "read as wide" in wide.stderr
    stdin = runner.invoke(app, ["forecast", "-", *FAST, "--engine", "ray"], input="a,b\n")
    assert stdin.exit_code == 2 and "--engine ray reads files, folders or URIs, not stdin" in stdin.stderr
    for extra, message in (
        (["--plot", str(tmp_path / "p.png")], "--plot is not available with --engine ray"),
        (["--future", str(tmp_path / "d.csv")], "--future is only used with --known-covariates"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--engine", "spark-ish"], "--engine: 'spark-ish' is not one of local, ray"),
    ):
        args = ["forecast", str(tmp_path / "d.csv"), *FAST, *extra]
        if "--engine" not in extra:
            args += ["--engine", "ray"]
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_forecast_dataset_api_matches_predict_df(cluster, tiny_forecaster):
    table = sales(9)
    rows = ray.data.from_pandas(table.drop(index=np.flatnonzero(table["item_id"] == "sku-005")))
    options = dict(num_samples=5, context_length=32, decoding="cached", seed=4)
    out = distributed.forecast_dataset(rows, 4, model=CHECKPOINT, workers=2, quantile_levels=(0.1, 0.5, 0.9), **options).to_pandas()
    expected = tiny_forecaster.predict_df(table[table["item_id"] != "sku-005"], 4, quantile_levels=(0.1, 0.5, 0.9), **options)
    out = out.sort_values(["item_id", "date"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected.sort_values(["item_id", "date"]).reset_index(drop=True), check_dtype=False)
    assert list(out.columns) == ["item_id", "date", "mean", "0.1", "0.5", "0.9"]


def test_reading_from_s3_on_the_cluster(runner, cluster, tmp_path, s3_bucket):
    import pyarrow.fs as pafs

    table = sales()
    split_by_series(table, tmp_path / "ds", files=3)
    s3 = pafs.FileSystem.from_uri(f"s3://{s3_bucket}")[0]
    pafs.copy_files(str(tmp_path / "ds"), f"{s3_bucket}/ds", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
    local, _ = forecast(runner, tmp_path / "ds")
    on_ray, _ = forecast(runner, f"s3://{s3_bucket}/ds/", "--engine", "ray", "--workers", "2")
    assert on_ray == local


# --- Options the Ray engine once dropped, and a pool that once starved its own reading tasks ---------------------


def test_an_actor_computes_with_the_threads_asked_for(monkeypatch):
    import torch

    reading = plan_file_reading(resolve_source(str(Path(__file__).parent.parent.parent / "sample_data" / "stocks.csv")))
    before = torch.get_num_threads()
    try:
        distributed.BucketForecaster(distributed.WorkerJob(ForecastJob.build(2, model=CHECKPOINT, threads=3), reading, cpus=1), "x")
        assert torch.get_num_threads() == 3  # --threads, as on the local engine
        distributed.BucketForecaster(distributed.WorkerJob(ForecastJob.build(2, model=CHECKPOINT), reading, cpus=2), "x")
        assert torch.get_num_threads() == 2  # else the actor's share of the cluster's CPUs
    finally:
        torch.set_num_threads(before)


def test_the_pool_leaves_a_cpu_for_reading():
    assert distributed.fit_pool(2, 1, cluster_cpus=3) == (1, None)  # room enough: as asked
    share, message = distributed.fit_pool(2, 1, cluster_cpus=2)
    assert share == 0.5 and "each of the 2 worker(s) gets 0.5 CPU(s)" in message
    assert distributed.fit_pool(4, 1, cluster_cpus=2)[0] == 0.25


FORECAST_ON_TWO_CPUS = """
import warnings, ray, pandas as pd
from moirai_cli.distributed import forecast_dataset
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR", _temp_dir=__import__("tempfile").mkdtemp())
rows = ray.data.read_parquet({path!r})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = forecast_dataset(rows, horizon=3, workers=2, model={model!r}, seed=1, num_samples=4, context_length=32).to_pandas()
print(len(out), out["symbol"].nunique(), any("one CPU stays free for reading" in str(w.message) for w in caught))
"""


def test_forecast_dataset_with_as_many_workers_as_cpus_completes(tmp_path):
    """Two actors on a 2-CPU cluster: they get half a CPU each, so the reading tasks run (they once waited for ever)."""
    import subprocess
    import sys

    path = str(Path(__file__).parent.parent.parent / "sample_data" / "stocks.parquet")
    script = FORECAST_ON_TWO_CPUS.format(path=path, model=CHECKPOINT)
    # A generous bound only turns a hang into a failure; the run itself takes seconds.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["15", "5", "True"]


def test_forecast_dataset_finds_the_id_column_of_arrow_backed_text(cluster, tiny_forecaster):
    table = sales(9).query("item_id != 'sku-005'")
    rows = ray.data.from_arrow(__import__("pyarrow").Table.from_pandas(table, preserve_index=False))  # string columns: Arrow text
    options = dict(num_samples=5, context_length=32, decoding="cached", seed=4)
    out = distributed.forecast_dataset(rows, 4, model=CHECKPOINT, workers=2, **options).to_pandas()  # no id_column given
    expected = tiny_forecaster.predict_df(table, 4, **options)
    pd.testing.assert_frame_equal(
        out.sort_values(["item_id", "date"]).reset_index(drop=True), expected.sort_values(["item_id", "date"]).reset_index(drop=True),
        check_dtype=False,
    )
