"""The fine-tuning loop: determinism, what each mode trains, early stopping, resume, atomic output, the saved folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from moirai_cli.data.io import current_umask
from moirai_cli.errors import InputError
from moirai_cli.evaluation import evaluate
from moirai_cli.forecasting.pipeline import MoiraiForecaster
from moirai_cli.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from moirai_cli.model.inventory import card_licence
from moirai_cli.training import BaseModel, FinetuneSettings, finetune, run_settings
from moirai_cli.training import trainer as trainer_module
from moirai_cli.training.lora import LoRALinear, add_adapters, merge_adapters
from moirai_cli.training.output import STATE_FILE
from moirai_cli.training.trainer import TrainingRun, head_module, training_network

PATCH = {"moirai-1": 16, "moirai-moe": 16, "moirai-2": 16}
FAMILIES = list(PATCH)


def quick(**options) -> FinetuneSettings:
    """Settings of a run of a second or two on the employment series."""
    defaults = dict(context_length=48, steps=12, batch_size=8, learning_rate=3e-3, validation_interval=4, patience=10, patch_size=16)
    return FinetuneSettings(**{**defaults, **options})


def weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


# --- determinism and modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_run_twice_gives_the_same_weights(forecasters, employment, family):
    settings = quick(steps=6)
    first = finetune(forecasters[family], employment.series, 12, settings)
    second = finetune(forecasters[family], employment.series, 12, settings)
    assert_same_weights(weights(first.model), weights(second.model))
    assert first.history == second.history
    other = finetune(forecasters[family], employment.series, 12, quick(steps=6, seed=1))
    assert not all(torch.equal(a, b) for a, b in zip(weights(first.model).values(), weights(other.model).values()))


@pytest.mark.parametrize("family", FAMILIES)
def test_head_mode_changes_only_the_head(forecasters, employment, family):
    forecaster = forecasters[family]
    base = weights(forecaster.model)
    tuned = weights(finetune(forecaster, employment.series, 12, quick(mode="head", steps=4, validation_windows=0)).model)
    head = {f"{name}" for name, _ in head_module(forecaster.model).named_parameters()}
    prefix = "param_proj." if family != "moirai-2" else "out_proj."
    changed = {name for name in base if not torch.equal(base[name], tuned[name])}
    assert changed and changed <= {prefix + name for name in head}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_mode_changes_the_encoders_linear_weights_by_low_rank_updates(forecasters, employment, family):
    forecaster = forecasters[family]
    base = weights(forecaster.model)
    tuned = weights(finetune(forecaster, employment.series, 12, quick(mode="lora", lora_rank=2, steps=4, validation_windows=0)).model)
    linear = {f"encoder.layers.{name}.weight" for name, module in forecaster.model.encoder.layers.named_modules()
              if isinstance(module, torch.nn.Linear)}
    changed = {name for name in base if not torch.equal(base[name], tuned[name])}
    assert changed and changed <= linear
    for name in changed:
        assert torch.linalg.matrix_rank(tuned[name] - base[name], atol=1e-6).item() <= 2, name


def test_an_adapter_computes_what_its_merged_layer_computes(forecasters):
    network = training_network(forecasters["moirai-moe"].model, torch.device("cpu"))
    assert add_adapters(network, rank=4, alpha=8.0, seed=0) == 2 * (4 + 32 * 3)  # attention and every expert's products
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(0, 0.05)  # B starts at zero: give the update something to do
    x = torch.randn(5, 7, 128)
    layer = network.encoder.layers[0].self_attn.q_proj
    expected = layer(x)
    merged = torch.nn.functional.linear(x, layer.merged_weight())
    torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-5)
    tokens = sample_batch(forecasters["moirai-moe"])
    with torch.no_grad():
        adapted = network(tokens)
        assert merge_adapters(network) == 2 * (4 + 32 * 3)
        plain = network(tokens)
    assert not any(isinstance(module, LoRALinear) for module in network.modules())
    torch.testing.assert_close(plain.logits, adapted.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain.params[0]["loc"], adapted.params[0]["loc"], rtol=1e-4, atol=1e-4)


def sample_batch(forecaster):
    from moirai_cli.forecasting.packing import collate, pack_series

    values = np.sin(np.arange(80) / 3)[:, None] * 5 + 20
    return collate([pack_series(values, 16, 64, 16, 16, holdout=True)], 16).tokens


# --- early stopping and the best step ----------------------------------------------------------------


def scripted_validation(monkeypatch, losses: list[float]) -> None:
    """Make validation return `losses` in turn (the first is the base model's)."""
    queue = iter(losses)
    monkeypatch.setattr(TrainingRun, "validation_loss", lambda self: next(queue))


def test_early_stopping_keeps_the_best_steps_weights(forecasters, employment, monkeypatch):
    forecaster = forecasters["moirai-moe"]
    scripted_validation(monkeypatch, [10.0, 9.0, 8.0, 8.5, 8.7, 1.0])
    result = finetune(forecaster, employment.series, 12, quick(steps=40, patience=2))
    assert (result.steps_run, result.best_step, result.stopped_early) == (16, 8, True)
    assert (result.base_validation_loss, result.best_validation_loss) == (10.0, 8.0)
    assert [v for _, _, v in result.history if v is not None] == [9.0, 8.0, 8.5, 8.7]
    scripted_validation(monkeypatch, [10.0, 9.0, 8.0])
    eight_steps = finetune(forecaster, employment.series, 12, quick(steps=8, patience=2))
    assert_same_weights(weights(result.model), weights(eight_steps.model))


def test_the_kept_weights_give_the_reported_validation_loss(forecasters, employment):
    from moirai_cli.training.objectives import window_group_losses
    from moirai_cli.training.windows import WindowPacker, validation_windows

    forecaster = forecasters["moirai-2"]
    result = finetune(forecaster, employment.series, 12, quick(steps=12))
    losses = [v for _, _, v in result.history if v is not None]
    assert result.best_validation_loss == min([result.base_validation_loss, *losses]) < result.base_validation_loss
    packer = WindowPacker(employment.series, 12, 48, 16, 16, True, torch.device("cpu"))
    with torch.no_grad():
        groups = torch.cat([window_group_losses(training_network(result.model, torch.device("cpu")), batch)
                            for batch in packer.batches(validation_windows(employment.series, 12, 1), 8)])
    assert float(groups.mean()) == pytest.approx(result.best_validation_loss, rel=1e-6)


# --- output folder, resume, atomic writes ------------------------------------------------------------


def test_the_saved_folder_loads_and_forecasts_as_the_returned_forecaster(forecasters, employment, tmp_path):
    result = finetune(forecasters["moirai-1"], employment.series, 12, quick(), tmp_path / "tuned",
                      base=BaseModel("tests/fixtures/tiny-moirai-1"), freq=employment.freq)
    folder = tmp_path / "tuned"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["README.md", CONFIG_FILE, WEIGHTS_FILE])
    assert json.loads((folder / CONFIG_FILE).read_text()) == forecasters["moirai-1"].model.config.to_dict()
    loaded = MoiraiForecaster.from_pretrained(str(folder), device="cpu")
    contexts = [r.target[:-12, 0] for r in employment.series[:5]]
    options = dict(seed=3, num_samples=20, patch_size=16, context_length=48)
    np.testing.assert_array_equal(loaded.predict(contexts, 12, **options).samples,
                                  result.forecaster().predict(contexts, 12, **options).samples)
    card = (folder / "README.md").read_text()
    for fact in ("tests/fixtures/tiny-moirai-1", result.data_fingerprint, "| steps | 12 |", "| wql |",
                 f"kept: the weights of step {result.best_step}", "patch size 16", "see the base model's card"):
        assert fact in card
    assert sorted(tmp_path.iterdir()) == [folder]  # nothing left beside it
    assert {oct(path.stat().st_mode & 0o777) for path in folder.iterdir()} == {oct(0o666 & ~current_umask())}


def test_the_base_models_licence_and_revision_pass_to_the_card(forecasters, employment, tmp_path, moirai2_checkpoint):
    snapshot = tmp_path / "hub" / "models--Salesforce--moirai-2.0-R-small" / "snapshots" / ("ab" * 20)
    shutil.copytree(moirai2_checkpoint, snapshot)
    (snapshot / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# card\n")
    base = BaseModel.from_checkpoint(str(snapshot), snapshot)
    assert base == BaseModel("Salesforce/moirai-2.0-R-small", "ab" * 20, "cc-by-nc-4.0")
    finetune(forecasters["moirai-2"], employment.series, 12, quick(steps=4), tmp_path / "tuned", base=base)
    card = tmp_path / "tuned" / "README.md"
    assert card_licence(card) == "cc-by-nc-4.0"
    assert "at revision `" + "ab" * 20 + "`" in card.read_text()
    assert BaseModel.from_checkpoint(str(tmp_path / "tuned"), tmp_path / "tuned").licence == "cc-by-nc-4.0"  # and on


def interrupt_at(step: int):
    def progress(state):
        if state.step == step:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("family", ["moirai-moe", "moirai-2"])
def test_a_stopped_run_leaves_its_best_folder_and_resumes_to_the_uninterrupted_result(forecasters, employment, tmp_path, family):
    forecaster = forecasters[family]
    settings = quick(steps=14, validation_interval=3)
    whole = finetune(forecaster, employment.series, 12, settings, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        finetune(forecaster, employment.series, 12, settings, tmp_path / "stopped", progress=interrupt_at(11))
    stopped = tmp_path / "stopped"
    assert sorted(p.name for p in stopped.iterdir()) == sorted(["README.md", CONFIG_FILE, WEIGHTS_FILE, STATE_FILE])
    assert "unfinished" in (stopped / "README.md").read_text()
    MoiraiForecaster.from_pretrained(str(stopped), device="cpu").predict([np.arange(30.0)], 4)  # a complete checkpoint
    assert run_settings(stopped) == (settings, 12)
    resumed = finetune(forecaster, employment.series, 12, settings, stopped, resume=True)
    assert_same_weights(weights(resumed.model), weights(whole.model))
    assert resumed.history == whole.history and resumed.best_step == whole.best_step
    assert STATE_FILE not in {p.name for p in stopped.iterdir()}
    assert (stopped / WEIGHTS_FILE).read_bytes() == (tmp_path / "whole" / WEIGHTS_FILE).read_bytes()
    with pytest.raises(InputError, match="holds a finished run; there is nothing to resume"):
        finetune(forecaster, employment.series, 12, settings, stopped, resume=True)


def test_a_resumed_run_may_train_longer(forecasters, employment, tmp_path):
    forecaster = forecasters["moirai-2"]
    with pytest.raises(KeyboardInterrupt):
        finetune(forecaster, employment.series, 12, quick(steps=8), tmp_path / "run", progress=interrupt_at(6))
    longer = finetune(forecaster, employment.series, 12, quick(steps=16), tmp_path / "run", resume=True)
    whole = finetune(forecaster, employment.series, 12, quick(steps=16))
    assert_same_weights(weights(longer.model), weights(whole.model))


def test_resume_refuses_other_data_horizon_settings_or_base(forecasters, employment, tmp_path):
    forecaster = forecasters["moirai-2"]
    with pytest.raises(KeyboardInterrupt):
        finetune(forecaster, employment.series, 12, quick(steps=8), tmp_path / "run", progress=interrupt_at(5))
    run = tmp_path / "run"
    with pytest.raises(InputError, match="trained on other data"):
        finetune(forecaster, employment.series[1:], 12, quick(steps=8), run, resume=True)
    with pytest.raises(InputError, match="trained for horizon 12, not 6"):
        finetune(forecaster, employment.series, 6, quick(steps=8), run, resume=True)
    with pytest.raises(InputError, match=r"started with learning_rate=0.003, not 0.01"):
        finetune(forecaster, employment.series, 12, quick(steps=8, learning_rate=1e-2), run, resume=True)
    with pytest.raises(InputError, match="started from another base model"):
        finetune(forecasters["moirai-moe"], employment.series, 12, quick(steps=8), run, resume=True)
    with pytest.raises(InputError, match="holds an earlier fine-tuning run; resume it"):
        finetune(forecaster, employment.series, 12, quick(steps=8), run)
    with pytest.raises(InputError, match="resume needs the output folder"):
        finetune(forecaster, employment.series, 12, quick(steps=8), resume=True)


def test_an_output_folder_of_other_files_is_refused_before_training(forecasters, employment, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"folder holds other files \(notes.txt\)"):
        finetune(forecasters["moirai-2"], employment.series, 12, quick(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_failure_while_saving_leaves_the_previous_folder_complete(forecasters, employment, tmp_path, monkeypatch):
    from moirai_cli.training import output

    real = output.write_checkpoint_files
    calls = []

    def failing(folder, *args):
        calls.append(folder)
        if len(calls) == 2:
            (folder / CONFIG_FILE).write_text("{")  # half written
            raise OSError(28, "No space left on device")
        return real(folder, *args)

    monkeypatch.setattr(trainer_module, "write_checkpoint_files", failing)
    with pytest.raises(InputError, match=r"run: cannot write here: No space left on device"):
        finetune(forecasters["moirai-2"], employment.series, 12, quick(steps=12), tmp_path / "run")
    run = tmp_path / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left behind
    assert sorted(p.name for p in run.iterdir()) == sorted(["README.md", CONFIG_FILE, WEIGHTS_FILE, STATE_FILE])
    MoiraiForecaster.from_pretrained(str(run), device="cpu")  # the first save, whole


def test_a_first_save_that_fails_leaves_no_folder(forecasters, employment, tmp_path, monkeypatch):
    def failing(folder, *args):
        (folder / WEIGHTS_FILE).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "write_checkpoint_files", failing)
    with pytest.raises(KeyboardInterrupt):
        finetune(forecasters["moirai-2"], employment.series, 12, quick(), tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


# --- refusals before anything runs -------------------------------------------------------------------


def test_a_run_that_cannot_fit_in_memory_is_refused_saying_what_fits(forecasters, employment, monkeypatch):
    from moirai_cli.training import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: (300 << 20, 300 << 20))
    with pytest.raises(InputError, match=r"needs about .* of memory, 300.0 MiB available; a batch size of at most \d+ fits"):
        finetune(forecasters["moirai-moe"], employment.series, 12, quick(batch_size=4096, context_length=512))


def test_series_too_short_to_train_on_are_refused(forecasters, employment):
    with pytest.raises(InputError, match="no series is long enough to train on: with horizon 60 and 1 validation window"):
        finetune(forecasters["moirai-2"], employment.series, 60, quick())


def test_a_bfloat16_base_is_refused(moirai2_checkpoint, employment):
    forecaster = MoiraiForecaster.from_pretrained(str(moirai2_checkpoint), device="cpu", dtype=torch.bfloat16)
    with pytest.raises(InputError, match="base model loaded in float32; train in bfloat16 with dtype='bfloat16'"):
        finetune(forecaster, employment.series, 12, quick())


def test_moirai1_trains_with_the_size_auto_picks_for_most_series(forecasters, employment):
    from moirai_cli.training.trainer import choose_patch_size
    from moirai_cli.training.windows import TrainingWindows

    forecaster = forecasters["moirai-1"]
    settings = quick(patch_size=None)
    chosen = choose_patch_size(forecaster, employment.series, 12, settings, TrainingWindows(employment.series, 12, 1))
    histories = [r.target[:-12] for r in employment.series]
    scores = np.stack([forecaster.holdout_nll(histories, None, None, 12, 48, size, 8) for size in forecaster.patch_sizes])
    picks = np.asarray(forecaster.patch_sizes)[scores.argmin(axis=0)]
    sizes, votes = np.unique(picks, return_counts=True)
    assert chosen == sizes[votes.argmax()]


# --- the test: each family learns real data ----------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_learns_real_data_in_seconds(forecasters, employment, tmp_path, family):
    """Monthly US employment: the tuned folder's WQL on the last year, held out of training, is well below the base's."""
    settings = quick(steps=40, batch_size=16, validation_interval=8)
    result = finetune(forecasters[family], employment.series, 12, settings, tmp_path / "tuned", freq=employment.freq)
    tuned = MoiraiForecaster.from_pretrained(str(tmp_path / "tuned"), device="cpu")
    options = dict(windows=1, freq=employment.freq, seed=0, context_length=48, patch_size=16)
    before = evaluate(forecasters[family], employment.series, 12, **options).summary.loc["wql", "model"]
    after = evaluate(tuned, employment.series, 12, **options).summary.loc["wql", "model"]
    assert after < 0.6 * before
    assert (result.metrics_before["wql"], result.metrics_after["wql"]) == pytest.approx((before, after), rel=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_multivariate_target_with_covariates_trains(forecasters, weather, family, tmp_path):
    """Seattle's daily weather: two temperatures as the target, wind a past and precipitation a known covariate."""
    settings = quick(steps=8, context_length=56, validation_windows=2)
    result = finetune(forecasters[family], weather.series, 14, settings, tmp_path / "tuned", freq=weather.freq)
    assert result.best_validation_loss < result.base_validation_loss
    record = weather.series[0]
    tuned = MoiraiForecaster.from_pretrained(str(tmp_path / "tuned"), device="cpu")
    forecast = tuned.predict([record.target[:-14]], 14, past_covariates=[record.past_covariates[:-14]],
                             known_covariates=[record.known_covariates], context_length=56, patch_size=16, seed=0)
    assert forecast.mean.shape == (1, 14, 2) and np.isfinite(forecast.mean).all()


def test_progress_is_reported_after_every_step(forecasters, employment):
    seen = []
    finetune(forecasters["moirai-2"], employment.series, 12, quick(steps=8), progress=seen.append)
    assert [state.step for state in seen] == list(range(1, 9)) and {state.steps for state in seen} == {8}
    assert [state.validation_loss is None for state in seen] == [True] * 3 + [False] * 5  # the latest, from step 4 on
    best = [state.best_validation_loss for state in seen]
    assert best == sorted(best, reverse=True)
    assert seen[-1].seconds_left == 0 and all(state.seconds_left >= 0 and np.isfinite(state.train_loss) for state in seen)


def test_an_output_folder_in_a_missing_folder_is_refused_before_training(forecasters, employment, tmp_path):
    with pytest.raises(InputError, match="folder .*missing does not exist"):
        finetune(forecasters["moirai-2"], employment.series, 12, quick(), tmp_path / "missing" / "run")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_pass_with_gradients_computes_what_the_forecast_pass_computes(forecasters, family, mode):
    """The forward pass writes into preallocated tensors only when no gradient flows; with gradients (any mode:
    every weight, or adapters that start as no change) it must give the same values, never what a buffer held."""
    from moirai_cli.training.trainer import configure_mode

    from moirai_cli.forecasting.packing import collate, pack_series

    forecaster = forecasters[family]
    values = np.sin(np.arange(80) / 3)[:, None] * 5 + 20
    tokens = collate([pack_series(values, 16, 64, 16, forecaster.model.config.max_patch_size, holdout=True)], 16).tokens
    with torch.inference_mode():
        expected = forecaster.model(tokens)
    network = training_network(forecaster.model, torch.device("cpu"))
    configure_mode(network, quick(mode=mode))
    got = network(tokens)
    if family == "moirai-2":
        assert got.requires_grad
        torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-5)
    else:
        assert got.logits.requires_grad
        torch.testing.assert_close(got.logits.detach(), expected.logits, rtol=1e-5, atol=1e-5)
        for trained, forecast in zip(got.params, expected.params):
            for name in forecast:
                torch.testing.assert_close(trained[name].detach(), forecast[name], rtol=1e-5, atol=1e-5)
