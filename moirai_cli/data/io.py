"""Reading CSV / Parquet tables and writing result tables atomically (CSV, Parquet, JSON)."""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator, Literal

import pandas as pd

from moirai_cli.errors import InputError, first_line
from moirai_cli.runtime import hold_stop_signals, release_stop_signals

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
    """InputError unless `path` is '-' or an existing, non-empty file; returns its name for messages."""
    if str(path) == STDIO:
        return "<stdin>"
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a data file")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    return str(path)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a whole CSV (text columns kept as strings, so ids like '007' survive) or Parquet file."""
    fmt = input_format(path)
    label = check_input_path(path)
    with read_errors(label, fmt):
        if fmt == "parquet":
            return pd.read_parquet(path)
        source = sys.stdin if str(path) == STDIO else path
        return pd.read_csv(source, dtype=str, compression="gzip" if fmt == "csv.gz" else None)


def read_pieces(path: str | Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Consecutive row blocks of a CSV or Parquet file (optionally some columns), indexed by file row number."""
    fmt = input_format(path)
    label = check_input_path(path)
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
            source = sys.stdin if str(path) == STDIO else path
            compression = "gzip" if fmt == "csv.gz" else None
            with pd.read_csv(source, dtype=str, chunksize=rows, compression=compression, usecols=columns) as reader:
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


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where Linux allows (/proc/self/status)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (briefly) and put it back
    os.umask(mask)
    return mask


def new_file_mode(target: Path) -> int:
    """The permissions `open(target, "w")` would leave: an existing file's own, else 0666 less the umask."""
    with contextlib.suppress(OSError):
        info = target.stat()
        if stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode)
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it over `path`, on any failure delete it.

    The file ends up with the permissions a plain `open(path, "w")` gives (see new_file_mode).
    """
    target = Path(path)
    folder = target.parent  # Path("x.csv").parent is Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist")
    mode = new_file_mode(target)
    # A stop signal between creating the file and entering the `try` below would leave it behind:
    # the command line's handler holds it back until then (runtime.hold_stop_signals).
    hold_stop_signals()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        release_stop_signals()
        raise InputError(f"{path}: cannot write here: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        try:
            with contextlib.suppress(OSError):  # a file system without modes (e.g. FAT) keeps what it has
                os.fchmod(fd, mode)  # mkstemp creates 0600 files; the result should look like any other new file
        finally:
            try:
                os.close(fd)
            finally:
                release_stop_signals()  # a signal that came meanwhile is raised here, and the file is removed
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

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        """Append a chunk as a Parquet row group, creating the file with the first chunk's schema."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._tmp, table.schema)
        else:
            table = table.cast(self._parquet.schema)
        self._parquet.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
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
