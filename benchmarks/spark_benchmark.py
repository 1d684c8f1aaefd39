"""Spark local[N] against `moirai forecast` on the same long Parquet file: series per second and overhead per partition.

    python benchmarks/spark_benchmark.py --series 10000 --length 100 --horizon 14 --num-samples 20

Runs, in this order (repeated `--repeats` times, so the two engines alternate on a shared machine):
  1. `moirai forecast DATA -o out.parquet` in a fresh process (whole wall time, imports included), with
     torch's default threads (one per core) and with one thread (as each Spark worker runs: Spark sets
     OMP_NUM_THREADS to spark.task.cpus);
  2. `moirai_cli.spark.forecast` (mapInPandas after repartitioning by id into one partition per
     core: the engine as shipped), then the result written to Parquet;
  3. the same engine with groupBy(id).applyInPandas in place of mapInPandas (one group per series,
     as many partitions), the operator it was compared with;
  4. the engine with `--few-partitions` and with `--many-partitions` partitions: the difference in wall
     time over the difference in partitions is the overhead of one partition.
The Spark session starts once, and a first small call starts its Python workers, before the
runs (both times are reported apart). Every Spark
output is checked to equal the CLI's exactly (same seed). The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's moirai_cli, also for the Spark workers (PYTHONPATH below)
TINY = ROOT / "tests" / "fixtures" / "tiny-moe"


def make_data(path: Path, series: int, length: int) -> None:
    """Daily random walks with a weekly cycle, one block of rows per series (so the CLI streams the file)."""
    rng = np.random.default_rng(0)
    steps = np.arange(length)
    values = rng.normal(size=(series, length)).cumsum(axis=1) + 3 * np.sin(2 * np.pi * steps / 7) + 50
    frame = pd.DataFrame({
        "item_id": np.repeat([f"s{i:06d}" for i in range(series)], length),
        "date": np.tile(pd.date_range("2023-01-01", periods=length).to_numpy().astype("datetime64[us]"), series),  # Spark reads us
        "sales": values.ravel(),
    })
    frame.to_parquet(path, index=False)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_cli(data: Path, out: Path, args: argparse.Namespace, threads: int | None = None) -> float:
    """Wall time of `moirai forecast` in its own process (torch on `threads` threads, default: one per core)."""
    command = [
        sys.executable, "-m", "moirai_cli.cli", "forecast", str(data), "-H", str(args.horizon),
        "--num-samples", str(args.num_samples), "--context-length", str(args.context_length), "--seed", "0",
        "--decoding", args.decoding, "--model", args.model, "--device", "cpu", "-q", "-o", str(out),
    ]
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - started


class GroupedByIdRows:
    """Stands in for the engine's partitioned rows: its `mapInPandas` runs groupBy(id).applyInPandas instead."""

    def __init__(self, rows, id_column: str):
        self.rows, self.id_column = rows, id_column

    def mapInPandas(self, func, schema):
        columns = schema.fieldNames()

        def one_group(frame: pd.DataFrame) -> pd.DataFrame:
            parts = list(func(iter([frame])))
            return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)

        return self.rows.groupBy(self.id_column).applyInPandas(one_group, schema)


def run_spark(spark, data: Path, out: Path, args: argparse.Namespace, *, operator: str, partitions: int | None) -> float:
    """Wall time of moirai_cli.spark.forecast (planning, the job, caching) plus writing its result to Parquet."""
    from moirai_cli import spark as engine

    shipped = engine._partitioned
    shuffle_partitions = spark.conf.get("spark.sql.shuffle.partitions")
    if operator == "applyInPandas":  # as many partitions as the shipped engine uses by default
        spark.conf.set("spark.sql.shuffle.partitions", str(partitions or engine.default_partitions(spark)))
        engine._partitioned = lambda df, plan, future, parts: GroupedByIdRows(  # noqa: E731
            df.select(*plan.columns), plan.layout.id_column
        )
    try:
        started = time.perf_counter()
        result = engine.forecast(
            spark.read.parquet(str(data)), args.horizon, model=args.model, num_samples=args.num_samples,
            context_length=args.context_length, seed=0, decoding=args.decoding, device="cpu", partitions=partitions,
        )
        result.write.mode("overwrite").parquet(str(out))
        elapsed = time.perf_counter() - started
        result.unpersist()
    finally:
        engine._partitioned = shipped
        spark.conf.set("spark.sql.shuffle.partitions", shuffle_partitions)
    return elapsed


def same_forecast(spark_out: Path, cli_out: Path) -> bool:
    """Whether two forecast files hold the same rows, bit for bit."""
    keys = ["item_id", "date"]
    a = pd.read_parquet(spark_out).sort_values(keys).reset_index(drop=True)
    b = pd.read_parquet(cli_out).sort_values(keys).reset_index(drop=True)
    a["date"], b["date"] = a["date"].astype("datetime64[ns]"), b["date"].astype("datetime64[ns]")
    try:
        pd.testing.assert_frame_equal(a, b)
    except AssertionError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=14)
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--decoding", default="cached")
    parser.add_argument("--model", default=str(TINY))
    parser.add_argument("--cores", type=int, default=2, help="Spark master local[cores]")
    parser.add_argument("--few-partitions", type=int, default=2)
    parser.add_argument("--many-partitions", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-apply", action="store_true", help="leave out the applyInPandas run (slow)")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "spark"))
    args = parser.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "series.parquet"
    make_data(data, args.series, args.length)
    print(f"{args.series} series x {args.length} daily values, horizon {args.horizon}, {args.num_samples} samples, "
          f"context {args.context_length}, {args.decoding} decoding, model {args.model}")
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = str(ROOT)  # the workers import this checkout's moirai_cli
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    started = time.perf_counter()
    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(f"Spark session start: {time.perf_counter() - started:.1f} s (Spark {spark.version}, local[{args.cores}], "
          f"shuffle partitions {spark.conf.get('spark.sql.shuffle.partitions')}, AQE {spark.conf.get('spark.sql.adaptive.enabled')})")

    def worker_threads(batches):
        import torch

        for _ in batches:
            pass
        yield pd.DataFrame({"threads": [torch.get_num_threads()], "omp": [os.environ.get("OMP_NUM_THREADS", "unset")]})

    threads = spark.range(0, args.cores, numPartitions=args.cores).mapInPandas(worker_threads, "threads long, omp string")
    print("torch threads per Spark Python worker:", sorted(set(map(tuple, threads.toPandas().to_numpy().tolist()))))

    # The first call starts the Python workers, which import torch and load the model: timed apart.
    warm_up = work / "warm-up.parquet"
    pd.read_parquet(data).head(50 * args.length).to_parquet(warm_up, index=False)
    started = time.perf_counter()
    run_spark(spark, warm_up, work / "warm-up-out", args, operator="mapInPandas", partitions=None)
    print(f"first Spark call (workers start, import torch, load the model; 50 series): {time.perf_counter() - started:.1f} s")

    times: dict[str, list[float]] = {}
    identical: dict[str, bool] = {}
    plan = [
        ("moirai forecast (CLI)", None, None),
        ("moirai forecast (CLI), OMP_NUM_THREADS=1", None, 1),
        ("Spark mapInPandas (shipped)", "mapInPandas", None),
    ]
    if not args.skip_apply:
        plan.append(("Spark groupBy.applyInPandas", "applyInPandas", None))
    plan += [
        (f"Spark mapInPandas, {args.few_partitions} partitions", "mapInPandas", args.few_partitions),
        (f"Spark mapInPandas, {args.many_partitions} partitions", "mapInPandas", args.many_partitions),
    ]
    cli_out = work / "cli.parquet"
    for repeat in range(args.repeats):
        for label, operator, partitions in plan:
            if operator is None:
                elapsed = run_cli(data, cli_out, args, threads=partitions)
            else:
                out = work / f"spark-{operator}-{partitions}"
                elapsed = run_spark(spark, data, out, args, operator=operator, partitions=partitions)
                identical[label] = identical.get(label, True) and same_forecast(out, cli_out)
            times.setdefault(label, []).append(elapsed)
            print(f"  repeat {repeat + 1}: {label}: {elapsed:.1f} s (load {load_average()})", flush=True)

    print(f"load average after: {load_average()}")
    print()
    print("| run | wall time (s) | series/s | same forecast as the CLI |")
    print("|---|---|---|---|")
    for label, values in times.items():
        median = statistics.median(values)
        same = "" if label not in identical else ("yes" if identical[label] else "NO")
        print(f"| {label} | {median:.1f} | {args.series / median:.0f} | {same} |")
    few = statistics.median(times[plan[-2][0]])
    many = statistics.median(times[plan[-1][0]])
    per_partition = (many - few) / (args.many_partitions - args.few_partitions)
    print(f"\noverhead per partition: ({many:.1f} - {few:.1f}) s / ({args.many_partitions} - {args.few_partitions}) = "
          f"{per_partition * 1000:.0f} ms")
    spark.stop()


if __name__ == "__main__":
    main()
