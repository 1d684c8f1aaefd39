"""The command line with closed or departing standard streams, and what a run leaves behind: real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = str(ROOT / "sample_data" / "stocks.csv")
MODEL = ["--model", str(ROOT / "tests" / "fixtures" / "tiny-moe"), "--num-samples", "4", "--seed", "1"]


def moirai(*args: str, cwd: Path, **options) -> subprocess.CompletedProcess:
    """`moirai ARGS` in its own process, run by a shell line when `options` says so (to close a descriptor)."""
    return subprocess.run([sys.executable, "-m", "moirai_cli.cli", *args], cwd=cwd, capture_output=True, text=True, **options)


def shell(line: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    """A shell line, with `moirai` standing for this interpreter's command line."""
    env = {**os.environ, **environment}
    command = line.replace("moirai ", f"{sys.executable} -m moirai_cli.cli ")
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=env)


def test_closed_stdout_refuses_output_to_it_and_allows_a_file(tmp_path):
    flags = " ".join(MODEL)
    refused = shell(f"moirai forecast {DATA} -H 2 {flags} >&-", tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: stdout is closed, so nothing could be written there; write the forecast to a file with --output"
    )
    written = shell(f"moirai forecast {DATA} -H 2 {flags} -o out.csv >&-", tmp_path)
    assert written.returncode == 0, written.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + 5 * 2
    summary = shell(f"moirai evaluate {DATA} -H 2 {flags} >&-", tmp_path)  # the summary is the only result
    assert summary.returncode == 2 and "stdout is closed" in summary.stderr
    scores = shell(f"moirai evaluate {DATA} -H 2 {flags} -o w.csv >&-", tmp_path)
    assert scores.returncode == 0 and (tmp_path / "w.csv").exists()


def test_closed_stderr_does_not_fail_a_good_run(tmp_path):
    result = shell(f"moirai forecast {DATA} -H 2 {' '.join(MODEL)} -o out.csv 2>&-", tmp_path)
    assert result.returncode == 0
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + 5 * 2


@pytest.mark.parametrize("args", [["--help"], ["forecast", "--help"], ["evaluate", "--help"]])
def test_help_into_a_pipe_that_closes_ends_with_141(tmp_path, args):
    result = shell(f"moirai {' '.join(args)} | head -1; exit ${{PIPESTATUS[0]}}", tmp_path)
    assert result.returncode == 141 and result.stderr == ""


def test_listing_models_leaves_nothing_in_the_temporary_folder(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = shell("moirai models --format csv", tmp_path, TMPDIR=str(temporary), HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    assert list(temporary.iterdir()) == []  # no empty torchinductor_* folder


def test_a_ray_run_leaves_nothing_in_the_temporary_folder(tmp_path):
    pytest.importorskip("ray", reason="the Ray engine tests need ray[data] (pip install -e '.[dev]')")
    import shutil
    import tempfile

    temporary = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: Ray's sockets live in it
    try:
        line = f"moirai forecast {DATA} -H 2 {' '.join(MODEL)} --device cpu --engine ray -o out.csv"
        result = shell(line, tmp_path, TMPDIR=str(temporary))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out.csv").exists() and list(temporary.iterdir()) == []  # Ray's session folders removed
        long = tmp_path / ("a-long-temporary-folder-name" * 2)
        long.mkdir()
        result = shell(line.replace("out.csv", "out2.csv"), tmp_path, TMPDIR=str(long))  # too long for Ray's sockets
        assert result.returncode == 0, result.stderr
        assert list(long.iterdir()) == []
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def test_a_failing_plot_leaves_older_outputs_untouched(tmp_path):
    for name in ("windows.csv", "forecasts.csv"):
        (tmp_path / name).write_text("older\n")
    (tmp_path / "plot.png").mkdir()  # a folder where the plot should go: writing it fails, after the tables
    result = moirai(
        "evaluate", DATA, "-H", "2", *MODEL, "-o", "windows.csv", "--forecasts-output", "forecasts.csv", "--plot", "plot.png", cwd=tmp_path
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (tmp_path / "windows.csv").read_text() == (tmp_path / "forecasts.csv").read_text() == "older\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecasts.csv", "plot.png", "windows.csv"]  # no temporary files
