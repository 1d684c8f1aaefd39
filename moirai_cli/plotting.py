"""A quick look at forecasts: recent history, the median and the 80% band for the first few series."""

from __future__ import annotations

from pathlib import Path

from moirai_cli.data.frames import SeriesDataset
from moirai_cli.data.io import atomic_path
from moirai_cli.data.output import ForecastLike
from moirai_cli.errors import InputError, MoiraiError, option

PLOT_INSTALL_HINT = "plotting needs matplotlib: pip install matplotlib (in a clone of moirai-cli: pip install -e '.[plot]')"


def check_plot_path(path: str | Path) -> None:
    """Fail early, before any forecasting, when matplotlib is missing or the file is not a .png."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MoiraiError(PLOT_INSTALL_HINT) from None
    if not str(path).lower().endswith(".png"):
        raise InputError(f"{path}: {option('plot')} writes a PNG file; name it *.png")


def plot_forecasts(
    dataset: SeriesDataset,
    forecast: ForecastLike,
    path: str | Path,
    *,
    max_series: int = 4,
    history: int | None = None,
) -> None:
    """Save a PNG (atomically) with one panel per series and variate for the first `max_series` series.

    `forecast` covers the dataset's first series; `history` is how many past steps to show
    (default: four horizons).
    """
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    bands = forecast.quantiles([0.1, 0.5, 0.9])  # (N, 3, H, V)
    series, _, horizon, variates = bands.shape
    n = min(max_series, series)
    history = history or 4 * horizon
    names = dataset.target_names
    panels = [(i, v) for i in range(n) for v in range(variates)]
    low, median, high = bands.transpose(1, 0, 2, 3)  # each (N, H, V)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), squeeze=False)
    try:
        for ax, (i, v) in zip(axes[:, 0], panels, strict=True):
            record = dataset.series[i]
            future = dataset.future_index(record, horizon)
            ax.plot(record.timestamps[-history:], record.target[-history:, v], color="black", lw=1, label="history")
            ax.fill_between(future, low[i, :, v], high[i, :, v], color="tab:blue", alpha=0.3, label="80% band")
            ax.plot(future, median[i, :, v], color="tab:blue", lw=1.5, label="median")
            title = str(record.item_id) if len(names) == 1 else f"{record.item_id} / {names[v]}"
            ax.set_title(title, fontsize=10, parse_math=False)  # ids as written: '$5$' is no formula
            ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
