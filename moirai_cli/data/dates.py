"""Timestamp columns to datetimes: one day/month convention per column, UTC offsets, pandas' date range.

Numeric dates such as 03/04/2024 are read day-first or month-first for the whole column, never row by
row: the convention comes from the rows that settle it (a first number above 12 is a day, a second
number above 12 is a day), or from the user (`dayfirst`, `date_format`). A column with evidence for
both conventions, or with none while some dates read differently either way, is refused. Dates written
NN-NN-NN may hold a two-digit year first (13-01-01): a first number above 31 settles it, and a column
that reads either way is refused. How varying UTC offsets are read is settled for a whole column too.
"""

from __future__ import annotations

import datetime
import re
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Literal

import numpy as np
import pandas as pd

from moirai_cli.data.io import spelled_missing
from moirai_cli.errors import InputError, first_line, option

# Day and month (either order), then the year, then anything (a time): 03/04/2024, 3.4.24 13:00, 03-04-2024.
NUMERIC_DATE = r"^(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})((?:[T\s].*)?)$"
YEAR_FIRST_DATE = r"^\d{2}-\d{2}-\d{2}(?:[T\s]|$)"  # 13-01-01, a two-digit year first (see DateConvention.decide)
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
    year_first_row: tuple[int, str] | None = None  # ... of the form YY-MM-DD whose first number is no day (above 31)
    short_dash_row: tuple[int, str] | None = None  # ... of the form NN-NN-NN, which may hold its year first
    not_year_first: bool = False  # a date that cannot be YY-MM-DD (another form, a month above 12, a day above 31)
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
        third = pd.to_numeric(parts[3], errors="coerce").to_numpy()
        short_dash = found & (parts[1] == "-").to_numpy() & np.logical_and.reduce(
            [(parts[i].str.len() == 2).to_numpy() for i in (0, 2, 3)]
        )
        year_first = short_dash & (second <= 12) & (third <= 31)
        self.not_year_first = self.not_year_first or bool((found & ~year_first).any())
        for name, flags in (
            ("day_first_row", found & (first > 12) & (second <= 12)),
            ("month_first_row", found & (second > 12) & (first <= 12)),
            ("ambiguous_row", found & (first <= 12) & (second <= 12) & (first != second)),
            ("year_first_row", year_first & (first > 31)),
            ("short_dash_row", short_dash),
        ):
            if getattr(self, name) is None and flags.any():
                setattr(self, name, (row_number(text, flags), text.iloc[int(np.flatnonzero(flags)[0])]))

    def decide(self, source: str, column: str) -> bool | Literal["year"] | None:
        """True for day-first, False for month-first, "year" for YY-MM-DD, None without numeric dates;
        InputError when unsettled.

        Dates written NN-NN-NN may hold a two-digit year first (13-01-01 for 2013-01-01, a truncated ISO
        date): when every such date can be read so, a first number above 31 settles it, and otherwise the
        column is ambiguous. Dates written with '/' or '.' hold their year last.
        """
        if not self.seen:
            return None
        if not self.not_year_first and self.short_dash_row is not None:
            if self.year_first_row is not None:
                return "year"
            row, text = self.short_dash_row
            raise InputError(
                f"{source}: column '{column}': '{text}' (row {row}) reads as {_year_first_reading(text)} with the year "
                f"first, or with the year last; pass {option('date_format', '%y-%m-%d')} for the year first, or "
                f"{option('dayfirst', True)}, {option('dayfirst', False)} or {option('date_format', '%d-%m-%y')} for the year last"
            )
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
    """Parses timestamp columns with the user's settings; keeps what it settled for later pieces.

    `dayfirst`: True (03/04 is 3 April), False (March 4), "year" (YY-MM-DD, as a plan passes a settled order on),
    None (from the column). `date_format`: a
    strftime format every row must match. `notes` collects what the user should know (UTC conversion).
    `utc_offsets`: how timestamps whose UTC offsets vary are read, "utc" (instants) or "local" (wall-clock
    dates); None until a column settles it (settle_offsets, or the first piece whose offsets vary).
    """

    dayfirst: bool | None = None
    date_format: str | None = None
    notes: list[str] = field(default_factory=list)
    utc_offsets: Literal["utc", "local"] | None = None
    year_first: bool = False  # settled from the column: YY-MM-DD dates (DateConvention.decide)

    def __post_init__(self) -> None:
        if self.dayfirst == "year":
            self.dayfirst, self.year_first = None, True

    @property
    def order(self) -> bool | Literal["year"] | None:
        """The settled order of numeric dates, as `dayfirst` takes it back: True, False, "year" or None."""
        return "year" if self.year_first else self.dayfirst

    def settle(self, pieces: Iterable[pd.Series], source: str, column: str) -> None:
        """Decide the day/month/year order of numeric dates from a whole column read in pieces (for streamed files)."""
        if self.dayfirst is not None or self.date_format is not None or self.year_first:
            return
        evidence = DateConvention()
        for piece in pieces:
            evidence.add(piece.dropna().astype(str).str.strip())
        order = evidence.decide(source, column)
        if order == "year":
            self.year_first = True
        else:
            self.dayfirst = order

    def settle_offsets(self, pieces: Iterable[pd.Series], source: str, column: str) -> None:
        """Decide how timestamps with varying UTC offsets are read from a whole column read in pieces, so that
        every piece (every chunk of series) reads them alike: a piece whose own offsets are all the same would
        otherwise keep them, while one crossing a daylight saving change would not."""
        if self.utc_offsets is not None:
            return
        offsets: set[object] = set()
        times: set[int] = set()
        for piece in pieces:
            parsed, _ = self._parsed(piece.dropna(), source, column)
            if pd.api.types.is_datetime64_any_dtype(parsed):
                if getattr(parsed.dt, "tz", None) is None or parsed.empty:
                    continue
                offsets.add(parsed.iloc[0].utcoffset())
                wall = pd.DatetimeIndex(parsed.dt.tz_localize(None))
            else:
                aware = [t for t in parsed if getattr(t, "tzinfo", None) is not None]
                offsets.update(t.utcoffset() for t in aware)
                wall = pd.DatetimeIndex([t.tz_localize(None) for t in aware])
            times.update((wall - wall.normalize()).asi8.tolist())
            if len(offsets) > 1 and len(times) > 1:
                break
        if len(offsets) > 1:
            self._read_varying_offsets_as("local" if len(times) == 1 else "utc", column)

    def _read_varying_offsets_as(self, how: Literal["utc", "local"], column: str) -> None:
        """Keep how varying UTC offsets are read, and tell the user once."""
        self.utc_offsets = how
        reading = "read as local dates" if how == "local" else "timestamps are in UTC"
        note = f"column '{column}': UTC offsets vary (daylight saving time?); {reading}"
        if note not in self.notes:
            self.notes.append(note)

    def shows_offsets(self, values: pd.Series, source: str, column: str) -> bool:
        """Whether a text column's first values carry UTC offsets (read as this parser reads them)."""
        if pd.api.types.is_datetime64_any_dtype(values):
            return False
        parsed, _ = self._parsed(values.dropna().head(1000), source, column)
        if pd.api.types.is_datetime64_any_dtype(parsed):
            return getattr(parsed.dt, "tz", None) is not None
        return any(getattr(t, "tzinfo", None) is not None for t in parsed)

    def parse(self, values: pd.Series, source: str, column: str) -> pd.DatetimeIndex:
        """datetime64[ns] values of a column (indexed by 0-based file row), or InputError naming the row."""
        if pd.api.types.is_datetime64_any_dtype(values):
            missing = values.isna().to_numpy()
        else:
            missing = spelled_missing(values)
        if missing.any():
            raise InputError(f"{source}: column '{column}', row {row_number(values, missing)}: missing timestamp")
        if pd.api.types.is_datetime64_any_dtype(values):
            return _in_range(values, source, column)
        parsed, shown = self._parsed(values, source, column)
        if self.date_format is not None:
            problem = "'{}' does not match " + option("date_format") + " '" + self.date_format + "'"
        else:
            problem = "cannot parse timestamp '{}'"
            if self.year_first or self.dayfirst is not None:
                order = "year" if self.year_first else "day" if self.dayfirst else "month"
                problem += f" (dates in this column are {order}-first)"
        return self._checked(parsed, shown, source, column, problem)

    def _parsed(self, values: pd.Series, source: str, column: str) -> tuple[pd.Series, pd.Series]:
        """(the text parsed as pandas reads it, with NaT where it failed; the stripped text), in the column's
        settled order; objects when UTC offsets vary."""
        shown = values.astype(str).str.strip()
        if self.date_format is not None:
            return _to_datetime(shown, source, column, self.date_format), shown
        self.settle([shown], source, column)  # when unsettled: by this column, kept for later pieces and the future file
        text = shown
        if self.year_first:
            text = _year_first_as_iso(shown)
        elif self.dayfirst is not None:
            text = _numeric_dates_as_iso(shown, self.dayfirst)
        parsed = _to_datetime(text, source, column, None)
        if parsed.isna().any():
            parsed = _to_datetime(text, source, column, "mixed")
        return parsed, shown

    def _checked(
        self, parsed: pd.Series, shown: pd.Series, source: str, column: str, problem: str
    ) -> pd.DatetimeIndex:
        """The parsed column, UTC when its offsets vary; InputError for a row that did not parse (`problem`: '{}' is its text)."""
        if not pd.api.types.is_datetime64_any_dtype(parsed):
            parsed = self._to_utc(parsed, shown, source, column)
        elif self.utc_offsets and getattr(parsed.dt, "tz", None) is not None:  # the future file, a later piece
            parsed = parsed.dt.tz_convert("UTC") if self.utc_offsets == "utc" else parsed.dt.tz_localize(None)
        bad = parsed.isna().to_numpy()
        if bad.any():
            text = shown.iloc[int(np.flatnonzero(bad)[0])]
            outside = _outside_range(text)
            message = _outside_message(text, outside) if outside is not None else problem.replace("{}", text, 1)
            raise InputError(f"{source}: column '{column}', row {row_number(shown, bad)}: {message}")
        stamps = pd.DatetimeIndex(parsed)  # pandas 3 parses to the unit the text needs: 1600-01-01 is no NaT there
        wall = stamps.tz_localize(None) if stamps.tz is not None else stamps
        outside = np.asarray((wall < pd.Timestamp.min) | (wall > pd.Timestamp.max), dtype=bool)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            message = _outside_message(shown.iloc[first], wall[first])
            raise InputError(f"{source}: column '{column}', row {row_number(shown, outside)}: {message}")
        return stamps.as_unit("ns")

    def _to_utc(self, parsed: pd.Series, shown: pd.Series, source: str, column: str) -> pd.Series:
        """Timestamps whose UTC offsets differ (daylight saving time in one zone): as UTC instants, or as
        local wall-clock times when every row has the same time of day (daily and coarser data, whose dates
        would shift by an hour in UTC); a column settled before (settle_offsets) keeps its reading.
        Offsets on some rows only are an error."""
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
        if self.utc_offsets is None:
            same_time = len(set((wall[present] - wall[present].normalize()).tolist())) == 1
            self._read_varying_offsets_as("local" if same_time else "utc", column)
        if self.utc_offsets == "local":
            return pd.Series(wall, index=parsed.index)
        return pd.to_datetime(parsed, utc=True)


def _year_first_reading(text: str) -> str:
    """The ISO date a YY-MM-DD text stands for with the year first (13-01-01 -> 2013-01-01)."""
    year, month, day = text[:8].split("-")
    century = "19" if int(year) >= TWO_DIGIT_YEAR_PIVOT else "20"
    return f"{century}{year}-{month}-{day}"


def _year_first_as_iso(text: pd.Series) -> pd.Series:
    """Rewrite YY-MM-DD dates (with any time after them) as ISO dates; other rows unchanged."""
    found = text.str.match(YEAR_FIRST_DATE)
    if not found.any():
        return text
    dates = text[found]
    text = text.copy()
    text[found] = dates.str[:8].map(_year_first_reading) + dates.str[8:]
    return text


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


def _outside_range(text: str) -> pd.Timestamp | None:
    """The date a text reads as when pandas' nanosecond timestamps cannot hold it (before 1677 or after 2262), else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    if stamp is pd.NaT or pd.Timestamp.min <= stamp <= pd.Timestamp.max:
        return None
    return stamp


GUESSED_FORMATS = ("%b-%y", "%b %y", "%b-%Y", "%b %Y", "%B %Y", "%B-%y", "%b.%y", "%m/%y", "%m-%y", "%y%m%d", "%d-%b-%y")


def _outside_message(text: str, stamp: pd.Timestamp | datetime.datetime) -> str:
    """Why a timestamp outside pandas' dates is refused: a date that far out (its year written in full), or a
    text pandas misread ('Jan-24' as 0001-01-24), with the --date-format that reads it."""
    if re.search(r"\d{4}", text):
        return f"timestamp '{text}' {OUTSIDE_RANGE}"
    fits = next((fmt for fmt in GUESSED_FORMATS if _matches(text, fmt)), None)
    example = f"for example '{fits}'" if fits else "a strftime format such as '%d %b %Y'"
    return (
        f"'{text}' could not be read as a date (pandas reads it as {stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d}); "
        f"give its format with {option('date_format')}, {example}"
    )


def _matches(text: str, fmt: str) -> bool:
    """Whether strptime reads `text` with `fmt`."""
    try:
        datetime.datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


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

