"""Reading CSV / Parquet tables and writing result tables atomically (CSV, Parquet, JSON)."""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import functools
import gzip
import hashlib
import io
import json
import os
import posixpath
import socket
import stat
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Literal, Mapping, Union

import numpy as np
import pandas as pd

from moirai_cli.data.sources import GLOB_CHARACTERS, STDIO, DataFile, DataSource, filesystem_for, is_uri, resolve_source
from moirai_cli.errors import InputError, MoiraiError, first_line
from moirai_cli.runtime import hold_stop_signals, release_stop_signals


TableFormat = Literal["csv", "csv.gz", "parquet", "json", "jsonl", "dataset"]

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

FILE_ROWS = "moirai_file_rows"  # attrs key of a table stacked from several files: [(file label, rows), ...] in order
PARQUET_READ_BUFFER = 1 << 20  # bytes read at a time per Parquet column
CSV_SEPARATORS = (",", ";", "\t", "|")  # tried in this order on the header line
# CSV cells are read as their text, and only an empty cell is missing: 'NA' (Namibia), 'None', 'null' or 'nan'
# can be series ids. In number and timestamp columns those spellings still mean a missing value (MISSING_TEXTS).
CSV_TEXT_CELLS = {"keep_default_na": False, "na_values": [""]}
MISSING_TEXTS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
     "NULL", "NaN", "None", "n/a", "nan", "null", "+nan", "+NaN"]
)  # pandas' default missing-value spellings (read_csv's na_values), and signed NaN


def spelled_missing(values: pd.Series) -> np.ndarray:
    """Which cells of a text column are missing: empty, or spelled as one of MISSING_TEXTS (after stripping)."""
    text = values.astype("string").str.strip()
    return (text.isna() | text.isin(MISSING_TEXTS)).to_numpy(dtype=bool)


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
    """The format a result is written as: by extension ('-' is CSV on stdout); a folder is a Parquet dataset.

    A path names a folder when it ends with '/', is an existing folder, or has no extension
    (`-o forecasts/`, `-o s3://bucket/forecasts`).
    """
    if str(path) == STDIO:
        return "csv"
    if names_folder(path):
        return "dataset"
    return _format_from_suffix(path, _WRITE_SUFFIXES, "write")


def names_folder(path: str | Path) -> bool:
    """Whether an output path names a folder (written as a Parquet dataset) rather than one file."""
    text = str(path)
    if text.endswith("/") or (not is_uri(text) and Path(text).is_dir()):
        return True
    return "." not in posixpath.basename(text)


def check_output_path(path: str | Path) -> TableFormat:
    """Validate an output path before any work: known extension, an existing folder to write into."""
    fmt = output_format(path)
    if str(path) == STDIO:
        return fmt
    if fmt == "dataset":
        DatasetWriter(path).check()
    elif is_uri(path):
        filesystem_for(path)
    else:
        folder = Path(path).parent
        if not folder.is_dir():
            raise InputError(f"{path}: folder {folder} does not exist")
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


@dataclass(frozen=True)
class _Place:
    """Where a path option points, in a form two spellings of one place share: a local absolute path with
    links resolved (file:// URIs included), or a normalised remote URI (scheme in lower case, no '//' or '..')."""

    given: str
    local: Path | None = None
    uri: str | None = None

    @classmethod
    def of(cls, location: str | Path) -> "_Place":
        text = str(location)
        if not is_uri(text):
            return cls(text, local=Path(os.path.abspath(text)).resolve())
        scheme, rest = text.split("://", 1)
        if scheme.lower() == "file":
            with contextlib.suppress(InputError):
                return cls(text, local=Path(filesystem_for(text)[1]).resolve())
        return cls(text, uri=f"{scheme.lower()}://{posixpath.normpath(rest).strip('/')}")

    @property
    def key(self) -> str:
        return str(self.local) if self.local is not None else str(self.uri)

    def same(self, other: "_Place") -> bool:
        """The same file: the same resolved path or URI, or (local files) the same inode (a hard link)."""
        if self.key == other.key and (self.local is None) == (other.local is None):
            return True
        if self.local is None or other.local is None:
            return False
        with contextlib.suppress(OSError):
            return os.path.samefile(self.local, other.local)
        return False

    def holds(self, other: "_Place") -> bool:
        """Whether `other` lies strictly inside this place taken as a folder."""
        if (self.local is None) != (other.local is None):
            return False
        if self.local is not None:
            return self.local != other.local and other.local.is_relative_to(self.local)
        return other.key.startswith(self.key.rstrip("/") + "/")


@dataclass(frozen=True)
class _InputPlace:
    """An input option resolved: the file, folder or glob it names and, for local ones, the data files it holds."""

    option: str
    place: _Place
    kind: Literal["file", "folder", "pattern"]
    pattern: str | None = None  # a glob, absolute (local) or normalised (remote), to match outputs against
    files: tuple[_Place, ...] = ()

    @classmethod
    def of(cls, option: str, location: str | Path) -> "_InputPlace":
        place = _Place.of(location)
        text = place.given
        glob_at = min((text.find(c) for c in GLOB_CHARACTERS if c in text), default=-1)
        if glob_at >= 0:
            pattern = place.key
            if place.local is not None:
                pattern = os.path.normpath(filesystem_for(text)[1] if is_uri(text) else os.path.abspath(text))
            return cls(option, place, "pattern", pattern, cls._local_files(place, text))
        if place.local is not None and place.local.is_dir():
            return cls(option, place, "folder", files=cls._local_files(place, text))
        if place.local is None and text.endswith("/"):
            return cls(option, place, "folder")
        return cls(option, place, "file", files=(place,))

    @staticmethod
    def _local_files(place: _Place, text: str) -> tuple[_Place, ...]:
        """The data files a local folder or glob names (none when it names nothing: reading reports that)."""
        if place.local is None:
            return ()
        try:
            return tuple(_Place.of(file.path) for file in resolve_source(text).files)
        except InputError:
            return ()

    @functools.cached_property
    def _file_keys(self) -> frozenset[str]:
        return frozenset(file.key for file in self.files)

    @functools.cached_property
    def _file_inodes(self) -> frozenset[tuple[int, int]]:
        """(device, inode) of each local input file: a hard link has another path but the same inode."""
        inodes = set()
        for file in self.files:
            with contextlib.suppress(OSError):
                info = os.stat(file.local)
                inodes.add((info.st_dev, info.st_ino))
        return frozenset(inodes)

    def _is_input_file(self, output: _Place) -> bool:
        if output.key in self._file_keys:
            return True
        if output.local is None:
            return False
        try:
            info = os.stat(output.local)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) in self._file_inodes

    def conflict(self, output: _Place, folder: bool) -> str | None:
        """Why writing `output` (a dataset folder when `folder`) would destroy or mix with this input, else None."""
        name = f"({self.option})"
        if self._is_input_file(output):
            return f"would overwrite the input file {name}"
        if self.kind == "folder" and output.same(self.place):
            return f"is the input folder {name}"
        if self.kind == "folder" and self.place.holds(output):
            return f"is inside the input folder {name}"
        if self.kind == "pattern" and fnmatch.fnmatchcase(output.key, self.pattern or ""):
            return f"matches the input pattern {name}"
        if folder:
            held = next((file for file in self.files if output.holds(file)), None)
            if held is None and self.place.local is None and output.holds(self.place):
                held = self.place
            if held is not None:
                return f"is a folder that holds input files of {self.option} ({posixpath.basename(held.key)})"
        return None


def check_distinct_paths(inputs: Mapping[str, str | Path | None], outputs: Mapping[str, str | Path | None]) -> None:
    """Before any work: no output is an input, lies in an input folder or matches an input glob, or is a folder
    holding inputs; no two outputs share a file (or stdout), and none lies in another's dataset folder.

    `inputs` and `outputs` map an option name ('DATA', '--output', ...) to its path (None when unset). Every
    spelling of a place is compared as one: relative or absolute, file:// URIs, symbolic and hard links, the
    files of a folder or glob; remote URIs as normalised text.
    """
    sources = [_InputPlace.of(option, path) for option, path in inputs.items() if path is not None and str(path) != STDIO]
    given = [(option, str(path)) for option, path in outputs.items() if path is not None]
    places = {option: _Place.of(path) for option, path in given if path != STDIO}
    for option, path in given:
        if path == STDIO:
            continue
        for source in sources:
            problem = source.conflict(places[option], names_folder(path))
            if problem is not None:
                raise InputError(f"{path}: {option} {problem}; write elsewhere")
    for i, (option, path) in enumerate(given):
        for other, other_path in given[i + 1 :]:
            if path == STDIO and other_path == STDIO:
                raise InputError(f"{option} and {other} both write to stdout; give one of them a file name")
            if STDIO in (path, other_path):
                continue
            if places[option].same(places[other]):
                raise InputError(f"{path}: {option} and {other} name the same file; give each its own path")
            for outer, inner in ((option, other), (other, option)):
                if names_folder(outputs[outer]) and places[outer].holds(places[inner]):
                    raise InputError(f"{outputs[inner]}: {inner} is inside the folder of {outer}; give each its own path")


def csv_separator(header: str) -> str:
    """The column separator of a CSV file, from its header line: ',' unless the line has none but ';', tab or '|'."""
    return next((sep for sep in CSV_SEPARATORS if sep in header), ",")


Readable = Union[str, Path, DataSource]


def as_source(data: Readable) -> DataSource:
    """A resolved DataSource for a path, folder, glob or URI (an existing DataSource is returned as is)."""
    return data if isinstance(data, DataSource) else resolve_source(data)


def read_table(path: Readable) -> pd.DataFrame:
    """Read a whole CSV (text columns kept as strings, so ids like '007' survive) or Parquet file, or every file of a dataset.

    The files of a folder or glob are read in sorted order and stacked, with their hive partition
    values as text columns. A CSV file whose header has no comma but semicolons (tabs, bars) is read
    with that separator.
    """
    source = as_source(path)
    frames = [_read_file(source, file) for file in source.files]
    if len(frames) == 1:
        return frames[0]
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs[FILE_ROWS] = [(file.label, len(part)) for file, part in zip(source.files, frames)]
    return frame


def _read_file(source: DataSource, file: DataFile) -> pd.DataFrame:
    """One whole data file of a source, with its partition columns."""
    fmt = input_format(file.path)
    with read_errors(file.label, fmt):
        if fmt == "parquet":
            frame = pd.read_parquet(file.path, filesystem=_remote(source))
        else:
            with _csv_input(source, file) as (handle, sep):
                frame = pd.read_csv(
                    handle, dtype=str, sep=sep, compression="gzip" if fmt == "csv.gz" else None, **CSV_TEXT_CELLS
                )
    return _with_partitions(frame, file)


def read_pieces(path: Readable | DataFile, rows: int, columns: list[str] | None = None, *, source: DataSource | None = None) -> Iterator[pd.DataFrame]:
    """Consecutive row blocks of a CSV or Parquet file (optionally some columns), indexed by file row number.

    Given a folder or glob, the files follow each other in sorted order, each piece from one file
    and numbered from that file's first row (`piece.attrs["source"]` names the file). Pass a
    DataFile with the `source` it belongs to, to read that file alone.
    """
    if isinstance(path, DataFile):
        assert source is not None, "a DataFile is read with its source"
        yield from _file_pieces(source, path, rows, columns)
        return
    source = as_source(path)
    for file in source.files:
        yield from _file_pieces(source, file, rows, columns)


def _file_pieces(source: DataSource, file: DataFile, rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    """read_pieces for one file of a source."""
    fmt = input_format(file.path)
    wanted = None if columns is None else [c for c in columns if c not in dict(file.partitions)]
    with read_errors(file.label, fmt):
        if fmt == "parquet":
            import pyarrow.parquet as pq

            offset = 0
            # Without pre-buffering, the reader holds one 1 MiB read buffer per column; with it (pyarrow's
            # default) it kept every row group it had read until the file was closed (85 MiB of a 10M-row file).
            reader = pq.ParquetFile(
                file.path, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER, filesystem=_remote(source)
            )
            for batch in reader.iter_batches(batch_size=rows, columns=wanted):
                piece = batch.to_pandas()
                piece.index = pd.RangeIndex(offset, offset + len(piece))
                offset += len(piece)
                yield _with_partitions(piece, file, columns)
        else:
            compression = "gzip" if fmt == "csv.gz" else None
            with _csv_input(source, file) as (handle, sep):
                with pd.read_csv(
                    handle, dtype=str, sep=sep, chunksize=rows, compression=compression, usecols=wanted, **CSV_TEXT_CELLS
                ) as reader:
                    for piece in reader:
                        yield _with_partitions(piece, file, columns)


def _remote(source: DataSource):
    """The filesystem to hand to readers: None for local files (read by path, as before), else the source's."""
    import pyarrow.fs as pafs

    return None if source.filesystem is None or isinstance(source.filesystem, pafs.LocalFileSystem) else source.filesystem


@contextlib.contextmanager
def _csv_input(source: DataSource, file: DataFile) -> Iterator[tuple[object, str]]:
    """What pandas reads a CSV file from (stdin's text, a local path, or a stream opened on the source's
    filesystem) and the file's separator, sniffed from its header line."""
    compressed = input_format(file.path) == "csv.gz"
    if file.path == STDIO:
        text = _stdin_text()  # read whole: the header is needed before pandas starts
        yield io.StringIO(text), csv_separator(text.split("\n", 1)[0])
        return
    remote = _remote(source)
    if remote is None:
        check_input_path(file.path)
        with open(file.path, "rb") as handle:
            sep = csv_separator(_header_line(handle, compressed))
        yield file.path, sep
        return
    with remote.open_input_file(file.path) as stream:  # seekable: the header is read, then the file from its start
        sep = csv_separator(_header_line(stream, compressed))
        stream.seek(0)
        yield stream, sep


def _stdin_text() -> str:
    """All of stdin as text; InputError when the process has no stdin (started with it closed)."""
    try:
        if sys.stdin is None:
            raise ValueError("no stdin")
        return sys.stdin.read()
    except (OSError, ValueError):  # closed (`<&-`): None, or a stream whose descriptor is gone
        raise InputError("<stdin>: stdin is closed; pipe the CSV into the command, or give DATA as a file") from None


def _header_line(handle: IO[bytes], compressed: bool) -> str:
    """The first line of a binary file object (gzip-compressed or not), as text."""
    raw = gzip.GzipFile(fileobj=handle) if compressed else handle
    line = bytearray()
    while not line.endswith(b"\n"):
        block = raw.read(4096)
        if not block:
            break
        line += block
    return bytes(line).split(b"\n", 1)[0].decode("utf-8", errors="replace")


def _with_partitions(frame: pd.DataFrame, file: DataFile, columns: list[str] | None = None) -> pd.DataFrame:
    """A file's rows (binary columns as text) with its hive partition values added as text columns (those in
    `columns`, when given)."""
    _decode_binary_columns(frame)
    for key, value in file.partitions:
        if columns is not None and key not in columns:
            continue
        if key in frame.columns:
            raise InputError(f"{file.label}: column '{key}' is both in the file and a partition folder ({key}={value})")
        frame[key] = pd.Series(value, index=frame.index, dtype=object)
    return frame


def _decode_binary_columns(frame: pd.DataFrame) -> None:
    """Turn the bytes of binary Parquet columns into text where every value is UTF-8 (ids were written `b'MSFT'`);
    a column that is not UTF-8 stays bytes (an id column of such values is refused when the series are built)."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        present = values.dropna()
        if present.empty or not isinstance(present.iloc[0], bytes):
            continue
        with contextlib.suppress(UnicodeDecodeError, AttributeError):
            frame[column] = values.str.decode("utf-8", errors="strict")


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


# --- publishing outputs: one at a time, or a run's outputs together ---

_UPLOAD, _FOLDER, _FILE = 0, 1, 2  # the order a stage publishes in: the steps likeliest to fail first, renames last


class OutputStage:
    """The outputs of one run, each written in full to a temporary place, waiting to be published together.

    Made by `publish_together`; every TableWriter, DatasetWriter and atomic_path (tables, samples, plots,
    uploads to URIs) closed inside that block adds its last step here instead of taking it.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[int, Callable[[], None], Callable[[], None]]] = []  # (order, publish, discard)

    def add(self, order: int, publish: Callable[[], None], discard: Callable[[], None]) -> None:
        """Stage an output: `publish` moves it into place (and cleans up), `discard` removes what was staged."""
        self._steps.append((order, publish, discard))

    def publish(self) -> None:
        """Publish every staged output: uploads, then dataset folders, then file renames. When one fails, the
        outputs not yet published are discarded and its error is raised."""
        steps, self._steps = sorted(self._steps, key=lambda step: step[0]), []
        for position, (_, publish, _) in enumerate(steps):
            try:
                publish()
            except BaseException:
                for _, _, discard in steps[position + 1 :]:
                    with contextlib.suppress(Exception):
                        discard()
                raise

    def discard(self) -> None:
        """Remove every staged output; the older files of the same names stay as they were."""
        steps, self._steps = self._steps, []
        for _, _, discard in steps:
            with contextlib.suppress(Exception):
                discard()


_STAGE: contextvars.ContextVar[OutputStage | None] = contextvars.ContextVar("moirai_output_stage", default=None)


@contextlib.contextmanager
def publish_together() -> Iterator[OutputStage]:
    """A block whose outputs are published together when it exits cleanly, or not at all.

    Every output written inside (TableWriter, DatasetWriter, write_table, atomic_path: forecast and
    samples tables, per-window tables, plots, uploads to URIs) is written to a temporary place and
    moved into place only after the whole block succeeded; when anything in it fails (an error, a stop
    signal), every staged file is removed and older files of the same names are left untouched. Output
    to stdout is not staged. Inside another such block, it joins the outer one.
    """
    current = _STAGE.get()
    if current is not None:
        yield current
        return
    stage = OutputStage()
    token = _STAGE.set(stage)
    try:
        yield stage
    except BaseException:
        stage.discard()
        raise
    finally:
        _STAGE.reset(token)
    stage.publish()


def _when_done(order: int, publish: Callable[[], None], discard: Callable[[], None]) -> None:
    """Publish an output now, or stage it when a publish_together block is open."""
    stage = _STAGE.get()
    if stage is None:
        publish()
    else:
        stage.add(order, publish, discard)


@functools.cache
def _machine_tag() -> str:
    """This machine (host name and pid namespace) as 8 hex digits: a process id in a temporary name is only
    judged where it means the same process."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:8]


def _owner_tag() -> str:
    """The owner part of this process's temporary names: '<machine>-<pid>'."""
    return f"{_machine_tag()}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    """Whether a process of this id runs (another user's counts; a reused id keeps a file, never the reverse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temporaries(fs, folder: str, name: str) -> None:
    """Delete what killed runs left in `folder` while writing `name`: `.NAME.<machine>-<pid>.*.tmp` files and
    folders (and `.tmp.old`) made on this machine by a process that is gone. Anything else stays."""
    import pyarrow.fs as pafs

    prefix = f".{name}."
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=False, allow_not_found=True))
    except OSError:
        return
    for info in infos:
        entry = posixpath.basename(info.path)
        if not entry.startswith(prefix) or not entry.endswith((".tmp", ".tmp.old")):
            continue
        machine, _, pid = entry[len(prefix) :].split(".", 1)[0].rpartition("-")
        if machine != _machine_tag() or not pid.isdigit() or _process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(info.path)
            else:
                fs.delete_file(info.path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it over `path` (or stage it, inside
    publish_together), on any failure delete it.

    The file ends up with the permissions a plain `open(path, "w")` gives (see new_file_mode). For a URI
    (`s3://bucket/out.csv`) the temporary file is local and is uploaded on success. Temporary files that a
    killed run left beside `path` are removed first.
    """
    if is_uri(path):
        with _uploaded(str(path)) as tmp:
            yield tmp
        return
    import pyarrow.fs as pafs

    target = Path(path)
    folder = target.parent  # Path("x.csv").parent is Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist")
    remove_stale_temporaries(pafs.LocalFileSystem(), str(folder.absolute()), target.name)
    with _temporary_file(str(path), f".{target.name}.{_owner_tag()}.", folder, new_file_mode(target)) as tmp:
        yield tmp
        _when_done(_FILE, functools.partial(_replace, tmp, target), functools.partial(tmp.unlink, missing_ok=True))


def _replace(tmp: Path, target: Path) -> None:
    """Move a finished temporary file over its target (removing it when that fails)."""
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _uploaded(uri: str) -> Iterator[Path]:
    """A local temporary file that is copied to `uri` when the block succeeds (or staged, inside
    publish_together), and deleted either way."""
    import pyarrow.fs as pafs

    fs, target = filesystem_for(uri)
    remove_stale_temporaries(pafs.LocalFileSystem(), tempfile.gettempdir(), "moirai-upload")
    with _temporary_file(f"{uri} (a local temporary file)", f".moirai-upload.{_owner_tag()}.") as tmp:
        yield tmp
        _when_done(_UPLOAD, functools.partial(_upload, tmp, uri, fs, target), functools.partial(tmp.unlink, missing_ok=True))


def _upload(tmp: Path, uri: str, fs, target: str) -> None:
    """Copy a finished local temporary file to its URI, then delete it."""
    import pyarrow.fs as pafs

    try:
        with _write_errors(uri):
            pafs.copy_files(str(tmp), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _temporary_file(label: str, prefix: str, folder: Path | None = None, mode: int | None = None) -> Iterator[Path]:
    """A new temporary file (in `folder`, with `mode`), deleted when the block fails; `label` names it in errors.

    A stop signal between creating the file and entering the `try` below would leave it behind: the
    command line's handler holds it back until then (runtime.hold_stop_signals).
    """
    hold_stop_signals()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    except OSError as exc:
        release_stop_signals()
        raise InputError(f"{label}: cannot write here: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        try:
            if mode is not None:
                with contextlib.suppress(OSError):  # a file system without modes (e.g. FAT) keeps what it has
                    os.fchmod(fd, mode)  # mkstemp creates 0600 files; the result should look like any other new file
        finally:
            try:
                os.close(fd)
            finally:
                release_stop_signals()  # a signal that came meanwhile is raised here, and the file is removed
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _write_errors(location: str) -> Iterator[None]:
    """Filesystem errors while writing as one-line InputErrors naming the output."""
    try:
        yield
    except PermissionError:
        raise InputError(f"{location}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{location}: cannot write here: {first_line(exc)}") from exc


def widened_schema(schema, incoming):
    """`schema` with each column widened to hold `incoming`'s values too: float32 (float16) to float64 when
    `incoming` has float64 there, an all-null column to `incoming`'s type; the metadata of `incoming`."""
    import pyarrow as pa

    fields = []
    for field in schema:
        other = incoming.field(field.name).type if field.name in incoming.names else field.type
        if pa.types.is_floating(field.type) and pa.types.is_floating(other) and other.bit_width > field.type.bit_width:
            field = field.with_type(other)
        elif pa.types.is_null(field.type):
            field = field.with_type(other)
        fields.append(field)
    return pa.schema(fields, metadata=incoming.metadata)


def rewritten_parquet(fs, path: str, schema):
    """Rewrite the closed Parquet file at `path` (on `fs`) with `schema`, one row group at a time; returns a
    writer left open on it, so that more rows can follow."""
    import pyarrow.parquet as pq

    old = path + ".old"
    fs.move(path, old)
    try:
        writer = pq.ParquetWriter(path, schema, filesystem=fs)
        with fs.open_input_file(old) as handle:
            written = pq.ParquetFile(handle)
            for group in range(written.num_row_groups):
                writer.write_table(written.read_row_group(group).cast(schema))
    finally:
        fs.delete_file(old)
    return writer


def json_records(frame: pd.DataFrame) -> list[str]:
    """Each row of a table as one JSON object, exact: floats as the shortest text that reads back to the same
    float (1e-13 stays 1e-13), timestamps in ISO 8601 at their full resolution with their UTC offset, NaN as null."""
    keys = [json.dumps(str(column), ensure_ascii=False) + ":" for column in frame.columns]
    cells = [_json_cells(frame.iloc[:, position]) for position in range(frame.shape[1])]
    return ["{" + ",".join(key + cell for key, cell in zip(keys, row)) + "}" for row in zip(*cells)]


def _json_cells(values: pd.Series) -> list[str]:
    """One column's values as JSON texts (see json_records)."""
    dtype = values.dtype
    if dtype.kind == "f":
        array = values.to_numpy()
        return np.where(np.isfinite(array), array.astype(str), "null").tolist()
    if dtype.kind in "iu":
        return values.to_numpy().astype(str).tolist()
    if dtype.kind == "b":
        return np.where(values.to_numpy(), "true", "false").tolist()
    if dtype.kind == "M" or isinstance(dtype, pd.DatetimeTZDtype):
        stamps = pd.DatetimeIndex(values)
        text = np.asarray(stamps.astype(str), dtype=object)
        return ['"' + t.replace(" ", "T", 1) + '"' if isinstance(t, str) else "null" for t in np.where(stamps.isna(), None, text)]
    return [_json_value(value) for value in values.tolist()]


def _json_value(value: object) -> str:
    """One value of a column of mixed or text values as JSON text."""
    if value is None or value is pd.NaT or value is pd.NA:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if np.isfinite(value) else "null"
    if isinstance(value, pd.Timestamp):
        return json.dumps(value.isoformat())
    return json.dumps(str(value), ensure_ascii=False)


class DatasetWriter:
    """Write DataFrame chunks as a Parquet dataset: `part-00000.parquet`, ... in a folder, local or a URI.

    The parts are written to a hidden folder beside the target and moved in only when the block
    exits cleanly, replacing the parts of an earlier run; a failed run leaves the target as it was.
    A target folder that holds anything but such parts is refused, so nothing of the user's is deleted.
    """

    PART_PATTERN = "part-*.parquet"

    def __init__(self, location: str | Path, rows_per_part: int = 1_000_000) -> None:
        self.location = str(location).rstrip("/") or str(location)
        self.rows_per_part = rows_per_part
        self._fs, self._target = filesystem_for(self.location)
        self._target = self._target.rstrip("/")
        self._parent, self._name = posixpath.split(self._target)
        self._tmp = posixpath.join(self._parent, f".{self._name}.{_owner_tag()}.{uuid.uuid4().hex[:12]}.tmp")
        self._writer = None
        self._schema = None
        self._parts = 0
        self._part_rows = 0

    def _existing(self) -> list[str] | None:
        """The files now in the target folder (None when there is no folder)."""
        import pyarrow.fs as pafs

        info = self._fs.get_file_info(self._target)
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type == pafs.FileType.File:
            raise InputError(f"{self.location}: is a file; give a folder for a Parquet dataset (or a file name with an extension)")
        infos = self._fs.get_file_info(pafs.FileSelector(self._target, recursive=True))
        return [i.path for i in infos if i.type == pafs.FileType.File]

    def check(self) -> None:
        """InputError, before any work, when the folder cannot be written or holds other files."""
        import pyarrow.fs as pafs

        with _write_errors(self.location):
            parent = posixpath.dirname(self._target)
            if isinstance(self._fs, pafs.LocalFileSystem) and self._fs.get_file_info(parent).type != pafs.FileType.Directory:
                raise InputError(f"{self.location}: folder {parent} does not exist")
            others = [p for p in self._existing() or [] if not self._is_part(p)]
            if others:
                raise InputError(
                    f"{self.location}: folder holds other files ({posixpath.basename(others[0])}); "
                    "write the dataset to a new or empty folder"
                )

    def _is_part(self, path: str) -> bool:
        return posixpath.dirname(path) == self._target and fnmatch.fnmatchcase(posixpath.basename(path), self.PART_PATTERN)

    def __enter__(self) -> "DatasetWriter":
        self.check()
        remove_stale_temporaries(self._fs, self._parent, self._name)
        with _write_errors(self.location):
            self._fs.create_dir(self._tmp, recursive=True)
        return self

    def write(self, frame: pd.DataFrame) -> None:
        """Append a chunk (same columns as the first); a new part starts every `rows_per_part` rows."""
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is not None and self._part_rows >= self.rows_per_part:
            self._close_part()
        if self._schema is not None:
            wider = widened_schema(self._schema, table.schema)
            if not wider.equals(self._schema):
                self._widen(wider)
            table = table.cast(self._schema)
        if self._writer is None:
            self._open_part(table.schema)
        self._writer.write_table(table)
        self._part_rows += len(table)

    def _part_path(self, part: int) -> str:
        return posixpath.join(self._tmp, f"part-{part:05d}.parquet")

    def _open_part(self, schema) -> None:
        import pyarrow.parquet as pq

        self._schema = schema
        with _write_errors(self.location):
            self._writer = pq.ParquetWriter(self._part_path(self._parts), schema, filesystem=self._fs)
        self._parts += 1
        self._part_rows = 0

    def _widen(self, schema) -> None:
        """Rewrite the parts written so far with a wider schema (float64 after float32), the open one left open."""
        with _write_errors(self.location):
            last = self._parts - 1
            for part in range(self._parts):
                if part == last and self._writer is not None:
                    self._writer.close()
                    self._writer = rewritten_parquet(self._fs, self._part_path(part), schema)
                else:
                    rewritten_parquet(self._fs, self._part_path(part), schema).close()
        self._schema = schema

    def _close_part(self) -> None:
        with _write_errors(self.location):
            self._writer.close()
        self._writer = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        staged = False
        try:
            if exc_type is None:
                if self._writer is None and self._parts == 0:
                    import pyarrow as pa

                    self._open_part(pa.schema([]))  # an empty dataset is one empty part, as a file would be
                if self._writer is not None:
                    self._close_part()
                _when_done(_FOLDER, self._publish, self._discard)
                staged = True
        finally:
            if not staged:
                self._discard()
        return False

    def _discard(self) -> None:
        """Remove the hidden folder of new parts (the target stays as it was)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        with contextlib.suppress(Exception):
            self._fs.delete_dir(self._tmp)

    def _publish(self) -> None:
        """Replace the target's old parts with the new ones (one rename when the folder is new and local)."""
        try:
            self._move_parts()
        finally:
            self._discard()

    def _move_parts(self) -> None:
        import pyarrow.fs as pafs

        with _write_errors(self.location):
            existing = self._existing()
            if existing is None and isinstance(self._fs, pafs.LocalFileSystem):
                self._fs.move(self._tmp, self._target)
                return
            for old in existing or []:
                self._fs.delete_file(old)
            self._fs.create_dir(self._target, recursive=True)
            for part in range(self._parts):
                name = f"part-{part:05d}.parquet"
                self._fs.move(posixpath.join(self._tmp, name), posixpath.join(self._target, name))


class TableWriter:
    """Append DataFrame chunks to one CSV / Parquet / JSON file, CSV on stdout, or a Parquet dataset folder, published atomically.

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
        self._dataset: DatasetWriter | None = None

    def __enter__(self) -> "TableWriter":
        self._stack = contextlib.ExitStack()
        if self.path == STDIO:
            self._stream = sys.stdout
            return self
        if self.format == "dataset":
            self._dataset = self._stack.enter_context(DatasetWriter(self.path))
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
            if self.format == "dataset":
                self._dataset.write(frame)
            elif self.format == "parquet":
                self._write_parquet(frame)
            elif self.format in ("csv", "csv.gz"):
                frame.to_csv(self._stream, index=False, header=not self._csv_header_written)
                self._csv_header_written = True
            elif len(frame) and self.format == "jsonl":
                self._stream.write("\n".join(json_records(frame)) + "\n")
            elif len(frame):  # json: one array, opened by the first non-empty chunk and closed in _finish
                self._stream.write("[" if self._rows == 0 else ",")
                self._stream.write(",".join(json_records(frame)))
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
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._tmp, table.schema)
        else:
            wider = widened_schema(self._parquet.schema, table.schema)
            if not wider.equals(self._parquet.schema):
                self._parquet.close()
                self._parquet = rewritten_parquet(pafs.LocalFileSystem(), str(self._tmp), wider)
            table = table.cast(self._parquet.schema)
        self._parquet.write_table(table)

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
