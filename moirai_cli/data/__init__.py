"""Data layer: read tables, detect their layout, build regular series, write forecast tables."""

from moirai_cli.data.frames import (
    SeriesDataset,
    SeriesRecord,
    check_covariate_options,
    future_index,
    infer_frequency,
    is_grouped_by,
    iter_series_chunks,
    load_dataset,
    parse_freq,
    peek_layout,
    rebatch,
)
from moirai_cli.data.io import (
    STDIO,
    TableWriter,
    atomic_path,
    check_distinct_paths,
    check_output_path,
    input_format,
    output_format,
    read_table,
    write_table,
)
from moirai_cli.data.layout import Layout, detect_layout
from moirai_cli.data.output import (
    check_output_columns,
    forecast_frame,
    parse_quantiles,
    quantile_column,
    samples_frame,
)

__all__ = [
    "STDIO",
    "Layout",
    "SeriesDataset",
    "SeriesRecord",
    "TableWriter",
    "atomic_path",
    "check_covariate_options",
    "check_distinct_paths",
    "check_output_columns",
    "check_output_path",
    "detect_layout",
    "forecast_frame",
    "future_index",
    "infer_frequency",
    "iter_series_chunks",
    "input_format",
    "is_grouped_by",
    "load_dataset",
    "output_format",
    "parse_freq",
    "parse_quantiles",
    "peek_layout",
    "quantile_column",
    "read_table",
    "rebatch",
    "samples_frame",
    "write_table",
]
