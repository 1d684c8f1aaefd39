"""Timestamp columns to datetimes: one day/month convention per column, UTC offsets, pandas' date range.

Numeric dates such as 03/04/2024 are read day-first or month-first for the whole column, never row by
row: the convention comes from the rows that settle it (a first number above 12 is a day, a second
number above 12 is a day), or from the user (`dayfirst`, `date_format`). A column with evidence for
both conventions, or with none while some dates read differently either way, is refused.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from moirai_cli.errors import InputError, first_line, option

# Day and month (either order), then the year, then anything (a time): 03/04/2024, 3.4.24 13:00, 03-04-2024.
NUMERIC_DATE = r"^(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})((?:[T\s].*)?)$"
TWO_DIGIT_YEAR_PIVOT = 69  # as strptime's %y: 69-99 are 1969-1999, 00-68 are 2000-2068
FIRST_DATE, LAST_DATE = pd.Timestamp.min.ceil("D"), pd.Timestamp.max.floor("D")
OUTSIDE_RANGE = f"is outside the dates pandas can hold ({FIRST_DATE.date()} to {LAST_DATE.date()})"


def row_number(values: pd.Series, flags: np.ndarray) -> int:
    """The 1-based file row of the first flagged value (the index holds 0-based row numbers)."""
    return int(values.index[int(np.flatnonzero(flags)[0])]) + 1


@dataclass
class DateConvention:
    """Evidence for day-first and month-first numeric dates, gathered over a whole column (in pieces)."""

    day_first_row: tuple[int, str] | None = None  # (row, text) of the first date whose first number is a day
    month_first_row: tuple[int, str] | None = None  # ... whose second number is a day
    ambiguous_row: tuple[int, str] | None = None  # ... that reads differently either way
    seen: bool = False  # any numeric date at all

    def add(self, text: pd.Series) -> None:
        """Look at one piece of the column (stripped text, indexed by 0-based file row)."""
        parts = text.str.extract(NUMERIC_DATE)
        found = parts[0].notna().to_numpy()
        if not found.any():
            return
        self.seen = True
        first = pd.to_numeric(parts[0], errors="coerce").to_numpy()
        second = pd.to_numeric(parts[2], errors="coerce").to_numpy()
        for name, flags in (
            ("day_first_row", found & (first > 12) & (second <= 12)),
            ("month_first_row", found & (second > 12) & (first <= 12)),
            ("ambiguous_row", found & (first <= 12) & (second <= 12) & (first != second)),
        ):
            if getattr(self, name) is None and flags.any():
                setattr(self, name, (row_number(text, flags), text.iloc[int(np.flatnonzero(flags)[0])]))

    def decide(self, source: str, column: str) -> bool | None:
        """True for day-first, False for month-first, None without numeric dates; InputError when unsettled."""
        if not self.seen:
            return None
        day, month = self.day_first_row, self.month_first_row
        if day and month:
            raise InputError(
                f"{source}: column '{column}' mixes day-first dates (row {day[0]}: '{day[1]}') and month-first "
                f"dates (row {month[0]}: '{month[1]}'); make them consistent, or set {option('date_format')}"
            )
        if day or month:
            return day is not None
        if self.ambiguous_row:
            row, text = self.ambiguous_row
            raise InputError(
                f"{source}: column '{column}': no date settles whether '{text}' (row {row}) is day-first or "
                f"month-first; pass {option('dayfirst', True)} or {option('dayfirst', False)}, or {option('date_format')} (e.g. '%d/%m/%Y')"
            )
        return False  # every date reads the same either way


@dataclass
class TimestampParser:
    """Parses timestamp columns with the user's settings; keeps the convention it settled for later pieces.

    `dayfirst`: True (03/04 is 3 April), False (March 4), None (from the column). `date_format`: a
    strftime format every row must match. `notes` collects what the user should know (UTC conversion).
    """

    dayfirst: bool | None = None
    date_format: str | None = None
    notes: list[str] = field(default_factory=list)
    varying_offsets: str | None = None  # once a column's UTC offsets varied: "utc" or "local", kept for later pieces

    def settle(self, pieces: Iterable[pd.Series], source: str, column: str) -> None:
        """Decide the day/month convention from a whole column read in pieces (for streamed files)."""
        if self.dayfirst is not None or self.date_format is not None:
            return
        evidence = DateConvention()
        for piece in pieces:
            evidence.add(piece.dropna().astype(str).str.strip())
        self.dayfirst = evidence.decide(source, column)

    def parse(self, values: pd.Series, source: str, column: str) -> pd.DatetimeIndex:
        """datetime64[ns] values of a column (indexed by 0-based file row), or InputError naming the row."""
        missing = values.isna().to_numpy()
        if missing.any():
            raise InputError(f"{source}: column '{column}', row {row_number(values, missing)}: missing timestamp")
        if pd.api.types.is_datetime64_any_dtype(values):
            return _in_range(values, source, column)
        shown = values.astype(str).str.strip()
        if self.date_format is not None:
            parsed = _to_datetime(shown, source, column, self.date_format)
            problem = "'{}' does not match " + option("date_format") + " '" + self.date_format + "'"
            return self._checked(parsed, shown, source, column, problem)
        self.settle([shown], source, column)  # when unsettled: by this column, kept for later pieces and the future file
        text, reading = shown, "cannot parse timestamp '{}'"
        if self.dayfirst is not None:
            text = _numeric_dates_as_iso(shown, self.dayfirst)
            reading += f" (dates in this column are {'day' if self.dayfirst else 'month'}-first)"
        parsed = _to_datetime(text, source, column, None)
        if parsed.isna().any():
            parsed = _to_datetime(text, source, column, "mixed")
        return self._checked(parsed, shown, source, column, reading)

    def _checked(
        self, parsed: pd.Series, shown: pd.Series, source: str, column: str, problem: str
    ) -> pd.DatetimeIndex:
        """The parsed column, UTC when its offsets vary; InputError for a row that did not parse (`problem`: '{}' is its text)."""
        if not pd.api.types.is_datetime64_any_dtype(parsed):
            parsed = self._to_utc(parsed, shown, source, column)
        elif self.varying_offsets and getattr(parsed.dt, "tz", None) is not None:  # the future file, a later piece
            parsed = parsed.dt.tz_convert("UTC") if self.varying_offsets == "utc" else parsed.dt.tz_localize(None)
        bad = parsed.isna().to_numpy()
        if bad.any():
            text = shown.iloc[int(np.flatnonzero(bad)[0])]
            if _outside_range(text):
                problem = "timestamp '{}' " + OUTSIDE_RANGE
            message = problem.replace("{}", text, 1)
            raise InputError(f"{source}: column '{column}', row {row_number(shown, bad)}: {message}")
        stamps = pd.DatetimeIndex(parsed)  # pandas 3 parses to the unit the text needs: 1600-01-01 is no NaT there
        wall = stamps.tz_localize(None) if stamps.tz is not None else stamps
        outside = np.asarray((wall < pd.Timestamp.min) | (wall > pd.Timestamp.max), dtype=bool)
        if outside.any():
            text = shown.iloc[int(np.flatnonzero(outside)[0])]
            raise InputError(f"{source}: column '{column}', row {row_number(shown, outside)}: timestamp '{text}' {OUTSIDE_RANGE}")
        return stamps.as_unit("ns")

    def _to_utc(self, parsed: pd.Series, shown: pd.Series, source: str, column: str) -> pd.Series:
        """Timestamps whose UTC offsets differ (daylight saving time in one zone): as UTC instants, or as
        local wall-clock times when every row has the same time of day (daily and coarser data, whose dates
        would shift by an hour in UTC). Offsets on some rows only are an error."""
        aware = np.array([getattr(t, "tzinfo", None) is not None for t in parsed], dtype=bool)
        present = parsed.notna().to_numpy()
        if not aware.any():
            raise InputError(f"{source}: column '{column}': cannot parse timestamps")
        naive = present & ~aware
        if naive.any():
            raise InputError(
                f"{source}: column '{column}' mixes timestamps with a UTC offset (row {row_number(shown, aware)}: "
                f"'{shown.iloc[int(np.flatnonzero(aware)[0])]}') and without (row {row_number(shown, naive)}: "
                f"'{shown.iloc[int(np.flatnonzero(naive)[0])]}'); give every row an offset, or none"
            )
        wall = pd.DatetimeIndex([t.tz_localize(None) if present[i] else pd.NaT for i, t in enumerate(parsed)])
        if len(set((wall[present] - wall[present].normalize()).tolist())) == 1:
            self.varying_offsets = "local"
            self.notes.append(f"column '{column}': UTC offsets vary (daylight saving time?); read as local dates")
            return pd.Series(wall, index=parsed.index)
        self.varying_offsets = "utc"
        self.notes.append(f"column '{column}': UTC offsets vary (daylight saving time?); timestamps are in UTC")
        return pd.to_datetime(parsed, utc=True)


def _numeric_dates_as_iso(text: pd.Series, dayfirst: bool) -> pd.Series:
    """Rewrite numeric dates (03/04/2024 ...) as ISO dates in the given convention; other rows unchanged."""
    parts = text.str.extract(NUMERIC_DATE)
    found = parts[0].notna()
    if not found.any():
        return text
    parts = parts[found]
    day, month = (parts[0], parts[2]) if dayfirst else (parts[2], parts[0])
    year = parts[3]
    short = year.str.len() == 2
    if short.any():
        century = pd.Series(np.where(pd.to_numeric(year[short]) >= TWO_DIGIT_YEAR_PIVOT, "19", "20"), index=year[short].index)
        year = year.copy()
        year[short] = century + year[short]
    iso = year + "-" + month.str.zfill(2) + "-" + day.str.zfill(2) + parts[4].fillna("")
    text = text.copy()
    text[found] = iso
    return text


def _to_datetime(text: pd.Series, source: str, column: str, fmt: str | None) -> pd.Series:
    """pd.to_datetime with failures as NaT, quietly (an object result means mixed UTC offsets)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pd.to_datetime(text, errors="coerce", format=fmt)
    except (ValueError, TypeError) as exc:
        if "mixed timezones" in str(exc).lower():  # pandas 3 refuses what pandas 2 returned as objects
            return _to_datetime_each(text, fmt)
        if fmt not in (None, "mixed"):
            raise InputError(f"{source}: column '{column}': {option('date_format')} '{fmt}' is not usable ({first_line(exc)})") from None
        raise InputError(f"{source}: column '{column}': cannot parse timestamps ({first_line(exc)})") from None


def _to_datetime_each(text: pd.Series, fmt: str | None) -> pd.Series:
    """Each value parsed on its own (Timestamps keeping their own UTC offsets, NaT where unparseable), as objects."""
    single = None if fmt in (None, "mixed") else fmt

    def parse(value: str) -> object:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pd.to_datetime(value, format=single)
        except (ValueError, TypeError, OverflowError):
            return pd.NaT

    return pd.Series([parse(value) for value in text], index=text.index, dtype=object)


def _outside_range(text: str) -> bool:
    """Whether a text is a date that pandas' nanosecond timestamps cannot hold (before 1677 or after 2262)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return False
    return stamp is not pd.NaT and not (pd.Timestamp.min <= stamp <= pd.Timestamp.max)


def _in_range(values: pd.Series, source: str, column: str) -> pd.DatetimeIndex:
    """A typed datetime column (Parquet) in nanoseconds, or InputError naming a row pandas cannot hold."""
    try:
        return pd.DatetimeIndex(values).as_unit("ns")
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        outside = ~values.between(pd.Timestamp.min, pd.Timestamp.max).to_numpy()
        row = row_number(values, outside)
        raise InputError(
            f"{source}: column '{column}', row {row}: timestamp {values[outside].iloc[0]} {OUTSIDE_RANGE}"
        ) from None


def has_numeric_dates(values: pd.Series) -> bool:
    """Whether a column holds numeric dates such as 03/04/2024, whose day/month order must be settled."""
    return bool(values.dropna().astype(str).str.strip().str.match(NUMERIC_DATE).any())
