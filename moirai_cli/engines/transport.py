"""Chunk results as table rows, so that a worker (Ray actor, Spark task) can send them back to its driver.

What a chunk found besides its table rows (counts, skipped series, notices) travels as one JSON note.

- Spark returns the rows themselves (its result is a Spark DataFrame): a worker yields the table rows, then
  one note row (`NOTE_KIND` "chunk"); one that meets a MoiraiError yields an error row instead of raising,
  so the driver reports it in one line as a local run would (a Spark task that raised would be retried and
  its message buried in a Java stack trace).
- Ray carries each chunk as one row: its table as Arrow IPC bytes, and the note. Rows of different chunks
  never share a block, so each table keeps its own column types.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator, Sequence

import pandas as pd

from moirai_cli.errors import InputError, ModelError, MoiraiError, first_line
from moirai_cli.forecasting.procedure import ChunkResult, Notice

NOTE_KIND = "_moirai_note_kind"  # Spark: extra output columns, set only on note rows
NOTE_TEXT = "_moirai_note"
NOTE_COLUMNS = (NOTE_KIND, NOTE_TEXT)
CHUNK, ERROR = "chunk", "error"
ROWS = "_moirai_rows"  # Ray: a chunk's table as Arrow IPC bytes


def note(result: ChunkResult) -> str:
    """Everything of a chunk result but its tables, as JSON."""
    return json.dumps({
        "series": result.series,
        "rows": result.rows,
        "crossing": result.crossing,
        "skipped": [str(item) for item in result.skipped],
        "too_short": [str(item) for item in result.too_short],
        "notices": [[notice.kind, notice.text] for notice in result.notices],
    })


def merge_notes(texts: Iterable[str]) -> ChunkResult:
    """One ChunkResult (without tables) summing the chunk notes' counts and lists."""
    merged = ChunkResult()
    for text in texts:
        found = json.loads(text)
        merged.series += found["series"]
        merged.rows += found["rows"]
        merged.crossing += found["crossing"]
        merged.skipped += found["skipped"]
        merged.too_short += found["too_short"]
        merged.notices += [Notice(kind, message) for kind, message in found["notices"]]
    return merged


# --- Spark: the rows themselves, then a note row ---


def spark_rows(result: ChunkResult, table: str, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
    """The chunk's `table` rows (empty note columns), then its note row."""
    rows = result.tables.get(table)
    if rows is not None and len(rows):
        if list(rows.columns) != list(columns):  # the schema was built from the same library functions
            raise RuntimeError(f"worker output columns {list(rows.columns)} differ from the schema's {list(columns)}")
        yield rows.assign(**{NOTE_KIND: None, NOTE_TEXT: None})
    yield _note_row(CHUNK, note(result), columns)


def error_rows(exc: MoiraiError, columns: Sequence[str] = ()) -> pd.DataFrame:
    """One row reporting a worker's error (its exit code and one-line message, option references kept)."""
    return _note_row(ERROR, f"{exc.exit_code}\t{first_line(exc)}", columns)


def _note_row(kind: str, text: str, columns: Sequence[str]) -> pd.DataFrame:
    """One note row: every data column empty but the note's kind and text (None, not NaN, for text columns)."""
    row: dict[str, list] = {name: [None] for name in columns}
    row[NOTE_KIND], row[NOTE_TEXT] = [kind], [text]
    return pd.DataFrame(row, columns=[*columns, *NOTE_COLUMNS])


def raise_first_error(texts: Sequence[str], kinds: Sequence[str]) -> None:
    """Raise the first (in sorted order, so always the same) error among notes as InputError or ModelError."""
    errors = sorted(text for text, kind in zip(texts, kinds) if kind == ERROR)
    if not errors:
        return
    code, message = errors[0].split("\t", 1)
    if len(errors) > 1:
        message += f" (and errors in {len(errors) - 1} more partition(s))"
    raise (InputError if code == str(InputError.exit_code) else ModelError)(message)


# --- Ray: one row per chunk ---


def packed(result: ChunkResult, table: str) -> pd.DataFrame:
    """One row carrying a chunk result: its `table` as Arrow IPC bytes (empty when it has none) and its note."""
    import pyarrow as pa

    rows = result.tables.get(table)
    payload = b""
    if rows is not None and len(rows):
        data = pa.Table.from_pandas(rows, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        payload = sink.getvalue().to_pybytes()
    return pd.DataFrame({ROWS: [payload], NOTE_TEXT: [note(result)]})


def unpacked(frames: Iterable[pd.DataFrame], table: str) -> Iterator[ChunkResult]:
    """The chunk results that `packed` rows carry, their tables under `table`."""
    for frame in frames:
        for payload, text in zip(frame[ROWS].tolist(), frame[NOTE_TEXT].tolist()):
            result = merge_notes([text])
            rows = _table(payload)
            if rows is not None:
                result.tables[table] = rows
            yield result


def unpacked_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The table rows that a batch of `packed` rows carries, one after the other."""
    tables = [rows for rows in map(_table, frame[ROWS].tolist()) if rows is not None]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _table(payload: bytes) -> pd.DataFrame | None:
    """A table from Arrow IPC bytes; None for none."""
    import pyarrow as pa

    if not payload:
        return None
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all().to_pandas()
