"""Shared fixtures: the tiny checkpoints of each family written by scripts/make_parity_fixtures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

import moirai_cli  # noqa: F401  first: idle OpenMP threads sleep (runtime.let_idle_threads_sleep), CI machines are shared

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """A reference-initialised checkpoint folder with patch size 16 (d_model 128, 2 layers)."""
    return FIXTURES / "tiny-moe"


@pytest.fixture(scope="session")
def multipatch_checkpoint() -> Path:
    """A reference-initialised checkpoint folder with patch sizes 8, 16 and 32."""
    return FIXTURES / "tiny-moe-multipatch"


@pytest.fixture(scope="session")
def moirai1_checkpoint() -> Path:
    """A reference-initialised Moirai 1.x checkpoint folder with patch sizes 8 to 128 (d_model 64, 2 layers)."""
    return FIXTURES / "tiny-moirai-1"


@pytest.fixture(scope="session")
def moirai2_checkpoint() -> Path:
    """A reference-initialised Moirai 2.0 checkpoint folder (patch 16, 4 patches a pass, d_model 128, 2 layers)."""
    return FIXTURES / "tiny-moirai-2"


@pytest.fixture(scope="session")
def family_checkpoints(moirai1_checkpoint, tiny_checkpoint, moirai2_checkpoint) -> dict[str, Path]:
    """One tiny checkpoint folder per family."""
    return {"moirai-1": moirai1_checkpoint, "moirai-moe": tiny_checkpoint, "moirai-2": moirai2_checkpoint}


@pytest.fixture(scope="session")
def tiny_forecaster(tiny_checkpoint):
    """The tiny checkpoint loaded on the CPU."""
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    return MoiraiForecaster.from_pretrained(str(tiny_checkpoint), device="cpu")


# --- a Hugging Face Hub on 127.0.0.1 (tests/fake_hub.py) ---------------------------------------

@pytest.fixture
def fake_hub(tiny_checkpoint):
    """A running fake Hub serving the tiny checkpoint as fake_hub.HUB_REPO at HUB_COMMIT (branch main)."""
    import fake_hub as server_module

    hub = server_module.FakeHub()
    hub.add_repo(server_module.HUB_REPO, tiny_checkpoint, server_module.HUB_COMMIT)
    server = server_module.start(hub)
    try:
        yield hub
    finally:
        server_module.stop(hub, server)


@pytest.fixture
def hub_env(fake_hub, monkeypatch, tmp_path):
    """Point huggingface_hub (in this process and in subprocesses) at `fake_hub`, with a fresh cache and no token.

    huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and the cache folder once, at import: the
    environment is set for subprocesses and the constants for this process. Waits are 0.5 s.
    Returns the environment for a subprocess.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    cache = home / "hub"
    variables = {
        "HF_ENDPOINT": fake_hub.url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "0",
        "MOIRAI_HUB_TIMEOUT": "0.5",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"), raising=False)
    import os

    return {**os.environ, **variables}


# --- an S3-compatible server on 127.0.0.1 (moto) ---------------------------------------------

@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1, with the AWS variables that point pyarrow at it.

    Returns its endpoint URL. Skips, saying why, when moto is not installed (`pip install -e ".[dev]"`).
    """
    import os

    server_module = pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (pip install -e '.[dev]')")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A new, empty bucket on the local S3 server; returns its name."""
    import pyarrow.fs as pafs

    name = "test-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    pafs.S3FileSystem(endpoint_override=s3_server, allow_bucket_creation=True).create_dir(name)
    return name
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test skipped for want of GluonTS must be marked `gluonts`, or CI's GluonTS run (pytest -m gluonts) misses it."""
    outcome = yield
    report = outcome.get_result()
    skipped_for_gluonts = report.skipped and call.excinfo is not None and "gluonts" in str(call.excinfo.value)
    if skipped_for_gluonts and item.get_closest_marker("gluonts") is None:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} needs GluonTS: mark it @pytest.mark.gluonts so that CI's GluonTS run includes it"
