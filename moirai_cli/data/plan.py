"""Settle how a table is read once (on a driver, from a sample), so that every worker reads its part the same way.

A distributed engine hands each worker a part of the table. Detecting the columns' roles or the
frequency on each part could read two parts differently (a part with one short series has no
frequency of its own), so the engine settles both once, from a sample, and passes the plan on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import pandas as pd

from moirai_cli.data.dates import TimestampParser
from moirai_cli.data.frames import infer_table_frequency, parse_freq, settle_on_whole_column
from moirai_cli.data.io import Readable, as_source, read_pieces
from moirai_cli.data.layout import Layout, LayoutChoice, detect_layout
from moirai_cli.errors import InputError


@dataclass(frozen=True)
class ReadPlan:
    """The columns' roles, the frequency and how values are read, fixed for every worker that reads part of a table."""

    layout: Layout
    freq: str
    freq_inferred: bool = False  # inferred from the sample: workers still refuse series of another frequency
    dayfirst: bool | Literal["year"] | None = None  # numeric dates' order, settled when not given ("year": YY-MM-DD)
    date_format: str | None = None
    inf_as_missing: bool = False
    utc_offsets: Literal["utc", "local"] | None = None  # how varying UTC offsets are read, settled on the column

    @property
    def columns(self) -> list[str]:
        """The columns a worker needs, in the order id, timestamp, targets, past and known covariates."""
        lay = self.layout
        ident = [lay.id_column] if lay.id_column else []
        return [*ident, lay.timestamp_column, *lay.targets, *lay.past_covariates, *lay.known_covariates]

    def read_options(self) -> dict[str, object]:
        """Keyword arguments of `load_dataset` that fix every role, the frequency and the date convention."""
        lay = self.layout
        return {
            "layout": lay.kind,
            "id_column": lay.id_column,
            "timestamp_column": lay.timestamp_column,
            "target": list(lay.targets),
            "past_covariates": list(lay.past_covariates),
            "known_covariates": list(lay.known_covariates),
            "freq": self.freq,
            "freq_inferred": self.freq_inferred,
            **self.value_options(),
        }

    def value_options(self) -> dict[str, object]:
        """How timestamps and numbers are read, as keyword arguments of the data functions."""
        return {
            "dayfirst": self.dayfirst,
            "date_format": self.date_format,
            "inf_as_missing": self.inf_as_missing,
            "utc_offsets": self.utc_offsets,
        }


def plan_reading(
    sample: pd.DataFrame,
    *,
    series_rows: Callable[[Layout], pd.DataFrame] | None = None,
    source: str = "<data>",
    layout: LayoutChoice = "auto",
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    freq: str | None = None,
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    dayfirst: bool | None = None,
    date_format: str | None = None,
    inf_as_missing: bool = False,
) -> ReadPlan:
    """Detect the layout on `sample` (the first rows are enough) and infer the frequency, as `load_dataset` does.

    The frequency needs whole series: `series_rows(layout)` returns every row of a few series
    (for a long table, those of the first ids in `sample`); without it, `sample` is used.
    An explicit `freq` is only validated. Numeric dates' day/month convention, when neither `dayfirst`
    nor `date_format` gives it, is settled on the sample (InputError when the sample cannot settle it).
    """
    lay = detect_layout(
        sample,
        source=source,
        layout=layout,
        id_column=id_column,
        timestamp_column=timestamp_column,
        target=target,
        past_covariates=past_covariates,
        known_covariates=known_covariates,
    )
    parser = TimestampParser(dayfirst, date_format)
    parser.settle([sample[lay.timestamp_column]], source, lay.timestamp_column)
    parser.settle_offsets([sample[lay.timestamp_column]], source, lay.timestamp_column)
    values = {
        "dayfirst": parser.order,
        "date_format": date_format,
        "inf_as_missing": inf_as_missing,
        "utc_offsets": parser.utc_offsets,
    }
    if freq:
        return ReadPlan(lay, parse_freq(freq), **values)
    rows = series_rows(lay) if series_rows is not None else sample
    inferred = infer_table_frequency(rows, lay, source, dayfirst=parser.order, date_format=date_format)
    return ReadPlan(lay, inferred, freq_inferred=True, **values)


def plan_file_reading(data: Readable, *, rows: int = 65_536, **options) -> ReadPlan:
    """`plan_reading` on the first `rows` rows of a table's first file (a file, folder, glob or URI).

    The frequency comes from the series in those rows (the last one may be cut short; its step shows all
    the same): a folder whose first file does not show it needs an explicit `freq`. `options` are
    plan_reading's column options. Raises InputError naming the file, as a local read would.
    """
    files = as_source(data)
    first = files.files[0]
    head = next(read_pieces(first, rows, source=files), None)
    if head is None:
        raise InputError(f"{first.label}: no data rows")
    plan = plan_reading(head, source=first.label, **options)
    parser = TimestampParser(plan.dayfirst, plan.date_format, utc_offsets=plan.utc_offsets)
    settle_on_whole_column(parser, files, head, plan.layout.timestamp_column, rows)  # every file, every worker alike
    return dataclasses.replace(plan, dayfirst=parser.order, utc_offsets=parser.utc_offsets)  # settled on every row
