"""Write the sample files in this folder from the datasets bundled inside the `vega_datasets` package.

Run with `python sample_data/make_sample_data.py` after `pip install vega_datasets==0.9.0`. Only the
package's locally bundled copies are read (`vega_datasets.local_data`); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from vega_datasets import local_data

HERE = Path(__file__).resolve().parent


def _iso(frame: pd.DataFrame, column: str, fmt: str) -> pd.DataFrame:
    """Rewrite a timestamp column as ISO 8601 text so the CSV reads the same everywhere."""
    return frame.assign(**{column: pd.to_datetime(frame[column]).dt.strftime(fmt)})


def main() -> None:
    """Write every sample file (CSV, plus one Parquet copy) and print its size."""
    outputs: dict[str, pd.DataFrame] = {
        # single series: hourly temperature (deg F), Seattle, 2010
        "seattle_temps.csv": _iso(local_data.seattle_temps(), "date", "%Y-%m-%d %H:%M"),
        # wide: one column per industry, monthly, thousands of jobs; drop the derived month-on-month change
        "us_employment.csv": local_data.us_employment().drop(columns=["nonfarm_change"]),
        # long: monthly closing price per ticker
        "stocks.csv": _iso(local_data.stocks(), "date", "%Y-%m-%d"),
        # long, annual: net generation (thousand MWh) per source
        "iowa_electricity.csv": _iso(local_data.iowa_electricity(), "year", "%Y-%m-%d"),
        # single series, two targets and two past covariates; drop the text weather label
        "seattle_weather.csv": _iso(local_data.seattle_weather().drop(columns=["weather"]), "date", "%Y-%m-%d"),
    }
    for name, frame in outputs.items():
        frame.to_csv(HERE / name, index=False)
    stocks = local_data.stocks()
    stocks.to_parquet(HERE / "stocks.parquet", index=False)
    for path in sorted(HERE.glob("*.csv")) + sorted(HERE.glob("*.parquet")):
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
