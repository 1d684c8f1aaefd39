"""Forecast and backtest Spark DataFrames with the Spark engine (`moirai_cli.engines.spark`); the documented import path.

    >>> from moirai_cli import spark as moirai_spark
    >>> forecast = moirai_spark.forecast(sales, horizon=28, model="Salesforce/moirai-moe-1.0-R-small", seed=0)
    >>> windows = moirai_spark.evaluate(sales, horizon=28, windows=3, seed=0)
    >>> moirai_spark.summary(windows)
"""

from moirai_cli.engines.spark import default_partitions, evaluate, forecast, summary

__all__ = ["default_partitions", "evaluate", "forecast", "summary"]
