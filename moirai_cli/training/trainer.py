"""The fine-tuning loop: adapt a loaded checkpoint of any family to a set of series.

`finetune` trains a float32 copy of the forecaster's network on windows drawn from the series'
history (windows.py) with the family's own loss (objectives.py), by AdamW with decoupled weight
decay on the weights of linear layers only, as uni2ts fine-tunes Moirai 1.x (biases, norms,
embeddings and the attention's variate bias get none). Every `validation_interval` steps it
computes the loss on the held-out last horizons of every series; the best step's weights are kept,
and the run stops after `patience` validations without improvement. With an output folder, each
new best is written there at once (output.py: atomically, with the state `resume` continues
from), so a stopped run leaves its best folder so far.

On a CPU the same settings and data give the same weights, bit for bit: the windows of each step
come from a generator seeded with (seed, step), the adapters from one seeded with the seed, and
nothing else draws. A resumed run restarts from the state saved with its last best step and
replays the steps after it, so it ends as an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moirai_cli.data import SeriesRecord
from moirai_cli.errors import InputError, MoiraiError, check_at_least_one, option
from moirai_cli.evaluation.backtest import evaluate
from moirai_cli.forecasting.packing import TokenBatch
from moirai_cli.forecasting.pipeline import PROCEDURES, MoiraiForecaster
from moirai_cli.model.checkpoint import prepare_for_inference, skipped_weight_init
from moirai_cli.model.config import FAMILY_TITLES, MOIRAI_2
from moirai_cli.model.layers import PatchSizeLinear, RMSNorm
from moirai_cli.model.network import MoiraiNetwork, build_network
from moirai_cli.training.lora import add_adapters, merge_adapters, merged_state_dict
from moirai_cli.training.memory import TrainingRequest, check_training_fits
from moirai_cli.training.objectives import window_group_losses
from moirai_cli.training.output import (
    BaseModel,
    CardFacts,
    check_output_dir,
    data_fingerprint,
    load_state,
    model_card,
    publish_folder,
    write_checkpoint_files,
)
from moirai_cli.training.settings import FinetuneSettings
from moirai_cli.training.windows import TrainingWindows, WindowPacker, validation_windows

ADAM_BETAS = (0.9, 0.98)  # uni2ts's MoiraiFinetune defaults
ADAM_EPS = 1e-6
STATE_FORMAT = 1
HEAD_MODULES = {MOIRAI_2: "out_proj"}  # the output head by family; the mixture families' is param_proj
MIXTURE_HEAD = "param_proj"


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run stands after a step, for a progress display."""

    step: int
    steps: int
    train_loss: float
    validation_loss: float | None  # the latest validation, None before the first (or without validation)
    best_validation_loss: float | None
    elapsed_s: float  # since this session started (a resumed run counts from its resumption)
    steps_done_here: int  # steps this session computed

    @property
    def seconds_left(self) -> float:
        """Estimated time to the last step at this session's pace."""
        return self.elapsed_s / max(1, self.steps_done_here) * (self.steps - self.step)


@dataclass
class FinetuneResult:
    """A finished run: the tuned network and what the model card says about it."""

    model: MoiraiNetwork  # tuned weights (adapters merged), ready to forecast on `device`
    device: torch.device
    settings: FinetuneSettings
    horizon: int
    patch_size: int  # the size it was trained with: forecast with it (Moirai 1.x has several)
    steps_run: int  # the last step trained
    best_step: int  # the step whose weights were kept (0: the base model's)
    stopped_early: bool
    base_validation_loss: float | None
    best_validation_loss: float | None
    data_fingerprint: str
    output_dir: Path | None
    history: list[tuple[int, float, float | None]] = field(repr=False)  # (step, training loss, validation loss)
    metrics_before: dict[str, float] | None = None  # evaluate's summary on the validation windows, base model
    metrics_after: dict[str, float] | None = None  # the same for the tuned model

    def forecaster(self, name: str | None = None) -> MoiraiForecaster:
        """A MoiraiForecaster on the tuned weights (no disk round-trip; it shares them with `model`)."""
        label = name or (str(self.output_dir) if self.output_dir is not None else "fine-tuned model")
        return MoiraiForecaster(self.model, self.device, name=label)


def finetune(
    forecaster: MoiraiForecaster,
    records: Sequence[SeriesRecord],
    horizon: int,
    settings: FinetuneSettings = FinetuneSettings(),
    output_dir: str | Path | None = None,
    *,
    base: BaseModel | None = None,
    freq: str | None = None,
    resume: bool = False,
    progress: Callable[[TrainingProgress], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the forecaster's checkpoint on `records` for forecasts of `horizon` steps.

    The forecaster must hold float32 weights (`settings.dtype` bfloat16 trains them under bfloat16
    autocast). With `output_dir`, the best weights so far are kept there as a checkpoint folder with a
    model card (base: the checkpoint it names; freq: the data's frequency, for the card's metrics);
    with `resume`, the unfinished run in `output_dir` continues (same data, horizon and settings;
    only `steps` may differ). `progress` is called after every step. Bad input, a run that cannot
    fit in memory, or a loss that turns infinite raise an InputError naming what to change.
    """
    check_at_least_one(("horizon", horizon))
    records = list(records)
    if not records:
        raise InputError("no series to fine-tune on")
    if forecaster.model.dtype != torch.float32:
        raise InputError(
            f"fine-tuning needs the base model loaded in float32; train in bfloat16 with {option('dtype', 'bfloat16')} (autocast) instead"
        )
    folder = Path(output_dir) if output_dir is not None else None
    if resume and folder is None:
        raise InputError("resume needs the output folder of the run to continue")
    if folder is not None:
        check_output_dir(folder, resume)
    base = base or BaseModel(forecaster.name or "unknown")
    fingerprint = data_fingerprint(records)
    base_digest = weights_digest(forecaster.model) if folder is not None else None  # only a saved run can resume
    state = load_state(folder) if resume else None
    if state is not None:
        check_resumable(state, settings, horizon, fingerprint, base_digest, folder)

    training = TrainingWindows(records, horizon, settings.validation_windows)
    if training.candidates == 0:
        needed = horizon * (settings.validation_windows + 1) + 1
        raise InputError(
            f"no series is long enough to train on: with horizon {horizon} and {settings.validation_windows} "
            f"validation window(s), a series needs at least {needed} rows, with an observed value before the last "
            f"{horizon * (settings.validation_windows + 1)}"
        )
    held_out = validation_windows(records, horizon, settings.validation_windows)
    if settings.validation_windows and not held_out:
        raise InputError(
            f"no series has an observed value in its last {settings.validation_windows} horizon(s) to validate on; "
            f"set {option('validation_windows', 0)} to train without validation"
        )
    patch_size = int(state["patch_size"]) if state is not None else choose_patch_size(forecaster, records, horizon, settings, training)
    config = forecaster.model.config
    device = forecaster.device
    check_training_fits(config, training_request(forecaster, records[0], horizon, patch_size, settings), device)
    trainee = training_network(forecaster.model, device)
    configure_mode(trainee, settings)

    packer = WindowPacker(
        records, horizon, settings.context_length, patch_size, config.max_patch_size,
        PROCEDURES[config.family].causal_mean_target, device,
    )
    run = TrainingRun(trainee, settings, training, packer, list(packer.batches(held_out, settings.batch_size)), device)
    facts = dict(
        family=config.family, base=base, fingerprint=fingerprint, series=len(records), horizon=horizon,
        patch_size=patch_size, settings=settings.to_dict(), learning_rate=settings.effective_learning_rate,
    )

    def save(finished: bool, metrics: tuple[dict | None, dict | None] = (None, None)) -> None:
        """The kept weights, the card and (unfinished) the resume state, written as one folder."""
        if folder is None:
            return
        card = model_card(CardFacts(
            **facts, steps_run=run.step, best_step=run.best_step, stopped_early=run.stopped_early, finished=finished,
            base_validation_loss=run.base_loss, best_validation_loss=run.best_loss,
            metrics_before=metrics[0], metrics_after=metrics[1],
        ))
        resume_state = None if finished else run.state(
            horizon=horizon, fingerprint=fingerprint, patch_size=patch_size, base_digest=base_digest, config=config.to_dict()
        )
        weights = merged_state_dict(run.model)  # the kept weights: saves come as a best step is reached, and at the end
        publish_folder(folder, lambda staging: write_checkpoint_files(staging, run.model, weights, card, resume_state))

    if state is not None:
        run.restore(state)
    else:
        run.start()
    run.train(on_new_best=lambda: save(finished=False), progress=progress)
    run.keep_best()
    merge_adapters(run.model)
    tuned = prepare_for_inference(run.model, device, torch.float32)
    result = FinetuneResult(
        model=tuned, device=device, settings=settings, horizon=horizon, patch_size=patch_size, steps_run=run.step,
        best_step=run.best_step, stopped_early=run.stopped_early, base_validation_loss=run.base_loss,
        best_validation_loss=run.best_loss, data_fingerprint=fingerprint, output_dir=folder, history=run.history,
    )
    if settings.validation_windows:
        options = dict(windows=settings.validation_windows, freq=freq, seed=settings.seed,
                       context_length=settings.context_length, patch_size=patch_size)
        result.metrics_before = evaluate(forecaster, records, horizon, **options).summary["model"].to_dict()
        result.metrics_after = evaluate(result.forecaster(), records, horizon, **options).summary["model"].to_dict()
    save(finished=True, metrics=(result.metrics_before, result.metrics_after))
    return result


class TrainingRun:
    """The state of a run between steps: weights, optimiser, the best step so far, the history."""

    def __init__(self, model: MoiraiNetwork, settings: FinetuneSettings, windows: TrainingWindows,
                 packer: WindowPacker, validation: list[TokenBatch], device: torch.device):
        self.model, self.settings, self.windows, self.packer = model, settings, windows, packer
        self.validation = validation  # packed validation batches, computed once
        self.trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(
            parameter_groups(model, settings.weight_decay), lr=settings.effective_learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS,
            foreach=True,  # one call per parameter group, on the CPU too
        )
        self.autocast = (
            (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16))
            if settings.dtype == "bfloat16" else contextlib.nullcontext
        )
        self.step = 0
        self.best_step = 0
        self.best_loss: float | None = None
        self.base_loss: float | None = None
        self.best_weights: dict[str, torch.Tensor] = {}
        self.stopped_early = False
        self.history: list[tuple[int, float, float | None]] = []
        self.bad_validations = 0

    def start(self) -> None:
        """Step 0: the base model's validation loss, and its weights as the best so far."""
        self.base_loss = self.best_loss = self.validation_loss()
        self.best_weights = self.trainable_copy()

    def validation_loss(self) -> float | None:
        """The family's loss over every held-out window, mean over (window, variate) groups; None without validation."""
        if not self.validation:
            return None
        with torch.no_grad(), self.autocast():
            groups = torch.cat([window_group_losses(self.model, batch) for batch in self.validation])
        return float(groups.mean())

    def trainable_copy(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.trainable.items()}

    def train(self, on_new_best: Callable[[], None], progress: Callable[[TrainingProgress], None] | None) -> None:
        """Steps from the current one to the last, validating every interval; stops early after `patience` bad validations."""
        settings = self.settings
        started, first = time.monotonic(), self.step
        self.model.train()
        while self.step < settings.steps:
            self.step += 1
            loss = self.training_step()
            validation, improved = None, False
            if self.step % settings.validation_interval == 0 or self.step == settings.steps:
                validation = self.validation_loss()
                improved = validation is None or validation < self.best_loss
                self.bad_validations = 0 if improved else self.bad_validations + 1
            self.history.append((self.step, loss, validation))
            if improved:
                self.best_loss, self.best_step = validation, self.step
                self.best_weights = self.trainable_copy()
                on_new_best()
            if progress is not None:
                latest = next((v for _, _, v in reversed(self.history) if v is not None), None)
                progress(TrainingProgress(self.step, settings.steps, loss, latest, self.best_loss,
                                          time.monotonic() - started, self.step - first))
            if validation is not None and self.bad_validations >= settings.patience:
                self.stopped_early = True
                break

    def training_step(self) -> float:
        """One optimiser step on a fresh batch of windows; returns its loss."""
        settings = self.settings
        batch = self.packer.batch(self.windows.draw(settings.seed, self.step, settings.batch_size))
        warmup = min(1.0, self.step / settings.warmup_steps) if settings.warmup_steps else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = settings.effective_learning_rate * warmup
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = window_group_losses(self.model, batch).mean()
        if not torch.isfinite(loss):
            raise InputError(
                f"the training loss became {float(loss)} at step {self.step}; lower the learning rate "
                f"(now {settings.effective_learning_rate:g})"
            )
        loss.backward()
        if settings.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.trainable.values(), settings.max_grad_norm)
        self.optimizer.step()
        return loss.item()

    def keep_best(self) -> None:
        """Load the best step's weights into the network (which then leaves training)."""
        with torch.no_grad():
            for name, tensor in self.best_weights.items():
                self.trainable[name].copy_(tensor)

    def state(self, **identity: Any) -> dict[str, Any]:
        """What `restore` needs to continue after the current step, which is the best one (saved as it is reached)."""
        return {
            "format": STATE_FORMAT, **identity, "settings": self.settings.to_dict(), "step": self.step,
            "best_step": self.best_step, "best_loss": self.best_loss, "base_loss": self.base_loss,
            "history": [[step, loss, math.nan if v is None else v] for step, loss, v in self.history],
            "trainable": {name: t.cpu() for name, t in self.best_weights.items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved state: weights, optimiser moments, step, best loss and history."""
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                self.trainable[name].copy_(tensor)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = self.best_step = int(state["step"])
        self.best_loss, self.base_loss = state["best_loss"], state["base_loss"]
        self.history = [(int(s), float(loss), None if math.isnan(v) else float(v)) for s, loss, v in state["history"]]
        self.best_weights = self.trainable_copy()


def training_network(model: MoiraiNetwork, device: torch.device) -> MoiraiNetwork:
    """A float32 copy of `model` on `device` that autograd can train: plain layers, whatever kernels `model` uses to forecast."""
    with skipped_weight_init():
        network = build_network(model.config)
    network.to(device)
    network.load_state_dict({name: tensor.detach() for name, tensor in model.state_dict().items()}, strict=True)
    return network.train()


def head_module(model: MoiraiNetwork) -> nn.Module:
    """The family's output head (the mixture families' parameter projection, Moirai 2.0's quantile block)."""
    return getattr(model, HEAD_MODULES.get(model.family, MIXTURE_HEAD))


def configure_mode(model: MoiraiNetwork, settings: FinetuneSettings) -> None:
    """Which weights train: all (full), the output head's (head), or new low-rank adapters (lora)."""
    model.requires_grad_(settings.mode == "full")
    if settings.mode == "head":
        head_module(model).requires_grad_(True)
    elif settings.mode == "lora":
        add_adapters(model, settings.lora_rank, settings.lora_alpha, settings.seed)


def training_request(
    forecaster: MoiraiForecaster, record: SeriesRecord, horizon: int, patch_size: int, settings: FinetuneSettings
) -> TrainingRequest:
    """The sizes of a run's training step, for the memory check (variates and covariates as in `record`)."""

    def columns(values: np.ndarray | None) -> int:
        return 0 if values is None else np.asarray(values).reshape(len(values), -1).shape[1]

    return TrainingRequest(
        batch_size=settings.batch_size,
        context_length=settings.context_length,
        horizon=horizon,
        patch_size=patch_size,
        variates=columns(record.target),
        covariates=columns(record.past_covariates) + columns(record.known_covariates),
        parameters=forecaster.parameter_count,
        trainable=trainable_count(forecaster.model, settings),
    )


def trainable_count(model: MoiraiNetwork, settings: FinetuneSettings) -> int:
    """How many weights a run in `settings.mode` trains (LoRA: its adapters, rank x (in + out) per linear layer)."""
    if settings.mode == "full":
        return sum(p.numel() for p in model.parameters())
    if settings.mode == "head":
        return sum(p.numel() for p in head_module(model).parameters())
    linear = [m for m in model.encoder.layers.modules() if isinstance(m, nn.Linear)]
    return sum(settings.lora_rank * (m.in_features + m.out_features) for m in linear)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as uni2ts makes them: decay for the weights of linear layers (adapters too), none for the rest."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            if name == "bias" or isinstance(module, (RMSNorm, nn.Embedding)):
                no_decay.append(parameter)
            elif isinstance(module, (nn.Linear, PatchSizeLinear)):
                decay.append(parameter)
            else:
                raise MoiraiError(f"parameter {name} of {type(module).__name__} has no weight-decay rule")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def weights_digest(model: MoiraiNetwork) -> str:
    """A short digest of a network's weights (sums per tensor): tells a resumed run's base from another checkpoint."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            values = tensor.double()
            digest.update(f"{name}:{values.sum().item():.12e}:{values.square().sum().item():.12e}".encode())
    return digest.hexdigest()[:16]


def check_resumable(state: dict[str, Any], settings: FinetuneSettings, horizon: int, fingerprint: str, base_digest: str, folder: Path) -> None:
    """InputError unless the saved run used this data, horizon, base model and settings (`steps` may change)."""
    if state.get("format") != STATE_FORMAT:
        raise InputError(f"{folder}: the run's state was written by another version of moirai-cli; start a new run")
    if state["fingerprint"] != fingerprint:
        raise InputError(f"{folder}: the run was trained on other data ({state['fingerprint']}); resume it with the same data")
    if state["horizon"] != horizon:
        raise InputError(f"{folder}: the run was trained for horizon {state['horizon']}, not {horizon}")
    if state["base_digest"] != base_digest:
        raise InputError(f"{folder}: the run started from another base model; resume it with the same base model")
    saved = FinetuneSettings.from_dict(state["settings"])
    differing = [name for name, value in settings.to_dict().items() if name != "steps" and saved.to_dict()[name] != value]
    if differing:
        name = differing[0]
        raise InputError(
            f"{folder}: the run was started with {option(name, saved.to_dict()[name])}, not {getattr(settings, name)!r}; "
            f"resume it with its own settings (only {option('steps')} may change)"
        )
    if settings.steps < state["step"]:
        raise InputError(f"{folder}: the run has already trained {state['step']} steps; {option('steps')} must be at least that")


def run_settings(output_dir: str | Path) -> tuple[FinetuneSettings, int]:
    """The settings and horizon of the unfinished run in `output_dir` (what `resume` must be given)."""
    folder = Path(output_dir)
    check_output_dir(folder, resume=True)
    state = load_state(folder)
    return FinetuneSettings.from_dict(state["settings"]), int(state["horizon"])


def choose_patch_size(
    forecaster: MoiraiForecaster, records: Sequence[SeriesRecord], horizon: int, settings: FinetuneSettings, windows: TrainingWindows
) -> int:
    """The patch size to train with: the given one, the family's forecast default, or for Moirai 1.x ('auto') the size
    the auto rule picks for most series, scored on each series' training history (ties: the first size)."""
    sizes = forecaster.patch_sizes
    if settings.patch_size is not None:
        if settings.patch_size not in sizes:
            raise InputError(f"{option('patch_size')} {settings.patch_size} is not one of this checkpoint's sizes {list(sizes)}")
        return settings.patch_size
    default = forecaster.default_patch_size
    if default != "auto":
        return int(default)
    cut = settings.validation_windows * horizon
    kept = [r for r, count in zip(records, np.diff(windows.cumulative, prepend=0)) if count > 0]

    def history(values: np.ndarray | None, record: SeriesRecord) -> list[np.ndarray] | None:
        return None if values is None else np.asarray(values, dtype=np.float64)[: len(record.target) - cut]

    targets = [history(r.target, r) for r in kept]
    past = [history(r.past_covariates, r) for r in kept] if kept[0].past_covariates is not None else None
    known = [history(r.known_covariates, r) for r in kept] if kept[0].known_covariates is not None else None
    with torch.no_grad():
        scores = np.stack([
            forecaster.holdout_nll(targets, past, known, horizon, settings.context_length, size, settings.batch_size)
            for size in sizes
        ])
    votes = np.bincount(scores.argmin(axis=0), minlength=len(sizes))
    return int(sizes[int(votes.argmax())])


def describe(result: FinetuneResult) -> str:
    """One line summing up a run: steps, best validation loss against the base model's, where the folder is."""
    title = FAMILY_TITLES[result.model.family]
    line = f"fine-tuned {title} for {result.steps_run} steps" + (" (stopped early)" if result.stopped_early else "")
    if result.base_validation_loss is not None:
        line += (f"; validation loss {result.best_validation_loss:.4g} at step {result.best_step}, "
                 f"base model {result.base_validation_loss:.4g}")
    if result.output_dir is not None:
        line += f"; saved to {result.output_dir}"
    return line
