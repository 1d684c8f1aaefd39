"""Where tables live: one file, a folder or glob of files (hive partitions too), on any pyarrow or fsspec filesystem.

`resolve_source` turns what the user typed (`data.csv`, `data/`, `data/*.parquet`, `s3://bucket/sales/`,
`file:///tmp/x.csv`, '-') into a `DataSource`: the filesystem and the sorted list of data files, each
with the hive partition values (`store=7/` -> column `store` = '7') found in its path.

Object stores go through pyarrow's own filesystems (s3://, gs://, abfs://, hdfs://), which need no
extra package and are configured the usual way (AWS_* variables or ~/.aws for S3, including
AWS_ENDPOINT_URL for S3-compatible servers). Any other fsspec protocol (az://, http://, memory://, ...)
goes through fsspec with the implementation package fsspec names when it is missing.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moirai_cli.errors import InputError, first_line

if TYPE_CHECKING:
    import pyarrow.fs

STDIO = "-"
GLOB_CHARACTERS = "*?["
PYARROW_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


@dataclass(frozen=True)
class DataFile:
    """One data file of a source: `path` on the source's filesystem, `label` for messages, hive partition values."""

    path: str
    label: str
    partitions: tuple[tuple[str, str], ...] = ()


@dataclass
class DataSource:
    """What DATA names: a filesystem (None for stdin) and its data files in sorted order."""

    location: str  # as the user wrote it; used in messages about the whole source
    files: list[DataFile]
    filesystem: "pyarrow.fs.FileSystem | None" = None

    @property
    def is_stdin(self) -> bool:
        return self.filesystem is None

    @property
    def label(self) -> str:
        """How the whole source is named in messages."""
        return "<stdin>" if self.is_stdin else self.location


def is_uri(location: str | Path) -> bool:
    """Whether `location` has a URI scheme (`s3://...`, `file:///...`), as opposed to a local path."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1


def filesystem_for(location: str | Path) -> tuple["pyarrow.fs.FileSystem", str]:
    """The pyarrow filesystem and the path on it for a local path or a URI (fsspec protocols wrapped for pyarrow)."""
    import pyarrow.fs as pafs

    text = str(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(text).absolute())
    scheme = text.split("://", 1)[0].lower()
    if scheme in PYARROW_SCHEMES:
        try:
            return pafs.FileSystem.from_uri(text)
        except (OSError, ValueError) as exc:
            raise InputError(f"{text}: cannot open this location: {first_line(exc)}") from None
    return _fsspec_filesystem(text, scheme)


def _fsspec_filesystem(uri: str, scheme: str) -> tuple["pyarrow.fs.FileSystem", str]:
    """An fsspec filesystem wrapped for pyarrow; a missing implementation package is a one-line error naming it."""
    import pyarrow.fs as pafs

    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise InputError(f"{uri}: reading {scheme}:// needs fsspec: pip install fsspec") from None
    if scheme not in known_implementations and scheme not in fsspec.available_protocols():
        raise InputError(f"{uri}: unknown location type '{scheme}://' (use a local path, s3://, gs://, abfs:// or an fsspec protocol)")
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        hint = known_implementations.get(scheme, {}).get("err") or first_line(exc)
        raise InputError(f"{uri}: {scheme}:// needs another package: {hint}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{uri}: cannot open this location: {first_line(exc)}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _label(location: str, base: str, path: str) -> str:
    """How a file found under `base` is named in messages: the user's location joined with its relative path."""
    if path == base:
        return location
    relative = posixpath.relpath(path, base) if base else path
    return location.rstrip("/") + "/" + relative


def _partitions(base: str, path: str) -> tuple[tuple[str, str], ...]:
    """Hive `key=value` folders between `base` and the file, in order (values URL-unquoted, as Hive writes them)."""
    relative = posixpath.relpath(posixpath.dirname(path), base) if base else posixpath.dirname(path)
    pairs = []
    for part in relative.split("/"):
        key, sep, value = part.partition("=")
        if sep and key:
            pairs.append((key, urllib.parse.unquote(value)))
    return tuple(pairs)


def _is_data_file(path: str) -> bool:
    """A readable table that is not a hidden or bookkeeping file (`.x`, `_SUCCESS`, `_metadata`)."""
    name = posixpath.basename(path)
    return not name.startswith((".", "_")) and name.lower().endswith(DATA_SUFFIXES)


def _special_kind(path: str) -> str:
    """What a local path that is neither a file nor a folder is, for messages: a named pipe, a device, a socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"


def resolve_source(location: str | Path) -> DataSource:
    """The data files `location` names: '-', a file, a folder (searched recursively) or a glob, local or a URI.

    Raises InputError when nothing is there, when a folder or glob holds no data file, or when
    files disagree on their hive partition columns.
    """
    text = str(location)
    if text == STDIO:
        return DataSource(text, [DataFile(STDIO, "<stdin>")])
    import pyarrow.fs as pafs

    fs, path = filesystem_for(text)
    path = path.rstrip("/") or path
    glob_at = min((path.find(c) for c in GLOB_CHARACTERS if c in path), default=-1)
    try:
        if glob_at >= 0:
            base = path[:glob_at].rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            found = [i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise InputError(f"{text}: no such file")
            if info.type == pafs.FileType.Unknown and isinstance(fs, pafs.LocalFileSystem):
                raise InputError(
                    f"{text}: not a regular file ({_special_kind(path)}); give a file or folder, "
                    "or pipe the CSV into stdin with DATA '-'"
                )
            if info.type == pafs.FileType.File:
                if info.size == 0:
                    raise InputError(f"{text}: file is empty")
                return DataSource(text, [DataFile(path, text)], fs)
            base = path
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
            found = [i.path for i in infos if i.type == pafs.FileType.File]
    except PermissionError:
        raise InputError(f"{text}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{text}: cannot list this location: {first_line(exc)}") from None
    files = [DataFile(p, _label(text, base, p), _partitions(base, p)) for p in sorted(found) if _is_data_file(p)]
    if not files:
        where = "matches this pattern" if glob_at >= 0 else "is in this folder"
        raise InputError(f"{text}: no .csv, .csv.gz, .parquet or .pq file {where}")
    keys = {tuple(k for k, _ in f.partitions) for f in files}
    if len(keys) > 1:
        shown = " vs ".join("/".join(k) or "(none)" for k in sorted(keys)[:2])
        raise InputError(f"{text}: files sit under different partition folders ({shown}); point DATA at one dataset")
    return DataSource(text, files, fs)
