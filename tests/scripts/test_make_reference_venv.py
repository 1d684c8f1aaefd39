"""scripts/make-reference-venv.sh: usage, and reuse of an environment that already works (no network involved)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-reference-venv.sh"


def fake_environment(folder: Path, works: bool) -> Path:
    """A DIR whose bin/python answers the script's import check as told, and whose pip only logs its calls."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    check = 0 if works else 1
    python.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/calls"\n[ "$1" = - ] || exit 0\ncat > /dev/null\nexit {check}\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return folder


def test_without_a_folder_it_prints_its_usage():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("usage: ")


def test_a_working_environment_is_reused_without_installing(tmp_path):
    venv = fake_environment(tmp_path / "ref", works=True)
    result = subprocess.run(["bash", str(SCRIPT), str(venv)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ready (reused)" in result.stdout
    assert (venv / "calls").read_text().splitlines() == ["-"]  # only the import check ran, no pip


def test_a_broken_environment_is_rebuilt(tmp_path):
    """python3 -m venv and pip are stand-ins here: the script must call them, then check again and fail clearly."""
    venv = fake_environment(tmp_path / "ref", works=False)
    bin_dir = tmp_path / "tools"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "python3 $@" >> "{tmp_path}/built"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(SCRIPT), str(venv)], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "does not import" in result.stderr
    assert (tmp_path / "built").read_text().strip() == f"python3 -m venv {venv}"
    calls = (venv / "calls").read_text().splitlines()
    assert "-m pip install --quiet uni2ts==2.0.0 torch==2.4.1" in calls and calls[-1] == "-"
