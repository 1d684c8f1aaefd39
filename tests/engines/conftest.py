"""Engine fixtures: one local Ray cluster and one local Spark session, shared by the engine tests."""

from __future__ import annotations

import os
import shutil
import sys

import pytest


@pytest.fixture(scope="session")
def ray_cluster(request):
    """One local Ray cluster (3 logical CPUs: two forecasting actors and the reading tasks) for the session.

    The local S3 server starts first when moto is installed, so that the workers inherit its AWS variables.
    Skips, saying why, where Ray Data is not installed.
    """
    pytest.importorskip("ray", reason="the Ray engine tests need ray[data] (pip install -e '.[dev]')")
    from moirai_cli.engines.ray import RayCluster

    try:
        request.getfixturevalue("s3_server")
    except pytest.skip.Exception:
        pass
    with RayCluster(num_cpus=3):
        yield


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (2 cores): no UI, few shuffle partitions, small Arrow batches, quiet logs."""
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]'")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Java is not installed: Spark needs a Java runtime (17 or newer)")
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        patch.setenv("PYSPARK_PYTHON", sys.executable)  # the workers run this interpreter, with its packages
        session = (
            SparkSession.builder.master("local[2]")
            .appName("moirai-cli-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "3")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")  # series straddle Arrow batches
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()
