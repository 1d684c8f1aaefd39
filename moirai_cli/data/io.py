"""Reading CSV / Parquet tables and writing result tables atomically (CSV, Parquet, JSON)."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator, Literal, Mapping

import pandas as pd

from moirai_cli.errors import InputError, MoiraiError, first_line

STDIO = "-"
"""The path that means standard input (when reading) or standard output (when writing)."""

TableFormat = Literal["csv", "csv.gz", "parquet", "json", "jsonl"]

_READ_SUFFIXES: dict[str, TableFormat] = {
    ".csv": "csv",
    ".csv.gz": "csv.gz",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_WRITE_SUFFIXES: dict[str, TableFormat] = {
    **_READ_SUFFIXES,
    ".json": "json",
    ".jsonl": "jsonl",
}

PARQUET_READ_BUFFER = 1 << 20  # bytes read at a time per Parquet column
CSV_SEPARATORS = (",", ";", "\t", "|")  # tried in this order on the header line


def _format_from_suffix(path: str | Path, table: dict[str, TableFormat], purpose: str) -> TableFormat:
    """Map a file name to a table format by its (possibly double) extension, or raise InputError."""
    name = Path(path).name.lower()
    for suffix in sorted(table, key=len, reverse=True):
        if name.endswith(suffix):
            return table[suffix]
    known = ", ".join(sorted(table))
    raise InputError(f"{path}: cannot {purpose} this file type (use one of {known})")


def input_format(path: str | Path) -> TableFormat:
    """The format a data file is read as, from its extension ('-' is CSV on stdin)."""
    if str(path) == STDIO:
        return "csv"
    return _format_from_suffix(path, _READ_SUFFIXES, "read")


def output_format(path: str | Path) -> TableFormat:
    """The format a result file is written as, from its extension ('-' is CSV on stdout)."""
    if str(path) == STDIO:
        return "csv"
    return _format_from_suffix(path, _WRITE_SUFFIXES, "write")


def check_output_path(path: str | Path) -> TableFormat:
    """Validate an output path before any work: known extension and an existing folder."""
    fmt = output_format(path)
    if str(path) != STDIO:
        folder = Path(path).parent
        if not folder.is_dir():
            raise InputError(f"{path}: folder {folder} does not exist")
        if Path(path).is_dir():
            raise InputError(f"{path}: is a directory")
    return fmt


def check_input_path(path: str | Path) -> str:
    """InputError unless `path` is '-' or an existing, non-empty file; returns its name for messages.

    Checked before the file type, so that a folder is reported as a folder.
    """
    if str(path) == STDIO:
        return "<stdin>"
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory; DATA must be one .csv, .csv.gz or .parquet file")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    return str(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (after resolving links and '..'); '-' is never a file."""
    if STDIO in (str(a), str(b)):
        return False
    first, second = Path(a).resolve(), Path(b).resolve()
    if first == second:
        return True
    with contextlib.suppress(OSError):
        return first.exists() and second.exists() and os.path.samefile(first, second)
    return False


def check_distinct_paths(inputs: Mapping[str, str | Path | None], outputs: Mapping[str, str | Path | None]) -> None:
    """Before any work: no output overwrites an input, and no two outputs share a file (or stdout).

    `inputs` and `outputs` map an option name ('DATA', '--output', ...) to its path (None when unset).
    """
    given = [(option, path) for option, path in outputs.items() if path is not None]
    for option, path in given:
        for input_option, input_path in inputs.items():
            if input_path is not None and same_file(path, input_path):
                raise InputError(f"{path}: {option} would overwrite the input file ({input_option}); write elsewhere")
    for i, (option, path) in enumerate(given):
        for other, other_path in given[i + 1 :]:
            if str(path) == STDIO and str(other_path) == STDIO:
                raise InputError(f"{option} and {other} both write to stdout; give one of them a file name")
            if same_file(path, other_path):
                raise InputError(f"{path}: {option} and {other} name the same file; give each its own path")


def csv_separator(header: str) -> str:
    """The column separator of a CSV file, from its header line: ',' unless the line has none but ';', tab or '|'."""
    return next((sep for sep in CSV_SEPARATORS if sep in header), ",")


def _csv_source(path: str | Path, fmt: TableFormat) -> tuple[object, str]:
    """What pandas reads a CSV from (a path, or stdin's text) and its separator, sniffed from the header line."""
    if str(path) == STDIO:
        text = sys.stdin.read()
        return io.StringIO(text), csv_separator(text.split("\n", 1)[0])
    opener = gzip.open if fmt == "csv.gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    return path, csv_separator(header)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a whole CSV (text columns kept as strings, so ids like '007' survive) or Parquet file.

    A CSV file whose header has no comma but semicolons (tabs, bars) is read with that separator.
    """
    label = check_input_path(path)
    fmt = input_format(path)
    with read_errors(label, fmt):
        if fmt == "parquet":
            return pd.read_parquet(path)
        source, sep = _csv_source(path, fmt)
        return pd.read_csv(source, dtype=str, sep=sep, compression="gzip" if fmt == "csv.gz" else None)


def read_pieces(path: str | Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Consecutive row blocks of a CSV or Parquet file (optionally some columns), indexed by file row number."""
    label = check_input_path(path)
    fmt = input_format(path)
    with read_errors(label, fmt):
        if fmt == "parquet":
            import pyarrow.parquet as pq

            offset = 0
            # Without pre-buffering, the reader holds one 1 MiB read buffer per column; with it (pyarrow's
            # default) it kept every row group it had read until the file was closed (85 MiB of a 10M-row file).
            reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER)
            for batch in reader.iter_batches(batch_size=rows, columns=columns):
                piece = batch.to_pandas()
                piece.index = pd.RangeIndex(offset, offset + len(piece))
                offset += len(piece)
                yield piece
        else:
            source, sep = _csv_source(path, fmt)
            compression = "gzip" if fmt == "csv.gz" else None
            with pd.read_csv(
                source, dtype=str, sep=sep, chunksize=rows, compression=compression, usecols=columns
            ) as reader:
                yield from reader


@contextlib.contextmanager
def read_errors(label: str, fmt: str) -> Iterator[None]:
    """Turn what the CSV/Parquet readers raise into one-line InputErrors naming the file."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise InputError(f"{label}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{label}: cannot parse CSV: {first_line(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{label}: not UTF-8 text: {exc}") from exc
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except (OSError, ValueError, EOFError) as exc:  # pyarrow errors subclass these; gzip too
        raise InputError(f"{label}: cannot read {fmt} file: {first_line(exc)}") from exc


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it over `path`, on any failure delete it."""
    target = Path(path)
    folder = target.parent  # Path("x.csv").parent is Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{path}: cannot write here: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class TableWriter:
    """Append DataFrame chunks to one CSV / Parquet / JSON file (or CSV on stdout), published atomically.

    Use as a context manager: chunks go to a temporary file that replaces the target only when the
    block exits cleanly, so a failed or interrupted run leaves no partial output. JSON is one array
    of records; JSON Lines (.jsonl) one record per line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.format = output_format(path)
        self._stack: contextlib.ExitStack | None = None
        self._stream: IO | None = None
        self._parquet = None
        self._rows = 0
        self._csv_header_written = False
        self._tmp: Path | None = None

    def __enter__(self) -> "TableWriter":
        self._stack = contextlib.ExitStack()
        if self.path == STDIO:
            self._stream = sys.stdout
            return self
        try:
            tmp = self._stack.enter_context(atomic_path(self.path))
            if self.format == "csv.gz":
                self._stream = self._stack.enter_context(gzip.open(tmp, "wt", encoding="utf-8", newline=""))
            elif self.format != "parquet":
                self._stream = self._stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
            self._tmp = tmp
        except BaseException:
            self._stack.close()
            raise
        return self

    def write(self, frame: pd.DataFrame) -> None:
        """Append one chunk; every chunk must have the same columns as the first."""
        with self._write_errors():
            if self.format == "parquet":
                self._write_parquet(frame)
            elif self.format in ("csv", "csv.gz"):
                frame.to_csv(self._stream, index=False, header=not self._csv_header_written)
                self._csv_header_written = True
            elif len(frame) and self.format == "jsonl":
                self._stream.write(frame.to_json(orient="records", lines=True, date_format="iso").rstrip("\n") + "\n")
            elif len(frame):  # json: one array, opened by the first non-empty chunk and closed in _finish
                self._stream.write("[" if self._rows == 0 else ",")
                self._stream.write(frame.to_json(orient="records", date_format="iso")[1:-1])
        self._rows += len(frame)

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A failed write to a file (disk full, quota, I/O error) becomes one line naming the file."""
        try:
            yield
        except BrokenPipeError:  # stdout closed early: handled by the caller
            raise
        except OSError as exc:
            if self.path == STDIO:
                raise
            raise MoiraiError(f"{self.path}: cannot write: {exc.strerror or first_line(exc)}") from exc

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        """Append a chunk as a Parquet row group, creating the file with the first chunk's schema.

        A chunk whose float columns are wider than the file's (float64 forecasts after float32 ones)
        widens the file first, so no value is rounded to the first chunk's type.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._tmp, table.schema)
        else:
            schema = self._parquet.schema
            wider = pa.schema(
                [
                    field.with_type(pa.float64())
                    if pa.types.is_float32(field.type) and pa.types.is_float64(table.schema.field(field.name).type)
                    else field
                    for field in schema
                ],
                metadata=table.schema.metadata,
            )
            if not wider.equals(schema):
                self._widen(wider)
            table = table.cast(self._parquet.schema)
        self._parquet.write_table(table)

    def _widen(self, schema) -> None:
        """Rewrite the Parquet rows written so far with `schema`, one row group at a time."""
        import pyarrow.parquet as pq

        self._parquet.close()
        old = self._tmp.with_name(self._tmp.name + ".old")
        os.replace(self._tmp, old)
        try:
            self._parquet = pq.ParquetWriter(self._tmp, schema)
            written = pq.ParquetFile(old)
            for group in range(written.num_row_groups):
                self._parquet.write_table(written.read_row_group(group).cast(schema))
        finally:
            old.unlink(missing_ok=True)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                with self._write_errors():
                    self._finish()
            except BaseException as err:
                self._stack.__exit__(type(err), err, err.__traceback__)
                raise
        elif self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
        if self.path == STDIO:
            self._stream.flush()
        return bool(self._stack.__exit__(exc_type, exc, tb))

    def _finish(self) -> None:
        """Close the format's structure so the file is valid even when no rows were written."""
        if self.format == "json":
            self._stream.write("]" if self._rows else "[]")
        elif self.format == "parquet" and self._parquet is not None:
            self._parquet.close()
        elif self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}), self._tmp)


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write one DataFrame to CSV / Parquet / JSON by extension ('-' = CSV on stdout), atomically."""
    with TableWriter(path) as writer:
        writer.write(frame)
