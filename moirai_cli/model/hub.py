"""Fetching checkpoint files from the Hugging Face Hub: bounded waits, verified bytes, causes named.

huggingface_hub does the transfers and owns the cache layout (models--org--name/blobs, snapshots,
refs). Around it, this module

- resolves the revision to a commit itself, with a connect and read timeout (huggingface_hub's
  own lookup inside snapshot_download waits forever), and falls back to a cached copy with one
  warning when the Hub does not answer, cannot be reached or fails;
- asks for each missing file's metadata (HEAD) with the same timeout, so a gated, private or
  missing file is reported before any transfer starts;
- downloads one file at a time in the calling thread, so Ctrl-C and SIGTERM stop it at once, and
  deletes any partial (.incomplete) file it leaves;
- checks each file against the digest the Hub publishes for it (the LFS sha256 of the weights, the
  git blob sha1 of small files): a mismatch deletes the file and downloads it once more;
- fetches optional files (the model card, README.md, whose metadata names the weights' licence)
  alongside a download, where a repo without them is fine and a failure costs one warning;
- turns huggingface_hub's retry log lines into at most one warning, and shows its progress bars
  only when asked to and stderr is a terminal.

Timeouts: MOIRAI_HUB_TIMEOUT seconds (default 4) for connecting and for each read, metadata and
downloads alike. A download that stalls for that long is resumed by huggingface_hub (up to five
times) before it fails.

Needs huggingface_hub 1.0 or later (pyproject.toml): the behaviour above is tested against 1.0,
1.33 and 2.4. The 0.x releases (on `requests`) differ in ways that matter here: 0.20 keeps partial
files for a later resume, does not resume a connection cut mid-file, and ignores force_download
for a cached commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from moirai_cli.errors import InputError, ModelError, first_line

TIMEOUT_VARIABLE = "MOIRAI_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 4.0
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
READ_BLOCK = 1 << 20
CARD_FILE = "README.md"  # the model card; its YAML front matter names the licence
LOCAL_FOLDER_HINT = "or load a local checkpoint folder (config.json + model.safetensors) instead"


class HubWarning(UserWarning):
    """Something worth one line that did not stop the fetch (a cached copy used, a download retried)."""


class HubError(ModelError):
    """A checkpoint could not be fetched from the Hub (exit code 1).

    `offers_local_folder` marks failures where loading a local checkpoint folder instead is a way
    out; `message(hint)` phrases that way out for the caller (a command line names its option).
    """

    def __init__(self, reason: str, *, offers_local_folder: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offers_local_folder = offers_local_folder

    def message(self, local_folder_hint: str | None = LOCAL_FOLDER_HINT) -> str:
        """The reason, followed by `local_folder_hint` when a local folder would help."""
        if self.offers_local_folder and local_folder_hint:
            return f"{self.reason}; {local_folder_hint}"
        return self.reason

    def __str__(self) -> str:
        return self.message()


class HubUnavailableError(HubError):
    """The Hub did not answer, could not be reached or failed with a server error: asking it again now is futile."""


class _NoSuchFile(HubError):
    """The repo (at that commit) has no such file."""


class DownloadInterrupted(KeyboardInterrupt):
    """SIGTERM arrived during a download; raised like Ctrl-C so every cleanup runs (exit code 128 + 15)."""

    exit_code = 128 + signal.SIGTERM


def hub_timeout() -> float:
    """Seconds to wait for a connection and for each read from the Hub (MOIRAI_HUB_TIMEOUT, default 4)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise InputError(f"{TIMEOUT_VARIABLE}: '{text}' is not a positive number of seconds")
    return value


def hub_endpoint() -> str:
    """The Hub's base URL as huggingface_hub uses it (HF_ENDPOINT, read when it was imported)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def is_offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, read at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def default_cache_dir() -> Path:
    """huggingface_hub's cache folder (HF_HUB_CACHE, or HF_HOME/hub, or ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cache_root(cache_dir: str | Path | None) -> Path:
    """The cache folder a `--cache-dir` option names, or huggingface_hub's default one."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


@dataclass(frozen=True)
class CachedRepo:
    """Where huggingface_hub keeps one model repo: models--{org}--{name}/{blobs,snapshots,refs}."""

    repo_id: str
    cache_dir: Path

    @classmethod
    def from_folder(cls, folder: Path) -> "CachedRepo | None":
        """The repo a cache folder `models--{org}--{name}` holds (the reverse of `folder`), else None."""
        parts = folder.name.removeprefix("models--").split("--")
        if not folder.name.startswith("models--") or len(parts) != 2 or not all(parts):
            return None
        return cls("/".join(parts), folder.parent)

    @property
    def folder(self) -> Path:
        return self.cache_dir / ("models--" + self.repo_id.replace("/", "--"))

    def snapshot(self, commit: str) -> Path:
        return self.folder / "snapshots" / commit

    def commit_of(self, revision: str | None) -> str | None:
        """The commit a revision names, if it is a commit or a ref recorded in the cache."""
        revision = revision or "main"
        if COMMIT_HASH.fullmatch(revision):
            return revision
        ref = self.folder / "refs" / revision
        with contextlib.suppress(OSError):
            commit = ref.read_text().strip()
            return commit if COMMIT_HASH.fullmatch(commit) else None
        return None

    def cached_snapshot(self, revision: str | None, filenames: Sequence[str]) -> tuple[str, Path] | None:
        """(commit, folder) when every file of the revision is in the cache."""
        commit = self.commit_of(revision)
        if commit is None:
            return None
        folder = self.snapshot(commit)
        return (commit, folder) if all((folder / name).is_file() for name in filenames) else None

    def absence(self, revision: str | None, filenames: Sequence[str]) -> str:
        """Why `revision` cannot be served from the cache, e.g. 'is not in the cache (DIR)'."""
        commit = self.commit_of(revision)
        folder = self.snapshot(commit) if commit else None
        missing = [name for name in filenames if folder is None or not (folder / name).is_file()]
        if folder is None or not folder.is_dir() or len(missing) == len(filenames):
            return f"is not in the cache ({self.cache_dir})"
        return f"is only partly in the cache ({folder} has no {', '.join(missing)})"

    def refs(self) -> dict[str, str]:
        """Every branch or tag recorded in the cache (refs/<name>, pull requests' refs/pr/<n> too) -> its commit."""
        folder = self.folder / "refs"
        found = {}
        for ref in sorted(folder.rglob("*")) if folder.is_dir() else ():
            with contextlib.suppress(OSError):
                commit = ref.read_text().strip() if ref.is_file() else ""
                if COMMIT_HASH.fullmatch(commit):
                    found[ref.relative_to(folder).as_posix()] = commit
        return found

    def snapshot_commits(self, filenames: Sequence[str] = ()) -> list[str]:
        """Commits with a snapshot folder holding every one of `filenames`, newest folder first."""
        folder = self.folder / "snapshots"
        snapshots = [path for path in folder.iterdir() if COMMIT_HASH.fullmatch(path.name)] if folder.is_dir() else []
        complete = [path for path in snapshots if all((path / name).is_file() for name in filenames)]
        return [path.name for path in sorted(complete, key=_modified, reverse=True)]

    def record_ref(self, revision: str, commit: str) -> None:
        """Point refs/<revision> at `commit`, atomically, as a snapshot download does."""
        if COMMIT_HASH.fullmatch(revision) or self.commit_of(revision) == commit:
            return
        ref = self.folder / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        partial = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
        partial.write_text(commit)
        os.replace(partial, ref)


def download_files(
    repo_id: str,
    filenames: Sequence[str],
    *,
    optional: Sequence[str] = (),
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    verify: bool = False,
    progress: bool = True,
) -> Path:
    """Fetch `filenames` of a Hub model repo into the cache and return their snapshot folder.

    force: download again even when cached. verify: check cached files against the Hub's digests
    too, downloading again any that differ (repairs a damaged cache). progress: allow
    huggingface_hub's progress bars (only ever drawn on a terminal). `optional` files (the model
    card) are fetched too, when one of `filenames` is downloaded or with force or verify, but the
    snapshot does not need them: a repo without them is fine, and failing to fetch one is a
    warning. A cached snapshot is used without them.
    """
    _check_repo_id(repo_id)
    cache = CachedRepo(repo_id, cache_root(cache_dir))
    if revision is not None and COMMIT_HASH.fullmatch(revision) and not (force or verify):
        # A commit never changes: with every file cached there is nothing to ask the Hub.
        cached = cache.cached_snapshot(revision, filenames)
        if cached is not None:
            return cached[1]
    if is_offline():
        return _offline_snapshot(cache, revision, filenames, force)
    endpoint, timeout = hub_endpoint(), hub_timeout()
    with _bounded_requests(timeout):
        return _fetch(
            cache, filenames, optional, revision, endpoint, timeout, force=force, verify=verify, progress=progress
        )


def _fetch(
    cache: CachedRepo,
    filenames: Sequence[str],
    optional: Sequence[str],
    revision: str | None,
    endpoint: str,
    timeout: float,
    *,
    force: bool,
    verify: bool,
    progress: bool,
) -> Path:
    """download_files once the Hub is to be asked: look the commit up, then fetch what is missing."""
    repo_id = cache.repo_id
    try:
        commit = _lookup_commit(repo_id, revision, endpoint, timeout)
    except _HubUnavailable as exc:
        cached = None if force else cache.cached_snapshot(revision, filenames)
        if cached is None:
            raise HubError(
                f"{exc.reason}, and model '{repo_id}'{_revision_text(revision)} {cache.absence(revision, filenames)}; "
                f"{exc.remedy}",
                offers_local_folder=True,
            ) from exc.cause
        warnings.warn(f"{exc.reason}; using cached commit {cached[0]} of '{repo_id}'", HubWarning, stacklevel=4)
        return cached[1]
    with _interruptible(), _progress_bars(progress):
        notice = _RetryNotice(endpoint)
        downloaded = False
        for name in filenames:
            downloaded |= _fetch_file(cache, name, commit, endpoint, timeout, force=force, verify=verify, notice=notice)
        if downloaded or force or verify:
            for name in optional:
                _fetch_optional_file(cache, name, commit, endpoint, timeout, force=force, verify=verify, notice=notice)
    if revision is None or not COMMIT_HASH.fullmatch(revision):
        with contextlib.suppress(OSError):  # a read-only cache still serves the snapshot by commit
            cache.record_ref(revision or "main", commit)
    return cache.snapshot(commit)


def _check_repo_id(repo_id: str) -> None:
    """Refuse a name the Hub cannot hold before any request or cache lookup."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(
            f"model '{repo_id}' is neither a checkpoint folder nor a valid Hub repo id ({_detail(exc)})"
        ) from exc


def refetch_command(folder: Path) -> str | None:
    """The `moirai download ... --force` command that replaces `folder` if it is a Hub cache snapshot."""
    folder = Path(folder)
    snapshots = folder.parent
    repo_folder = snapshots.parent
    cache = CachedRepo.from_folder(repo_folder) if snapshots.name == "snapshots" else None
    if cache is None:
        return None
    command = f"moirai download {cache.repo_id} --force"
    if cache.commit_of("main") != folder.name:
        command += f" --revision {folder.name}"
    with contextlib.suppress(OSError):
        if cache.cache_dir.resolve() != default_cache_dir().expanduser().resolve():
            command += f" --cache-dir {cache.cache_dir}"
    return command


# --- the revision lookup and the cache fallback -------------------------------------------------


class _HubUnavailable(Exception):
    """The Hub could not answer the question (no answer, unreachable, server error): a cached copy may do."""

    def __init__(self, reason: str, remedy: str, cause: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.remedy = remedy
        self.cause = cause


def _offline_snapshot(cache: CachedRepo, revision: str | None, filenames: Sequence[str], force: bool) -> Path:
    """The cached snapshot of `revision`, or an error saying offline mode forbids fetching it."""
    cached = None if force else cache.cached_snapshot(revision, filenames)
    if cached is not None:
        return cached[1]
    what = "cannot be downloaded again" if force else cache.absence(revision, filenames)
    raise HubError(
        f"model '{cache.repo_id}'{_revision_text(revision)} {what} and offline mode is on "
        "(HF_HUB_OFFLINE); unset HF_HUB_OFFLINE to download it",
        offers_local_folder=True,
    )


def _lookup_commit(repo_id: str, revision: str | None, endpoint: str, timeout: float) -> str:
    """The commit `revision` (default: main) of a model repo points to, asked with a bounded wait."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision or "main", timeout=timeout)
        commit = getattr(info, "sha", None)
    except (KeyError, TypeError, ValueError) as exc:
        if _http_status(exc) is None:  # a 200 answer that is not the Hub's JSON: a portal or proxy page
            raise HubError(
                f"the server at {endpoint} did not answer like the Hugging Face Hub when asked about model '{repo_id}' "
                "(a captive portal or proxy login page?); check HF_ENDPOINT and your network",
                offers_local_folder=True,
            ) from exc
        raise _named_failure(exc, repo_id, revision, None, endpoint, timeout) from exc
    except Exception as exc:
        raise _named_failure(exc, repo_id, revision, None, endpoint, timeout) from exc
    if not isinstance(commit, str) or not COMMIT_HASH.fullmatch(commit):
        raise HubError(
            f"the server at {endpoint} gave no commit for model '{repo_id}'{_revision_text(revision)}; "
            "check HF_ENDPOINT (is it a Hugging Face Hub?)",
            offers_local_folder=True,
        )
    return commit


def _named_failure(
    exc: BaseException, repo_id: str, revision: str | None, filename: str | None, endpoint: str, timeout: float
) -> BaseException:
    """The HubError (or, for an outage, _HubUnavailable) that names why a request to the Hub failed."""
    if isinstance(exc, (HubError, _HubUnavailable)):
        return exc
    status = _http_status(exc)
    page = f"{endpoint}/{repo_id}"
    offline_hint = "with HF_HUB_OFFLINE=1, cached models load without asking the Hub"
    if status is None:
        kind = _transport_failure(exc)
        if kind == "offline":
            return HubError(
                f"offline mode is on (HF_HUB_OFFLINE), so model '{repo_id}' cannot be fetched; unset HF_HUB_OFFLINE",
                offers_local_folder=True,
            )
        if kind == "timeout":
            return _HubUnavailable(
                f"the Hub at {endpoint} did not answer within {timeout:g} s",
                f"check your network or proxy ({TIMEOUT_VARIABLE} sets the wait); {offline_hint}",
                exc,
            )
        if kind == "proxy":
            return _HubUnavailable(
                f"the proxy to the Hub at {endpoint} failed ({_detail(exc)})",
                f"check HTTPS_PROXY / HTTP_PROXY; {offline_hint}",
                exc,
            )
        if kind == "network":
            return _HubUnavailable(
                f"the Hub at {endpoint} cannot be reached ({_detail(exc)})",
                f"check your network, proxy (HTTPS_PROXY) or HF_ENDPOINT; {offline_hint}",
                exc,
            )
        return HubError(f"cannot fetch model '{repo_id}' from {endpoint}: {type(exc).__name__}: {_detail(exc)}")
    if status >= 500 or status in (408, 429):
        label = "server error" if status >= 500 else "rate limited" if status == 429 else "request timeout"
        return _HubUnavailable(f"the Hub at {endpoint} answered HTTP {status} ({label})", f"try again later; {offline_hint}", exc)
    code = _error_code(exc)
    token = _has_token()
    if code == "GatedRepo" or _is_instance(exc, "GatedRepoError"):
        if status == 403 and token:
            return HubError(
                f"model '{repo_id}' is gated and your token (HF_TOKEN or your saved login) has not been granted access: "
                f"accept the licence on {page} with that account, then try again"
            )
        return HubError(
            f"model '{repo_id}' is gated: accept the licence on {page}, then log in with `hf auth login` "
            "or set HF_TOKEN to a token of that account"
        )
    if code == "RevisionNotFound" or _is_instance(exc, "RevisionNotFoundError"):
        return HubError(f"model '{repo_id}' has no revision '{revision or 'main'}' (a branch, tag or commit) on {endpoint}")
    if code == "EntryNotFound" or (filename is not None and status == 404 and code != "RepoNotFound"):
        return _NoSuchFile(f"model '{repo_id}' has no {filename} on {endpoint}: is it a Moirai checkpoint?")
    if status == 401 and code != "RepoNotFound":
        return HubError(
            f"the Hub at {endpoint} rejected your token (HF_TOKEN or your saved login) for model '{repo_id}': "
            "it is invalid or expired; set a valid HF_TOKEN or log in again with `hf auth login`"
        )
    if code == "RepoNotFound" or _is_instance(exc, "RepositoryNotFoundError") or status == 404:
        if token:
            return HubError(
                f"model '{repo_id}' was not found on {endpoint}, or your token cannot read it: check the name "
                "(a private model needs a token of an account with access, in HF_TOKEN or `hf auth login`)"
            )
        return HubError(
            f"model '{repo_id}' was not found on {endpoint}, or it is private: check the name; for a private model "
            "log in with `hf auth login` or set HF_TOKEN",
            offers_local_folder=True,
        )
    if status == 403:
        return HubError(
            f"the Hub at {endpoint} refused access to model '{repo_id}' (HTTP 403): your token lacks permission to "
            "read it; use a token with read access (HF_TOKEN or `hf auth login`)"
        )
    return HubError(f"the Hub at {endpoint} answered HTTP {status} for model '{repo_id}': {_detail(exc)}")


# --- one file: metadata, download, digest check -------------------------------------------------


@dataclass(frozen=True)
class _Published:
    """What the Hub says about one file at one commit."""

    digest: str | None  # sha256 (LFS files) or git blob sha1 (small files), lower-case hex
    size: int | None


def _fetch_file(
    cache: CachedRepo,
    name: str,
    commit: str,
    endpoint: str,
    timeout: float,
    *,
    force: bool,
    verify: bool,
    notice: "_RetryNotice",
) -> bool:
    """Make snapshots/<commit>/<name> hold the Hub's bytes of `name`, downloading (and checking) as needed.

    Returns whether it was downloaded (False: the cached copy was kept).
    """
    pointer = cache.snapshot(commit) / name
    repair = False
    if pointer.is_file() and not force:
        if not verify:
            return False
        published = _file_metadata(cache.repo_id, name, commit, endpoint, timeout)
        if _mismatch(pointer, published) is None:
            return False
        warnings.warn(
            f"{pointer} does not match the digest the Hub publishes for it; downloading it again", HubWarning, stacklevel=4
        )
        repair = True
    else:
        published = _file_metadata(cache.repo_id, name, commit, endpoint, timeout)
    problem = None
    for attempt in (1, 2):
        try:
            path = _download(cache, name, commit, endpoint, timeout, force=force or repair or attempt > 1, notice=notice)
            problem = _mismatch(path, published)
        except _FailedTransfer as exc:
            problem = str(exc)
        if problem is None:
            return True
        _discard(pointer)
        if attempt == 1:
            notice.say(f"{name} of '{cache.repo_id}' {problem}; downloading it once more")
    raise HubError(
        f"{name} of model '{cache.repo_id}' from {endpoint} {problem}, twice; nothing was kept. Try again later; "
        "if it persists, a proxy or mirror is altering the download"
    )


def _fetch_optional_file(
    cache: CachedRepo, name: str, commit: str, endpoint: str, timeout: float, *, force: bool, verify: bool, notice: "_RetryNotice"
) -> None:
    """_fetch_file for a file the checkpoint can do without: a repo without it is fine, any other failure one warning."""
    try:
        _fetch_file(cache, name, commit, endpoint, timeout, force=force, verify=verify, notice=notice)
    except _NoSuchFile:
        pass
    except HubError as exc:
        warnings.warn(f"{name} of '{cache.repo_id}' was not fetched ({exc.reason})", HubWarning, stacklevel=4)


def fetch_model_card(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path | None:
    """Fetch only the model card (README.md) of a revision (default: main) into the cache; None if the repo has none.

    The card lands in the revision's snapshot folder, checked against the Hub's digest, and no ref
    is recorded: what a revision resolves to offline stays the commit whose weights are cached.
    Waits are bounded as for download_files. Raises HubUnavailableError when the Hub does not
    answer, cannot be reached or fails, and HubError for any other refusal (offline mode included).
    """
    _check_repo_id(repo_id)
    cache = CachedRepo(repo_id, cache_root(cache_dir))
    if is_offline():
        raise HubError(f"offline mode is on (HF_HUB_OFFLINE), so the model card of '{repo_id}' cannot be fetched")
    endpoint, timeout = hub_endpoint(), hub_timeout()
    with _bounded_requests(timeout):
        try:
            commit = _lookup_commit(repo_id, revision, endpoint, timeout)
        except _HubUnavailable as exc:
            raise HubUnavailableError(f"{exc.reason}; {exc.remedy}") from exc.cause
        with _interruptible(), _progress_bars(False):
            try:
                _fetch_file(cache, CARD_FILE, commit, endpoint, timeout, force=False, verify=False, notice=_RetryNotice(endpoint))
            except _NoSuchFile:
                return None
    return cache.snapshot(commit) / CARD_FILE


def _file_metadata(repo_id: str, name: str, commit: str, endpoint: str, timeout: float) -> _Published:
    """The published digest and size of one file (a HEAD request with a bounded wait)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, name, revision=commit, endpoint=endpoint)
    try:
        metadata = get_hf_file_metadata(url=url, timeout=timeout)
    except Exception as exc:
        failure = _named_failure(exc, repo_id, commit, name, endpoint, timeout)
        if isinstance(failure, _HubUnavailable):
            failure = HubUnavailableError(f"{failure.reason} while asking about {name} of model '{repo_id}'; {failure.remedy}")
        raise failure from exc
    etag = (metadata.etag or "").strip('"').lower().removeprefix("w/").strip('"')
    digest = etag if SHA256.fullmatch(etag) or COMMIT_HASH.fullmatch(etag) else None
    return _Published(digest, metadata.size)


class _FailedTransfer(Exception):
    """A download that went wrong in a way worth one more try (bytes missing, connection cut); the message says how."""


def _download(
    cache: CachedRepo, name: str, commit: str, endpoint: str, timeout: float, *, force: bool, notice: "_RetryNotice"
) -> Path:
    """Download one file with huggingface_hub into the cache and return its snapshot path."""
    from huggingface_hub import hf_hub_download

    blobs = cache.folder / "blobs"
    before = set(blobs.glob("*.incomplete")) if blobs.is_dir() else set()
    try:
        with notice.watching(name):
            path = hf_hub_download(
                cache.repo_id,
                name,
                revision=commit,
                cache_dir=str(cache.cache_dir),
                endpoint=endpoint,
                etag_timeout=timeout,
                force_download=force,
            )
    except BaseException as exc:
        for partial in set(blobs.glob("*.incomplete")) - before if blobs.is_dir() else ():
            partial.unlink(missing_ok=True)
        if isinstance(exc, KeyboardInterrupt):
            raise
        short = re.search(r"should be of size (\d+) but has size (\d+)", str(exc))
        if short:
            raise _FailedTransfer(f"arrived incomplete ({short.group(2)} of {short.group(1)} bytes)") from exc
        if _http_status(exc) is None and _transport_failure(exc) == "network":
            # Cut mid-file and not resumed (huggingface_hub resumes some breaks, depending on its version).
            raise _FailedTransfer(f"could not be downloaded: the connection broke ({_detail(exc)})") from exc
        failure = _named_failure(exc, cache.repo_id, commit, name, endpoint, timeout)
        if isinstance(failure, _HubUnavailable):
            failure = HubUnavailableError(
                f"{failure.reason} while downloading {name} of model '{cache.repo_id}'; nothing was kept; {failure.remedy}"
            )
        raise failure from exc
    return Path(path)


def _mismatch(path: Path, published: _Published) -> str | None:
    """Why the file at `path` is not the published one (size or digest), or None when it is (or cannot be told)."""
    size = path.stat().st_size
    if published.size is not None and size != published.size:
        return f"arrived incomplete ({size} of {published.size} bytes)" if size < published.size else f"has {size} bytes, not {published.size}"
    if published.digest is None:
        return None
    if len(published.digest) == 64:
        digest = hashlib.sha256()
        kind = "sha256"
    else:  # a git blob id: sha1 of "blob <size>\0" + content
        digest = hashlib.sha1(f"blob {size}\0".encode())
        kind = "git blob sha1"
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
    actual = digest.hexdigest()
    if actual == published.digest:
        return None
    return f"does not match the {kind} the Hub publishes for it (got {actual[:12]}, expected {published.digest[:12]})"


def _discard(pointer: Path) -> None:
    """Delete a cached file: the blob it links to and the snapshot link itself."""
    with contextlib.suppress(OSError):
        if pointer.is_symlink():
            pointer.resolve().unlink(missing_ok=True)
        pointer.unlink(missing_ok=True)


# --- what goes on around the downloads ------------------------------------------------------------


class _RetryNotice:
    """At most one warning line about retries, however many huggingface_hub logs."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.said = False

    def say(self, message: str) -> None:
        if not self.said:
            self.said = True
            warnings.warn(message, HubWarning, stacklevel=3)

    @contextlib.contextmanager
    def watching(self, filename: str) -> Iterator[None]:
        """Route huggingface_hub's log lines to this notice while `filename` downloads."""
        notice = self

        class Capture(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno < logging.WARNING:
                    return
                text = record.getMessage()
                if re.search(r"retr(y|ies|ying)|resum", text, re.IGNORECASE):
                    notice.say(f"the connection to {notice.endpoint} broke while downloading {filename}; resuming")
                else:
                    warnings.warn(f"huggingface_hub: {first_line(Exception(text)).rstrip('.')}", HubWarning, stacklevel=2)

        logger = logging.getLogger("huggingface_hub")  # it writes to stderr through its own handler
        saved = logger.handlers[:], logger.propagate
        logger.handlers[:] = [Capture()]
        logger.propagate = False
        try:
            yield
        finally:
            logger.handlers[:], logger.propagate = saved


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Let SIGTERM interrupt a download like Ctrl-C (so partial files are deleted), where it would just kill us."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise DownloadInterrupted("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _progress_bars(wanted: bool) -> Iterator[None]:
    """huggingface_hub's progress bars only when wanted and stderr is a terminal."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    show = wanted and _stderr_is_terminal()
    if not show and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not show and not was_disabled:
            enable_progress_bars()


@contextlib.contextmanager
def _bounded_requests(seconds: float) -> Iterator[None]:
    """Settings huggingface_hub reads at each request, for the duration of a fetch.

    HF_HUB_DOWNLOAD_TIMEOUT bounds each read of a download by `seconds`. Telemetry is off: with
    it on, huggingface_hub 1.x-2.x first fetches an "agent harness" list from the endpoint (3 s
    timeout), so a silent endpoint would cost two waits instead of one.
    """
    from huggingface_hub import constants

    settings = {"HF_HUB_DOWNLOAD_TIMEOUT": seconds, "HF_HUB_DISABLE_TELEMETRY": True}
    saved = {name: getattr(constants, name) for name in settings if hasattr(constants, name)}
    for name in saved:
        setattr(constants, name, settings[name])
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)


def _modified(path: Path) -> float:
    """A path's modification time, 0 when it cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _stderr_is_terminal() -> bool:
    try:
        return os.isatty(2)
    except OSError:
        return False


# --- reading exceptions from several huggingface_hub and HTTP client versions -----------------------


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _error_code(exc: BaseException) -> str | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        return headers.get("X-Error-Code") if headers is not None else None
    except Exception:
        return None


def _is_instance(exc: BaseException, class_name: str) -> bool:
    return any(kind.__name__ == class_name for kind in type(exc).__mro__)


def _transport_failure(exc: BaseException) -> str | None:
    """'offline', 'timeout', 'proxy' or 'network' for a failure to talk to the server (any client library)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the cause may be wrapped
        seen.add(id(current))
        names = {kind.__name__ for kind in type(current).__mro__}
        if "OfflineModeIsEnabled" in names:
            return "offline"
        if any("Timeout" in name for name in names) or isinstance(current, TimeoutError):
            return "timeout"
        if any("ProxyError" in name for name in names):
            return "proxy"
        if names & {"ConnectError", "ConnectionError", "NetworkError", "RemoteProtocolError", "ProtocolError", "TransportError"}:
            return "network"
        if isinstance(current, (ConnectionError, socket.gaierror, socket.herror)):
            return "network"
        current = current.__cause__ or current.__context__
    return None


def _detail(exc: BaseException) -> str:
    """A short, one-line description of a low-level failure (no trailing period)."""
    return first_line(exc).rstrip(". ") or type(exc).__name__


def _revision_text(revision: str | None) -> str:
    return f" at revision '{revision}'" if revision else ""


def _has_token() -> bool:
    """Whether requests to the Hub carry a token (HF_TOKEN or a saved login)."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - very old huggingface_hub
        return bool(os.environ.get("HF_TOKEN"))
    try:
        return bool(get_token())
    except Exception:
        return False
