"""Forecast a Ray dataset of rows with the Ray engine (`moirai_cli.engines.ray`); the documented import path.

    >>> import ray
    >>> from moirai_cli.distributed import forecast_dataset
    >>> rows = ray.data.read_parquet("s3://bucket/sales/")  # long layout: id, timestamp, target
    >>> forecasts = forecast_dataset(rows, horizon=24, model="Salesforce/moirai-moe-1.0-R-small", seed=0)
    >>> forecasts.write_parquet("s3://bucket/forecasts/")
"""

from moirai_cli.engines.ray import RayCluster, forecast_dataset

__all__ = ["RayCluster", "forecast_dataset"]
