"""Which columns of a table hold the series id, the timestamps, the targets and the covariates."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import pandas as pd

from moirai_cli.data.io import spelled_missing
from moirai_cli.errors import InputError, option

LayoutKind = Literal["long", "wide", "single"]
LayoutChoice = Literal["auto", "long", "wide", "single"]

ID_NAMES = ("item_id", "unique_id", "id", "series")
TIMESTAMP_NAMES = ("timestamp", "ds", "date", "time")
TARGET_NAMES = ("target", "y", "value")


@dataclass(frozen=True)
class Layout:
    """The role of each column: `targets` are the variates (long, single) or the series columns (wide)."""

    kind: LayoutKind
    timestamp_column: str
    targets: tuple[str, ...]
    id_column: str | None = None
    past_covariates: tuple[str, ...] = ()
    known_covariates: tuple[str, ...] = ()
    guessed: frozenset[str] = field(default_factory=frozenset)  # roles found by content, not by name
    ignored: tuple[str, ...] = ()

    @property
    def target_names(self) -> tuple[str, ...]:
        """Names of the forecast variates (a wide table has one unnamed variate per series)."""
        return ("value",) if self.kind == "wide" else self.targets

    def describe(self) -> str:
        """One line saying how the table was read, for the user to check."""

        def tag(role: str) -> str:
            return " (guessed)" if role in self.guessed else ""

        parts = [f"{self.kind} layout", f"timestamp column '{self.timestamp_column}'{tag('timestamp')}"]
        if self.kind == "long":
            parts.append(f"id column '{self.id_column}'{tag('id')}")
        if self.kind == "wide":
            parts.append(f"{len(self.targets)} series columns{tag('target')}")
        else:
            noun = "target" if len(self.targets) == 1 else "targets"
            parts.append(f"{noun} {_quoted(self.targets)}{tag('target')}")
        if self.past_covariates:
            parts.append(f"past covariates {_quoted(self.past_covariates)}")
        if self.known_covariates:
            parts.append(f"known covariates {_quoted(self.known_covariates)}")
        if self.ignored:
            parts.append(f"ignored {_quoted(self.ignored)}")
        return ", ".join(parts)


def _quoted(names: Sequence[str]) -> str:
    """Column names as 'a', 'b'."""
    return ", ".join(f"'{n}'" for n in names)


def find_column(frame: pd.DataFrame, name: str, source: str, what: str = "column") -> str:
    """The frame's column called `name` (exact, else the one case-insensitive match), or InputError."""
    columns = [str(c) for c in frame.columns]
    if name in columns:
        return name
    folded = [c for c in columns if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise InputError(f"{source}: no {what} '{name}' (columns: {', '.join(columns)})")


def _by_name(columns: Sequence[str], names: Sequence[str]) -> str | None:
    """The first column whose lower-cased name is in `names`, in the priority order of `names`."""
    lowered = {c.lower(): c for c in reversed(columns)}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def is_numeric_column(values: pd.Series) -> bool:
    """Whether a column holds numbers: numeric dtype, or mostly number-like strings (CSV columns)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    missing = spelled_missing(values)  # empty, or 'NA', 'null', ... as in numeric columns
    present = values[~missing]
    if present.empty:  # an all-empty column is a missing numeric column; one of 'NA' or 'None' only is text (ids)
        return bool(values.isna().all())
    # As Python objects: Arrow-backed text (string[pyarrow], ArrowDtype strings, dictionaries) would parse to
    # Arrow NaN, which counts as present.
    parsed = pd.to_numeric(present.head(1000).astype(object), errors="coerce")
    return parsed.notna().mean() >= 0.5


def _looks_like_timestamps(values: pd.Series, numeric: bool) -> bool:
    """Whether a column (`numeric`: per is_numeric_column) is dates, or text whose first values all parse as dates."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if numeric:
        return False
    sample = values[~spelled_missing(values)].head(20).astype(str)
    if sample.empty:
        return False
    try:
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    except (ValueError, TypeError):
        return False
    return bool(parsed.notna().all())


def detect_layout(
    frame: pd.DataFrame,
    *,
    source: str = "<data>",
    layout: LayoutChoice = "auto",
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
) -> Layout:
    """Decide the layout from column names and contents; every explicit argument overrides detection."""
    if layout not in ("auto", "long", "wide", "single"):
        raise InputError(f"unknown layout '{layout}' (use auto, long, wide or single)")
    if frame.shape[1] == 0 or len(frame) == 0:
        raise InputError(f"{source}: no data rows")
    target = (target,) if isinstance(target, str) else tuple(target)
    columns = [str(c) for c in frame.columns]
    if any(not isinstance(c, str) for c in frame.columns):
        frame = frame.set_axis(columns, axis=1)  # a copy of the table: only when a name is not text

    @functools.cache
    def numeric_column(column: str) -> bool:
        """is_numeric_column, looked at once per column (three steps below ask)."""
        return is_numeric_column(frame[column])

    guessed: set[str] = set()
    past = tuple(find_column(frame, c, source) for c in past_covariates)
    known = tuple(find_column(frame, c, source) for c in known_covariates)
    targets = tuple(find_column(frame, c, source) for c in target)
    both = set(past) & set(known)
    if both:
        raise InputError(f"{source}: column {_quoted(sorted(both))} cannot be both a past and a known covariate")

    if timestamp_column is not None:
        ts = find_column(frame, timestamp_column, source)
    else:
        ts = _by_name(columns, TIMESTAMP_NAMES)
        if ts is None:
            ts = next((c for c in columns if c not in targets and _looks_like_timestamps(frame[c], numeric_column(c))), None)
            guessed.add("timestamp")
        if ts is None:
            raise InputError(
                f"{source}: no timestamp column found (looked for {', '.join(TIMESTAMP_NAMES)} "
                f"and date-like columns); name it with {option('timestamp_column')}"
            )
    reserved = {ts, *past, *known, *targets}
    overlap = set(targets) & ({ts} | set(past) | set(known))
    if overlap:
        raise InputError(f"{source}: column {_quoted(sorted(overlap))} cannot be both a target and another role")

    ident = _choose_id(frame, columns, reserved, layout, id_column, source, guessed, numeric_column)
    if ident is not None:
        reserved.add(ident)
        if ident in targets or ident == ts:
            raise InputError(f"{source}: column '{ident}' cannot be both the id and another role")
    rest = [c for c in columns if c not in reserved]
    numeric = [c for c in rest if numeric_column(c)]

    if ident is not None:
        kind: LayoutKind = "long"
        targets = targets or _choose_targets(rest, numeric, source, guessed, several_ok=False)
    elif layout == "wide" or (
        layout == "auto" and not targets and not _by_name(rest, TARGET_NAMES) and len(numeric) > 1
    ):
        kind = "wide"
        targets = targets or tuple(numeric)
        if not targets:
            raise InputError(f"{source}: no numeric series columns for the wide layout")
        if not target:
            guessed.add("target")
    else:
        kind = "single"
        targets = targets or _choose_targets(rest, numeric, source, guessed, several_ok=layout == "single")
    ignored = tuple(c for c in rest if c not in targets)
    return Layout(
        kind=kind,
        timestamp_column=ts,
        targets=tuple(targets),
        id_column=ident,
        past_covariates=past,
        known_covariates=known,
        guessed=frozenset(guessed),
        ignored=ignored,
    )


def _choose_id(
    frame: pd.DataFrame,
    columns: list[str],
    reserved: set[str],
    layout: LayoutChoice,
    id_column: str | None,
    source: str,
    guessed: set[str],
    numeric_column: Callable[[str], bool],
) -> str | None:
    """The series id column, or None for the wide and single layouts."""
    if id_column is not None:
        if layout in ("wide", "single"):
            raise InputError(f"{option('id_column')} does not apply to the {layout} layout")
        return find_column(frame, id_column, source)
    if layout in ("wide", "single"):
        return None
    rest = [c for c in columns if c not in reserved]
    named = _by_name(rest, ID_NAMES)
    if named is not None:
        return named
    candidates = [c for c in rest if c.lower() not in TARGET_NAMES and not numeric_column(c)]
    if len(candidates) == 1:
        guessed.add("id")
        return candidates[0]
    if len(candidates) > 1:
        raise InputError(
            f"{source}: several text columns ({_quoted(candidates)}) could be the series id; "
            f"choose one with {option('id_column')}"
        )
    if layout == "long":
        raise InputError(f"{source}: no id column found (looked for {', '.join(ID_NAMES)}); name it with {option('id_column')}")
    return None


def _choose_targets(
    rest: list[str], numeric: list[str], source: str, guessed: set[str], several_ok: bool
) -> tuple[str, ...]:
    """The target column: a conventional name, else the only numeric column (or all, if allowed)."""
    named = _by_name(rest, TARGET_NAMES)
    if named is not None:
        return (named,)
    if len(numeric) == 1 or (several_ok and numeric):
        guessed.add("target")
        return tuple(numeric)
    if not numeric:
        raise InputError(f"{source}: no numeric target column found; name it with {option('target')}")
    raise InputError(
        f"{source}: several numeric columns ({_quoted(numeric)}) could be the target; "
        f"choose with {option('target')} (repeat it for a multivariate forecast)"
    )
