"""CLI test helpers: a fake forecaster standing in for the model, and a runner that keeps stderr apart."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from typer.testing import CliRunner

from moirai_cli.forecasting.pipeline import Forecast, MoiraiForecaster


@dataclass
class FakeForecaster:
    """Same methods as MoiraiForecaster; forecasts last observed value + step + seeded noise."""

    name: str = "fake"
    device: str = "cpu"
    family_title: str = "Fake"
    output_kind: str = "samples"
    decodings: tuple[str, ...] = ("exact", "cached")
    calls: list[dict] = field(default_factory=list)
    predict_dataset = MoiraiForecaster.predict_dataset  # the real one, calling the fake predict below

    def predict(
        self,
        target,
        horizon,
        *,
        past_covariates=None,
        known_covariates=None,
        num_samples=100,
        seed=None,
        progress=None,
        **settings,
    ) -> Forecast:
        """Record the call and return (N, S, H, V) samples."""
        self.calls.append(
            dict(
                target=target,
                horizon=horizon,
                past_covariates=past_covariates,
                known_covariates=known_covariates,
                num_samples=num_samples,
                seed=seed,
                **settings,
            )
        )
        rng = np.random.default_rng(seed)
        out = []
        for series in target:
            values = series.reshape(len(series), -1)
            last = np.array([v[~np.isnan(v)][-1] for v in values.T], dtype=np.float32)  # (V,)
            steps = np.arange(1, horizon + 1, dtype=np.float32)[:, None]
            noise = rng.normal(size=(num_samples, horizon, values.shape[1])).astype(np.float32)
            out.append(last + steps + noise)
        if progress is not None:
            progress(len(target))
        return Forecast(np.stack(out))


@pytest.fixture
def fake_model(monkeypatch) -> FakeForecaster:
    """Make every from_pretrained call return one FakeForecaster (recording the load arguments)."""
    fake = FakeForecaster()
    loads: list[tuple] = []

    def from_pretrained(name_or_path="x", **kwargs):
        loads.append((name_or_path, kwargs))
        return fake

    monkeypatch.setattr(MoiraiForecaster, "from_pretrained", staticmethod(from_pretrained))
    fake.loads = loads
    return fake


@pytest.fixture
def runner() -> CliRunner:
    """A Click runner with stdout and stderr captured separately."""
    return CliRunner()


def _assert_one_line_error(result, code: int, *fragments: str) -> None:
    """Exit code, one final `error:` line naming what is wrong, no traceback, nothing on stdout."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]
    assert result.stdout == ""


@pytest.fixture
def one_line_error() -> Callable[..., None]:
    """The check that a failed run printed one `error:` line, exited with `code` and wrote nothing to stdout."""
    return _assert_one_line_error


# Starts the command line the way the `moirai` executable does, with the given signals' dispositions set
# first: a test runner started in the background passes SIGINT on ignored, and `nohup` ignores SIGHUP.
LAUNCHER = """
import runpy, signal, sys
for name, how in zip(sys.argv[1].split(","), sys.argv[2].split(",")):
    signal.signal(getattr(signal, name), getattr(signal, how))
sys.argv = ["moirai", *sys.argv[3:]]
runpy.run_module("moirai_cli.cli", run_name="__main__")
"""


@pytest.fixture
def moirai_command() -> Callable[..., list[str]]:
    """argv of a `moirai` process whose SIGINT, SIGTERM and SIGHUP start at their defaults (or as `dispositions` say)."""

    def command(*args: str, dispositions: dict[str, str] | None = None) -> list[str]:
        settings = {"SIGINT": "SIG_DFL", "SIGTERM": "SIG_DFL", "SIGHUP": "SIG_DFL", **(dispositions or {})}
        return [sys.executable, "-c", LAUNCHER, ",".join(settings), ",".join(settings.values()), *args]

    return command
