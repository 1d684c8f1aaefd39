"""Fetching from the Hub against a real HTTP server on 127.0.0.1 (tests/fake_hub.py) with faults.

Every test runs huggingface_hub's real code over real sockets; only the server is ours. Waits
are 0.5 s (MOIRAI_HUB_TIMEOUT, set by the hub_env fixture), so the "no answer" cases stay quick.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import warnings
from pathlib import Path

import pytest
from fake_hub import HUB_COMMIT, HUB_REPO

from moirai_cli.errors import InputError, ModelError
from moirai_cli.model import hub
from moirai_cli.model.checkpoint import download_checkpoint
from moirai_cli.model.hub import HubError, HubWarning

FILES = ("config.json", "model.safetensors")


def fetch(**kwargs) -> tuple[Path, list[str]]:
    """download_checkpoint of HUB_REPO; returns the folder and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = download_checkpoint(HUB_REPO, **kwargs)
    return folder, [str(w.message) for w in caught if issubclass(w.category, HubWarning)]


def fetch_error(**kwargs) -> tuple[str, list[str]]:
    """The one-line message of the HubError download_checkpoint raises, and the warnings before it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(HubError) as error:
            download_checkpoint(kwargs.pop("repo_id", HUB_REPO), **kwargs)
    message = str(error.value)
    assert "\n" not in message and ".;" not in message and "(…)" not in message, message
    return message, [str(w.message) for w in caught if issubclass(w.category, HubWarning)]


def repo_folder(cache: Path, repo_id: str = HUB_REPO) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def leftovers(cache: Path) -> list[Path]:
    """Partial downloads anywhere in the cache."""
    return sorted(cache.rglob("*.incomplete"))


def assert_is_the_fixture(folder: Path, tiny_checkpoint: Path) -> None:
    for name in FILES:
        assert (folder / name).read_bytes() == (tiny_checkpoint / name).read_bytes(), name


@pytest.fixture
def cache(hub_env, tmp_path) -> Path:
    """The cache folder hub_env made the default (HF_HUB_CACHE)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@pytest.fixture
def cached(cache, fake_hub, tiny_checkpoint) -> Path:
    """HUB_REPO downloaded once (healthy), so the cache holds main -> HUB_COMMIT."""
    folder, _ = fetch()
    assert_is_the_fixture(folder, tiny_checkpoint)
    fake_hub.requests.clear()
    return folder


# --- a healthy Hub ------------------------------------------------------------------------------


def test_download_fetches_both_files_into_the_standard_cache_layout(cache, fake_hub, tiny_checkpoint):
    folder, caught = fetch()
    assert folder == repo_folder(cache) / "snapshots" / HUB_COMMIT
    assert_is_the_fixture(folder, tiny_checkpoint)
    assert caught == []
    weights = (folder / "model.safetensors").resolve()
    assert weights.name == hashlib.sha256(weights.read_bytes()).hexdigest()  # blobs/<sha256>
    assert (repo_folder(cache) / "refs" / "main").read_text() == HUB_COMMIT
    assert fake_hub.count("GET", r"^/api/models/Org/tiny-moe/revision/main$") == 1
    assert leftovers(cache) == []


def test_a_cached_model_costs_one_lookup_and_no_transfer(cached, fake_hub):
    folder, caught = fetch()
    assert folder == cached and caught == []
    assert fake_hub.requests == [("GET", "/api/models/Org/tiny-moe/revision/main")]


def test_a_cached_commit_is_used_without_asking_the_hub(cached, fake_hub):
    fake_hub.set_fault("hang")
    folder, caught = fetch(revision=HUB_COMMIT)
    assert folder == cached and caught == [] and fake_hub.requests == []


def test_a_new_commit_on_main_is_downloaded_and_main_moves(cached, fake_hub, cache, multipatch_checkpoint):
    new_commit = "f" * 40
    fake_hub.add_repo(HUB_REPO, multipatch_checkpoint, new_commit)
    folder, _ = fetch()
    assert folder.name == new_commit
    assert (folder / "config.json").read_bytes() == (multipatch_checkpoint / "config.json").read_bytes()
    assert (repo_folder(cache) / "refs" / "main").read_text() == new_commit


def test_force_downloads_again(cached, fake_hub, tiny_checkpoint):
    folder, caught = fetch(force_download=True)
    assert caught == [] and folder == cached
    assert fake_hub.count("GET", r"/resolve/.*/model\.safetensors$") == 1
    assert fake_hub.count("GET", r"/resolve/.*/config\.json$") == 1
    assert_is_the_fixture(folder, tiny_checkpoint)


def test_a_tag_is_resolved_and_recorded(cache, fake_hub, tiny_checkpoint):
    fake_hub.add_repo(HUB_REPO, tiny_checkpoint, HUB_COMMIT, refs=("v1",))
    folder, _ = fetch(revision="v1")
    assert folder.name == HUB_COMMIT
    assert (repo_folder(cache) / "refs" / "v1").read_text() == HUB_COMMIT


# --- the Hub does not answer, fails or cannot be reached --------------------------------------------


def test_no_answer_with_a_cached_model_warns_once_and_uses_the_cache(cached, fake_hub):
    fake_hub.set_fault("hang")
    folder, caught = fetch()
    assert folder == cached
    assert fake_hub.requests == [("GET", "/api/models/Org/tiny-moe/revision/main")]  # one wait, nothing else asked
    (warning,) = caught
    assert fake_hub.url in warning and "did not answer within 0.5 s" in warning
    assert f"using cached commit {HUB_COMMIT}" in warning


def test_no_answer_and_nothing_cached_names_the_endpoint_and_offline_mode(cache, fake_hub):
    fake_hub.set_fault("hang")
    message, _ = fetch_error()
    assert fake_hub.url in message and "did not answer within 0.5 s" in message
    assert "HF_HUB_OFFLINE" in message and "MOIRAI_HUB_TIMEOUT" in message
    assert f"'{HUB_REPO}' is not in the cache" in message
    assert "local checkpoint folder" in message
    assert not repo_folder(cache).exists() or leftovers(cache) == []


def test_server_error_with_a_cached_model_warns_with_the_status(cached, fake_hub):
    fake_hub.set_fault("500")
    folder, caught = fetch()
    assert folder == cached
    (warning,) = caught
    assert "answered HTTP 500 (server error)" in warning and HUB_COMMIT in warning


def test_server_error_and_nothing_cached_is_reported_as_a_server_error(cache, fake_hub):
    fake_hub.set_fault("500")
    message, _ = fetch_error()
    assert "answered HTTP 500 (server error)" in message and "try again later" in message
    assert "cannot be reached" not in message


@pytest.fixture
def refused_endpoint(monkeypatch, hub_env):
    """Point the Hub at a local port that refuses connections."""
    from huggingface_hub import constants

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
        yield url


def test_unreachable_with_a_cached_model_warns_and_uses_the_cache(cached, refused_endpoint):
    folder, caught = fetch()
    assert folder == cached
    (warning,) = caught
    assert f"the Hub at {refused_endpoint} cannot be reached" in warning and HUB_COMMIT in warning


def test_unreachable_and_nothing_cached(cache, refused_endpoint):
    message, _ = fetch_error()
    assert f"the Hub at {refused_endpoint} cannot be reached" in message
    assert "HF_HUB_OFFLINE" in message and "is not in the cache" in message


def test_a_page_that_is_not_the_hub_is_named(cache, fake_hub, monkeypatch):
    # A captive portal answers 200 with HTML: not a Hub answer, and not a "cannot be reached".
    import fake_hub as server_module

    def portal(self):
        self.send_body(200, b"<html>Please log in to the guest Wi-Fi</html>", {"Content-Type": "text/html"}, "GET")

    monkeypatch.setattr(server_module.Handler, "do_GET", portal)
    message, _ = fetch_error()
    assert "did not answer like the Hugging Face Hub" in message and "captive portal" in message


# --- refusals: gated, private, missing --------------------------------------------------------------


def test_gated_without_a_token_says_to_accept_the_licence_and_log_in(cache, fake_hub):
    fake_hub.repos[HUB_REPO].gated = True
    message, _ = fetch_error()
    assert f"model '{HUB_REPO}' is gated" in message
    assert f"accept the licence on {fake_hub.url}/{HUB_REPO}" in message and "HF_TOKEN" in message
    assert "not found" not in message
    assert leftovers(cache) == []


def test_gated_with_a_token_without_access(cache, fake_hub, monkeypatch):
    fake_hub.repos[HUB_REPO].gated = True
    monkeypatch.setenv("HF_TOKEN", "someone-else")
    message, _ = fetch_error()
    assert "gated" in message and "has not been granted access" in message


def test_gated_with_a_granted_token_downloads(cache, fake_hub, monkeypatch, tiny_checkpoint):
    fake_hub.repos[HUB_REPO].gated = True
    monkeypatch.setenv("HF_TOKEN", "granted")
    folder, _ = fetch()
    assert_is_the_fixture(folder, tiny_checkpoint)


def test_private_without_a_token_hints_at_the_token(cache, fake_hub):
    fake_hub.repos[HUB_REPO].private = True
    message, _ = fetch_error()
    assert "was not found" in message and "private" in message and "HF_TOKEN" in message


def test_an_invalid_token_is_named(cache, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "bad")
    message, _ = fetch_error()
    assert "rejected your token" in message and "HF_TOKEN" in message


def test_a_missing_repo_with_a_token(cache, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "someone-else")
    message, _ = fetch_error(repo_id="Org/no-such-model")
    assert f"model 'Org/no-such-model' was not found on {fake_hub.url}" in message and "check the name" in message


def test_a_missing_revision_is_named(cache, fake_hub):
    message, _ = fetch_error(revision="v9")
    assert f"model '{HUB_REPO}' has no revision 'v9'" in message


def test_a_repo_without_weights_is_named(cache, fake_hub, tmp_path, tiny_checkpoint):
    partial = tmp_path / "only-config"
    partial.mkdir()
    (partial / "config.json").write_bytes((tiny_checkpoint / "config.json").read_bytes())
    fake_hub.add_repo("Org/no-weights", partial, HUB_COMMIT)
    message, _ = fetch_error(repo_id="Org/no-weights")
    assert "has no model.safetensors" in message


# --- integrity: wrong or missing bytes ----------------------------------------------------------------


@pytest.mark.parametrize("fault", ["corrupt", "truncated"])
def test_bad_bytes_once_are_downloaded_again_with_one_warning(fault, cache, fake_hub, tiny_checkpoint):
    fake_hub.set_fault(fault, times=1)
    folder, caught = fetch()
    assert_is_the_fixture(folder, tiny_checkpoint)
    (warning,) = caught
    assert "model.safetensors" in warning and "downloading it once more" in warning
    assert fake_hub.count("GET", r"/model\.safetensors$") == 2
    assert leftovers(cache) == []


@pytest.mark.parametrize(
    "fault, cause", [("corrupt", "does not match the sha256 the Hub publishes"), ("truncated", "arrived incomplete")]
)
def test_bad_bytes_twice_fail_and_keep_nothing(fault, cause, cache, fake_hub):
    fake_hub.set_fault(fault)
    message, caught = fetch_error()
    assert cause in message and "twice; nothing was kept" in message and fake_hub.url in message
    assert len(caught) == 1
    snapshot = repo_folder(cache) / "snapshots" / HUB_COMMIT
    assert not (snapshot / "model.safetensors").exists()
    blobs = repo_folder(cache) / "blobs"
    assert [blob.name for blob in blobs.iterdir()] == [(snapshot / "config.json").resolve().name]
    assert fake_hub.count("GET", r"/model\.safetensors$") == 2


def test_a_dropped_connection_resumes_with_one_warning(cache, fake_hub, tiny_checkpoint):
    fake_hub.set_fault("drop", times=1)
    folder, caught = fetch()
    assert_is_the_fixture(folder, tiny_checkpoint)
    (warning,) = caught
    # huggingface_hub resumes the download (2.x), or this module downloads it once more (1.0)
    assert "model.safetensors" in warning and "broke" in warning
    assert "; resuming" in warning or "; downloading it once more" in warning
    assert fake_hub.count("GET", r"/model\.safetensors$") == 2
    assert leftovers(cache) == []


def damage_cached_weights(folder: Path) -> Path:
    """Overwrite the cached blob with bytes of the right length, as an unchecked download would have left it."""
    import fake_hub as server_module

    blob = (folder / "model.safetensors").resolve()
    blob.write_bytes(server_module.corrupted(blob.read_bytes()))
    return blob


def test_verify_repairs_a_damaged_cache(cached, fake_hub, tiny_checkpoint):
    damage_cached_weights(cached)
    folder, caught = fetch(verify=True)
    assert_is_the_fixture(folder, tiny_checkpoint)
    (warning,) = caught
    assert "does not match the digest the Hub publishes" in warning and "downloading it again" in warning


def test_verify_leaves_a_healthy_cache_alone(cached, fake_hub):
    folder, caught = fetch(verify=True)
    assert folder == cached and caught == []
    assert fake_hub.count("GET", r"/resolve/") == 0


def test_without_verify_a_damaged_cache_is_not_read_again(cached, fake_hub):
    # Hashing ~0.5 GB on every forecast would cost seconds: loading catches damaged values instead.
    blob = damage_cached_weights(cached)
    folder, _ = fetch()
    assert folder == cached and hashlib.sha256(blob.read_bytes()).hexdigest() != blob.name


# --- offline mode, settings, and what is left behind -------------------------------------------------


def test_offline_uses_the_cache_and_never_the_network(cached, fake_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    folder, caught = fetch()
    assert folder == cached and caught == [] and fake_hub.requests == []


def test_offline_and_force_is_an_error(cached, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message, _ = fetch_error(force_download=True)
    assert "cannot be downloaded again" in message and "HF_HUB_OFFLINE" in message


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_timeout_setting_is_an_input_error(value, hub_env, monkeypatch):
    monkeypatch.setenv("MOIRAI_HUB_TIMEOUT", value)
    with pytest.raises(InputError, match="MOIRAI_HUB_TIMEOUT"):
        download_checkpoint(HUB_REPO)


def test_huggingface_hub_logging_and_progress_settings_are_restored(cache, fake_hub):
    from huggingface_hub.utils import are_progress_bars_disabled

    logger = logging.getLogger("huggingface_hub")
    before = (logger.handlers[:], logger.propagate, are_progress_bars_disabled())
    fake_hub.set_fault("drop", times=1)
    fetch()
    fake_hub.set_fault("500")
    fetch_error(force_download=True)
    assert (logger.handlers[:], logger.propagate, are_progress_bars_disabled()) == before


def test_an_invalid_repo_id_is_named_before_any_request(hub_env, fake_hub):
    with pytest.raises(ModelError, match="not a valid Hub repo id|neither a checkpoint folder"):
        download_checkpoint("Org/bad name!")
    assert fake_hub.requests == []


def test_refetch_command_names_repo_and_only_the_options_needed(cached, cache, tmp_path):
    assert hub.refetch_command(cached) == f"moirai download {HUB_REPO} --force"
    other = tmp_path / "elsewhere" / "models--Org--x" / "snapshots" / ("e" * 40)
    other.mkdir(parents=True)
    assert hub.refetch_command(other) == (
        f"moirai download Org/x --force --revision {'e' * 40} --cache-dir {tmp_path / 'elsewhere'}"
    )
    assert hub.refetch_command(tmp_path) is None


# --- the model card (README.md), an optional file ------------------------------------------------

CARD = "---\nlicense: cc-by-nc-4.0\npipeline_tag: time-series-forecasting\n---\n# A model\n"


def serve_with_card(fake_hub, tiny_checkpoint: Path, tmp_path: Path, commit: str = HUB_COMMIT, card: str = CARD) -> None:
    """Serve HUB_REPO at `commit` with the tiny checkpoint's files and a model card."""
    folder = tmp_path / f"repo-{commit[:6]}"
    folder.mkdir()
    for name in FILES:
        (folder / name).write_bytes((tiny_checkpoint / name).read_bytes())
    (folder / hub.CARD_FILE).write_text(card)
    fake_hub.add_repo(HUB_REPO, folder, commit)


def test_the_model_card_comes_with_a_download(cache, fake_hub, tiny_checkpoint, tmp_path):
    serve_with_card(fake_hub, tiny_checkpoint, tmp_path)
    folder, caught = fetch()
    assert caught == [] and (folder / "README.md").read_text() == CARD
    assert fake_hub.count("GET", r"/resolve/.*/README\.md$") == 1


def test_a_repo_without_a_card_downloads_without_a_warning(cache, fake_hub):
    folder, caught = fetch()
    assert caught == [] and not (folder / "README.md").exists()
    assert fake_hub.count("HEAD", r"/resolve/.*/README\.md$") == 1 and fake_hub.count("GET", r"README") == 0


def test_a_cached_model_is_used_without_its_card_and_not_asked_for_it(cached, fake_hub, tiny_checkpoint, tmp_path):
    serve_with_card(fake_hub, tiny_checkpoint, tmp_path)  # the card appears on the Hub later
    folder, caught = fetch()
    assert folder == cached and caught == [] and not (folder / "README.md").exists()
    assert fake_hub.requests == [("GET", "/api/models/Org/tiny-moe/revision/main")]
    folder, _ = fetch(verify=True)  # `moirai download` checks the cache, and fetches what is missing
    assert (folder / "README.md").read_text() == CARD


def test_offline_a_cached_model_without_its_card_loads(cached, fake_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    folder, caught = fetch()
    assert folder == cached and caught == [] and fake_hub.requests == []


def test_a_card_that_cannot_be_fetched_is_one_warning_and_the_model_downloads(cache, fake_hub, tiny_checkpoint, tmp_path):
    serve_with_card(fake_hub, tiny_checkpoint, tmp_path)
    fake_hub.set_fault("500", file="README.md")
    folder, caught = fetch()
    assert_is_the_fixture(folder, tiny_checkpoint)
    (warning,) = caught
    assert warning.startswith(f"README.md of '{HUB_REPO}' was not fetched (") and "HTTP 500" in warning
    assert not (folder / "README.md").exists() and leftovers(cache) == []


def test_fetch_model_card_fetches_only_the_card_and_records_no_ref(cached, cache, fake_hub, tiny_checkpoint, tmp_path):
    new_commit = "c" * 40
    serve_with_card(fake_hub, tiny_checkpoint, tmp_path, commit=new_commit)  # main moves on, with a card
    card = hub.fetch_model_card(HUB_REPO)
    assert card == repo_folder(cache) / "snapshots" / new_commit / "README.md" and card.read_text() == CARD
    assert sorted(p.name for p in card.parent.iterdir()) == ["README.md"]
    assert (repo_folder(cache) / "refs" / "main").read_text() == HUB_COMMIT  # offline, main is still the cached weights


def test_fetch_model_card_of_a_repo_without_one_is_none(cache, fake_hub):
    assert hub.fetch_model_card(HUB_REPO) is None


def test_fetch_model_card_names_an_outage_apart(cache, fake_hub, monkeypatch):
    from huggingface_hub import constants

    fake_hub.set_fault("hang")
    with pytest.raises(hub.HubUnavailableError, match="did not answer within 0.5 s"):
        hub.fetch_model_card(HUB_REPO)
    fake_hub.set_fault(None)
    with pytest.raises(HubError) as missing:
        hub.fetch_model_card("Org/missing")
    assert not isinstance(missing.value, hub.HubUnavailableError) and "was not found" in str(missing.value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="offline mode is on"):
        hub.fetch_model_card(HUB_REPO)


def test_cached_repo_lists_complete_snapshots_and_refs(cached, cache, fake_hub, tiny_checkpoint, tmp_path):
    serve_with_card(fake_hub, tiny_checkpoint, tmp_path, commit="c" * 40)
    hub.fetch_model_card(HUB_REPO)
    repo = hub.CachedRepo(HUB_REPO, cache)
    assert repo.snapshot_commits(FILES) == [HUB_COMMIT]
    assert repo.snapshot_commits(("README.md",)) == ["c" * 40]
    assert repo.refs() == {"main": HUB_COMMIT}
