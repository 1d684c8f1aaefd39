"""Process settings: how many CPUs the process may use (affinity, cgroup v1 and v2 quotas) and the thread count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moirai_cli import runtime
from moirai_cli.errors import InputError
from moirai_cli.runtime import THREADS_ENV, cgroup_cpu_quota, threads_to_use, usable_cpus, use_threads

ROOT = Path(__file__).resolve().parents[1]


def fake_system(root: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    """A directory tree with /proc/self/cgroup, /proc/self/mountinfo and cgroup files, as a process would see them."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
    "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:11 - cgroup cgroup rw,cpu,cpuacct\n"
    "33 31 0:30 /docker/abc /sys/fs/cgroup/memory ro,nosuid master:12 - cgroup cgroup rw,memory\n"
)


def test_cgroup_v2_quota_of_a_parent_applies(tmp_path):
    root = fake_system(tmp_path, "0::/user.slice/job.scope\n", V2_MOUNT, {
        "sys/fs/cgroup/cpu.max": "max 100000\n",
        "sys/fs/cgroup/user.slice/cpu.max": "150000 100000\n",
        "sys/fs/cgroup/user.slice/job.scope/cpu.max": "max 100000\n",
    })
    assert cgroup_cpu_quota(root) == 1.5


def test_cgroup_v2_tightest_limit_wins_and_unlimited_is_none(tmp_path):
    files = {"sys/fs/cgroup/a/cpu.max": "300000 100000\n", "sys/fs/cgroup/a/b/cpu.max": "50000 100000\n"}
    assert cgroup_cpu_quota(fake_system(tmp_path / "x", "0::/a/b\n", V2_MOUNT, files)) == 0.5
    unlimited = {"sys/fs/cgroup/a/cpu.max": "max 100000\n"}
    assert cgroup_cpu_quota(fake_system(tmp_path / "y", "0::/a\n", V2_MOUNT, unlimited)) is None


def test_cgroup_v1_quota_in_a_container(tmp_path):
    """Docker's view: the process's cgroup path equals the mount's root, so the limit sits at the mount point."""
    cgroup = "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    root = fake_system(tmp_path, cgroup, V1_MOUNTS, {
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "250000\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_cpu_quota(root) == 2.5
    unlimited = fake_system(tmp_path / "u", cgroup, V1_MOUNTS, {
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_cpu_quota(unlimited) is None


def test_no_cgroup_information_means_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path) is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    root = fake_system(tmp_path, "0::/job\n", V2_MOUNT, {"sys/fs/cgroup/job/cpu.max": "150000 100000\n"})
    assert usable_cpus(root) == 2
    assert usable_cpus(tmp_path / "nothing") == 4
    tiny = fake_system(tmp_path / "t", "0::/job\n", V2_MOUNT, {"sys/fs/cgroup/job/cpu.max": "10000 100000\n"})
    assert usable_cpus(tiny) == 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_a_process_pinned_to_one_cpu_uses_one_thread():
    probe = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "import torch; from moirai_cli.runtime import use_threads; print(use_threads(), torch.get_num_threads())"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(THREADS_ENV, None)
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["1", "1"]


@pytest.fixture
def torch_threads():
    """Put torch's thread count back after a test changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_from_the_option_then_the_environment_then_the_cpus(monkeypatch, torch_threads):
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 5)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert threads_to_use() == 5
    monkeypatch.setenv(THREADS_ENV, " 3 ")
    assert threads_to_use() == 3 and threads_to_use(2) == 2
    assert use_threads(1) == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("env, requested, message", [
    ("two", None, "MOIRAI_NUM_THREADS: 'two' is not a whole number"),
    ("0", None, "MOIRAI_NUM_THREADS must be at least 1, got 0"),
    (None, 0, "^threads must be at least 1, got 0"),  # a Python caller's error names the parameter
])
def test_bad_thread_counts_are_input_errors(monkeypatch, env, requested, message):
    if env is None:
        monkeypatch.delenv(THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(THREADS_ENV, env)
    with pytest.raises(InputError, match=message):
        threads_to_use(requested)


@pytest.mark.parametrize(
    "env, first, expected",
    [
        ({}, "moirai_cli", "PASSIVE"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "moirai_cli", "ACTIVE"),  # the user's choice stays
        ({"GOMP_SPINCOUNT": "300000"}, "moirai_cli", "None"),  # so does a spin count
        ({}, "torch", "None"),  # too late once torch (and OpenMP) is loaded: nothing changed
    ],
)
def test_idle_openmp_threads_sleep_unless_the_user_chose(env, first, expected):
    probe = f"import os, {first}, moirai_cli; print(os.environ.get('OMP_WAIT_POLICY'))"
    clean = {k: v for k, v in os.environ.items() if k not in runtime.WAIT_SETTINGS}
    result = subprocess.run(
        [sys.executable, "-c", probe], env={**clean, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == expected
