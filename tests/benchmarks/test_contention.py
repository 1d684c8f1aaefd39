"""benchmarks/contention.py: its table, its variants, and that the competitor really runs during a busy run."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def contention():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its neighbour run_benchmark.py
    try:
        spec = importlib.util.spec_from_file_location("contention", BENCHMARKS / "contention.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_table_reports_medians_and_the_slowdown(contention):
    results = {"ours": {False: [(10.0, 19.0), (12.0, 20.0), (11.0, 21.0)], True: [(15.0, 20.0), (16.5, 22.0), (30.0, 21.0)]}}
    rows = contention.table(results)
    assert rows[2] == "| ours | 11.0 | 20.0 | 16.5 | 21.0 | 1.50x |"


def test_variants_are_parsed_and_malformed_ones_refused(contention):
    assert contention.parse_variants([["one thread", "MOIRAI_NUM_THREADS=1", "A=b=c"]]) == {
        "one thread": {"MOIRAI_NUM_THREADS": "1", "A": "b=c"}
    }
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        contention.parse_variants([["broken", "MOIRAI_NUM_THREADS"]])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_busy_run_has_a_spinning_competitor_that_is_gone_afterwards(contention):
    with contention.competing_process(busy=True) as competitor:
        while cpu_seconds(competitor.pid) < 0.05:  # it computes (a process that had died would fail below)
            assert competitor.poll() is None, f"the competitor ended with {competitor.returncode}"
        assert "while True" in Path(f"/proc/{competitor.pid}/cmdline").read_text()
    assert competitor.returncode is not None  # killed and reaped when the block ends
    with contention.competing_process(busy=False) as nothing:
        assert nothing is None
