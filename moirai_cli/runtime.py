"""Process-wide settings for CPU inference and clean shutdown; the command line applies them at start-up.

A notebook user can call `use_threads` the same way; the signal handlers are for the command line only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from moirai_cli.errors import InputError, check_at_least_one

# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGEST_MMAP_THRESHOLD = 32 * 1024 * 1024

THREADS_ENV = "MOIRAI_NUM_THREADS"
"""Environment variable that sets the number of compute threads when --threads is not given."""


def keep_freed_memory_for_reuse() -> bool:
    """Ask glibc to recycle freed activation buffers instead of returning them to the system.

    Decoding allocates and frees tensors of a few MiB thousands of times; by default glibc
    hands such blocks back to the kernel each time, and every reuse pays page faults again
    (measured: about 12% of exact decoding on a 2-core machine). The heap then stays at its
    high-water mark, which is the peak memory anyway. Returns whether the setting was
    applied (only on Linux with glibc).
    """
    libc = glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGEST_MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc on Linux (it has mallopt), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


# --- How many threads, and how they wait ---

WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def let_idle_threads_sleep() -> bool:
    """Make idle OpenMP threads sleep at once instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user chose.

    torch's CPU thread pool is GNU OpenMP, whose threads spin (for milliseconds) after each
    parallel region, waiting for the next. Alone on the machine that saves a wake-up of a few
    microseconds; when another process is busy on the same cores, the spinning threads take CPU
    time from the one thread still computing, which then waits for the scheduler at every one
    of the thousands of regions of a forecast (benchmarks/README.md: a parity test went from
    39 s to 297 s). libgomp reads the setting when torch loads it, so this only takes effect
    before torch is imported; returns whether it did. Setting OMP_WAIT_POLICY or GOMP_SPINCOUNT
    yourself keeps your choice.
    """
    if "torch" in sys.modules or any(os.environ.get(name) for name in WAIT_SETTINGS):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def usable_cpus(root: Path = Path("/")) -> int:
    """The CPUs this process may really use: its affinity mask, capped by its cgroup's CPU quota (rounded up).

    os.cpu_count() (and torch's default thread count) sees every core of the host, also in a
    container limited to a share of them, or under `taskset`. `root` is for tests.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup and its ancestors, v2 or v1; None when unlimited or unknown."""
    try:
        memberships = (root / "proc/self/cgroup").read_text().splitlines()
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in memberships:
        _, controllers, path = line.split(":", 2)
        version = 2 if controllers == "" else 1 if "cpu" in controllers.split(",") else None
        mount = _cgroup_mount(mounts, version) if version else None
        if mount is None:
            continue
        mount_root, mount_point = mount
        relative = path[len(mount_root):] if path.startswith(mount_root) else path
        folder = root / mount_point.lstrip("/") / relative.strip("/")
        top = root / mount_point.lstrip("/")
        while True:  # the tightest limit on the way up to the mount point applies
            limit = _read_cpu_limit(folder, version)
            if limit is not None:
                limits.append(limit)
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
    return min(limits) if limits else None


def _cgroup_mount(mounts: list[str], version: int) -> tuple[str, str] | None:
    """(root inside the hierarchy, mount point) of the cgroup2 mount or of the v1 mount with the cpu controller."""
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        parts, kinds = fields.split(), tail.split()
        if len(parts) < 5 or len(kinds) < 3:
            continue
        if version == 2 and kinds[0] == "cgroup2":
            return parts[3], parts[4]
        if version == 1 and kinds[0] == "cgroup" and "cpu" in kinds[2].split(","):
            return parts[3], parts[4]
    return None


def _read_cpu_limit(folder: Path, version: int) -> float | None:
    """CPUs allowed by one cgroup folder (cpu.max, or cpu.cfs_quota_us / cpu.cfs_period_us), None if unlimited."""
    try:
        if version == 2:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def threads_to_use(requested: int | None = None) -> int:
    """`requested` if given, else the MOIRAI_NUM_THREADS environment variable, else usable_cpus()."""
    if requested is None and os.environ.get(THREADS_ENV, "").strip():
        text = os.environ[THREADS_ENV].strip()
        try:
            requested = int(text)
        except ValueError:
            raise InputError(f"{THREADS_ENV}: '{text}' is not a whole number of threads") from None
        if requested < 1:
            raise InputError(f"{THREADS_ENV} must be at least 1, got {requested}")
    if requested is None:
        return usable_cpus()
    check_at_least_one(("threads", requested))
    return requested


def use_threads(requested: int | None = None) -> int:
    """Set torch's compute threads (see threads_to_use) and return how many."""
    import torch

    count = threads_to_use(requested)
    torch.set_num_threads(count)
    return count


# --- Stopping cleanly ---


class StopSignal(KeyboardInterrupt):
    """A termination signal turned into an exception, so that pending outputs are cleaned up as on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Held:
    """Stop signals held back: how deep in held sections the program is, and the first signal that came."""

    depth = 0
    pending: int | None = None


def hold_stop_signals() -> None:
    """Start a section in which the handlers of stop_cleanly_on_signals only note a signal.

    For the few steps between creating a temporary file and arming its clean-up. Sections nest;
    each must end with release_stop_signals.
    """
    _Held.depth += 1


def release_stop_signals() -> None:
    """End a held section; at the outermost end, raise StopSignal for a signal that came meanwhile."""
    _Held.depth = max(0, _Held.depth - 1)
    if _Held.depth == 0 and _Held.pending is not None:
        signum, _Held.pending = _Held.pending, None
        raise StopSignal(signum)


def stop_cleanly_on_signals() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise StopSignal in the main thread.

    `timeout`, `docker stop`, Slurm and CI cancellation send SIGTERM, a closed terminal SIGHUP;
    by default either kills the process on the spot and leaves temporary files behind. After
    the first signal the others are ignored, so the clean-up itself cannot be cut short. A
    signal that was ignored when the process started (e.g. SIGHUP under `nohup`) stays ignored,
    and one that comes inside hold_stop_signals is raised when the section ends.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        for number in STOP_SIGNALS:
            if signal.getsignal(number) is stop:
                signal.signal(number, signal.SIG_IGN)
        if _Held.depth:
            _Held.pending = signum  # raised by release_stop_signals
            return
        raise StopSignal(signum)

    for number in STOP_SIGNALS:
        if signal.getsignal(number) != signal.SIG_IGN:
            signal.signal(number, stop)


def interruption(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The one-line message and the exit status (128 + signal number, as a shell reports it) for an interruption."""
    signum = getattr(exc, "signum", None)
    if signum is None:  # Ctrl-C, or an interruption that carries its exit code (a download stopped by SIGTERM)
        signum = getattr(exc, "exit_code", 128 + signal.SIGINT) - 128
    message = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    return message, 128 + int(signum)
