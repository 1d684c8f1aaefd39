"""The user-facing forecaster: load a checkpoint of any Moirai family once, forecast batches of series.

    >>> forecaster = MoiraiForecaster.from_pretrained("Salesforce/moirai-moe-1.0-R-small")
    >>> forecast = forecaster.predict([np.sin(np.arange(200) / 5)], horizon=24, seed=0)
    >>> forecast.quantiles([0.1, 0.5, 0.9]).shape  # (series, levels, horizon, variates)
    (1, 3, 24, 1)

The same `predict` serves every family; what differs is a row of `PROCEDURES` (how the
reference's forecast wrapper of that family fills gaps and which patch size it uses by
default) and the decoder: Moirai-MoE samples one patch per pass, Moirai 1.x samples every
future patch from one pass, Moirai 2.0 predicts quantiles. Sampling families return a
`Forecast` of sample paths, Moirai 2.0 a `DirectQuantileForecast`; both have `mean` and
`quantiles(levels)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from moirai_cli.errors import InputError, ModelError, MoiraiError, check_at_least_one, option
from moirai_cli.forecasting.decoding import (
    decode_cached,
    decode_exact,
    decode_one_pass,
    decode_quantiles,
)
from moirai_cli.forecasting.execution import ExecutionPlan, plan_for
from moirai_cli.forecasting.job import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MODEL,
    DEFAULT_NUM_SAMPLES,
    DTYPE_NAMES,
    ForecastJob,
    ModelSpec,
)
from moirai_cli.forecasting.memory import check_fits, request_for
from moirai_cli.forecasting.numerics import condition_inputs, restore_samples
from moirai_cli.forecasting.packing import TokenBatch, collate, pack_series
from moirai_cli.forecasting.seeding import run_seed, series_generators
from moirai_cli.model.checkpoint import CONFIG_FILE, load_model, resolve_checkpoint
from moirai_cli.model.config import FAMILY_TITLES, MOIRAI_1, MOIRAI_2, MOIRAI_MOE, load_config
from moirai_cli.model.network import NETWORK_CLASSES, MoiraiNetwork, gather_rows

if TYPE_CHECKING:
    from moirai_cli.data import SeriesDataset

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
"""The weight dtypes a forecaster loads in, by the name the command line and the engines take."""


@dataclass(frozen=True)
class FamilyProcedure:
    """What a family's reference forecast wrapper decides beyond the network."""

    causal_mean_target: bool  # a univariate target's gaps: causal mean (else zeros, as for everything else)
    default_patch_size: int | str | None  # None: the checkpoint's only size
    decodings: tuple[str, ...]  # decoding modes on offer, the reference's first


PROCEDURES: dict[str, FamilyProcedure] = {
    MOIRAI_1: FamilyProcedure(causal_mean_target=False, default_patch_size="auto", decodings=("exact",)),
    MOIRAI_MOE: FamilyProcedure(causal_mean_target=True, default_patch_size=16, decodings=("exact", "cached")),
    MOIRAI_2: FamilyProcedure(causal_mean_target=True, default_patch_size=None, decodings=("exact",)),
}


class FamilyTraits:
    """What a checkpoint's family offers (`self.family`), for loaded forecasters and bare config files alike."""

    family: str

    @property
    def family_title(self) -> str:
        """The family as people call it: 'Moirai 1.x', 'Moirai-MoE' or 'Moirai 2.0'."""
        return FAMILY_TITLES[self.family]

    @property
    def output_kind(self) -> str:
        """'samples' (predict returns a Forecast of sample paths) or 'quantiles' (a DirectQuantileForecast)."""
        return NETWORK_CLASSES[self.family].output_kind

    @property
    def decodings(self) -> tuple[str, ...]:
        """The decoding modes `predict` offers for this family ('exact' first: the reference's)."""
        return PROCEDURES[self.family].decodings


@dataclass(frozen=True)
class CheckpointTraits(FamilyTraits):
    """What a checkpoint folder's forecaster will offer, read from its config.json alone (no weights loaded).

    The same attributes as MoiraiForecaster's, so options can be checked against several
    checkpoints before any of them is loaded.
    """

    family: str
    patch_sizes: tuple[int, ...]

    @classmethod
    def of_folder(cls, folder: str | Path) -> "CheckpointTraits":
        config = load_config(Path(folder) / CONFIG_FILE)
        return cls(config.family, tuple(config.patch_sizes))


@dataclass
class Forecast:
    """Sample paths for N series: samples has shape (N, S, H, V) (V = number of target variates)."""

    samples: np.ndarray  # (N, S, H, V) float32; float64 when a series had to be rescaled (see numerics)
    patch_sizes: np.ndarray | None = None  # (N,) patch size used for each series

    @property
    def mean(self) -> np.ndarray:
        """(N, H, V) mean over sample paths."""
        return self.samples.mean(axis=1)

    def quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """(N, Q, H, V) empirical quantiles of the sample paths."""
        return np.quantile(self.samples, np.asarray(levels), axis=1).transpose(1, 0, 2, 3)

    def with_sorted_quantiles(self) -> "Forecast":
        """Itself: quantiles of sample paths never cross."""
        return self


@dataclass
class DirectQuantileForecast:
    """Quantiles the model predicts itself (Moirai 2.0), at its own levels: values (N, Q, H, V).

    Other levels and the mean follow GluonTS's QuantileForecast, which the reference returns:
    linear interpolation between levels, exponential tails beyond the outer ones, and the
    median as the mean.
    """

    values: np.ndarray  # (N, Q, H, V) float32
    levels: tuple[float, ...]  # (Q,) increasing
    patch_sizes: np.ndarray | None = None  # (N,) patch size used for each series
    samples = None  # no sample paths

    @property
    def mean(self) -> np.ndarray:
        """(N, H, V): the median, as GluonTS's QuantileForecast defines the mean without one stored."""
        return self.quantiles([0.5])[:, 0]

    def with_sorted_quantiles(self) -> "DirectQuantileForecast":
        """The same forecast with each step's predicted quantiles in increasing order, so no two levels cross.

        The model's own levels keep their values, reassigned in order; other levels and the mean
        are then read off the sorted values by the usual rule (as TimesFM's fix_quantile_crossing does).
        """
        return DirectQuantileForecast(np.sort(self.values, axis=1), self.levels, self.patch_sizes)

    def quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """(N, Q', H, V) at the given levels: the model's own where they match, else interpolated."""
        return np.stack([self._at(float(level)) for level in levels], axis=1)

    def _at(self, level: float) -> np.ndarray:
        """(N, H, V) at one level, by GluonTS's QuantileForecast.quantile rule."""
        xs, ys = self.levels, self.values
        if level in xs:
            return ys[:, xs.index(level)]
        if len(xs) < 2:
            return np.full_like(ys[:, 0], np.nan)
        tol = 1e-8
        left_tail, right_tail = max(xs[0], min(xs[1], 0.1)), min(xs[-1], max(xs[-2], 0.9))
        y = ys.astype(np.float64)
        if level <= left_tail:  # exponential tail through the two lowest levels
            slope = (y[:, 1] - y[:, 0]) / np.log((xs[1] + tol) / (xs[0] + tol) + tol)
            out = slope * np.log((level + tol) / (xs[1] + tol) + tol) + y[:, 1]
        elif level >= right_tail:  # and through the two highest
            slope = (y[:, -1] - y[:, -2]) / np.log((1 - xs[-2] + tol) / (1 - xs[-1] + tol) + tol)
            out = slope * np.log((1 - xs[-2] + tol) / (1 - level + tol) + tol) + y[:, -2]
        else:
            high = next(i for i, x in enumerate(xs) if level <= x)
            weight = (level - xs[high - 1]) / (xs[high] - xs[high - 1])
            out = y[:, high - 1] + weight * (y[:, high] - y[:, high - 1])
        return out.astype(ys.dtype)


def pick_device(device: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is passed to torch."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or mps") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device 'cuda' was asked for but torch sees no CUDA GPU; use {option('device')} cpu")
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device 'mps' was asked for but is not available; use {option('device')} cpu")
    return chosen


_PROCESS_FORECASTERS: dict[tuple, "MoiraiForecaster"] = {}
_PROCESS_FORECASTERS_LOCK = threading.Lock()


@contextlib.contextmanager
def model_errors(failure: str, *, local_folder_hint: bool = True) -> Iterator[None]:
    """Any failure to fetch or load a checkpoint as a one-line ModelError starting with `failure` (bad options stay InputErrors).

    A Hub failure that a local folder would avoid says so when `local_folder_hint`.
    """
    from moirai_cli.model.hub import HubError

    try:
        yield
    except HubError as exc:
        hint = f"or pass {option('model')} with a local checkpoint folder" if local_folder_hint else None
        raise ModelError(exc.message(hint)) from exc
    except MoiraiError:
        raise
    except Exception as exc:
        raise ModelError(f"{failure}: {' '.join(str(exc).split()) or type(exc).__name__}") from exc


def load_forecaster(spec: ModelSpec, *, device: str | None = None, progress: bool = False) -> "MoiraiForecaster":
    """Load `spec`'s checkpoint (on `device` when given, else the spec's); failures as one-line ModelErrors."""
    with model_errors(f"cannot load model '{spec.model}'"):
        return MoiraiForecaster.from_pretrained(
            spec.model, revision=spec.revision, cache_dir=spec.cache_dir, device=device or spec.device,
            dtype=DTYPES[spec.dtype], progress=progress,
        )


def fetch_checkpoint(spec: ModelSpec, *, progress: bool = False) -> Path:
    """The checkpoint's local folder, downloading it first if needed; failures as one-line ModelErrors."""
    with model_errors(f"cannot fetch model '{spec.model}'"):
        return resolve_checkpoint(spec.model, spec.revision, spec.cache_dir, progress=progress)


def load_forecaster_once(spec: ModelSpec | str = DEFAULT_MODEL, *, device: str | None = None, **options) -> "MoiraiForecaster":
    """`load_forecaster`, once per process for each checkpoint and device (a Hub id or folder, or a ModelSpec).

    Engine workers (Spark, Ray) call this for every partition or batch they forecast: a worker
    process reads the checkpoint the first time only and reuses the loaded model afterwards.
    `options` (revision, cache_dir, device, dtype) complete a name given as text.
    """
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec(spec, **options)
    device = device or spec.device
    key = (spec, str(device))
    with _PROCESS_FORECASTERS_LOCK:
        if key not in _PROCESS_FORECASTERS:
            _PROCESS_FORECASTERS[key] = load_forecaster(spec, device=device)
        return _PROCESS_FORECASTERS[key]


def as_2d(array: np.ndarray, name: str, series: object, dtype: type = np.float64) -> np.ndarray:
    """A (T, K) array of `dtype` from a (T,) or (T, K) one; other shapes, or infinite values, are an InputError."""
    array = np.asarray(array, dtype=dtype)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise InputError(f"{name} of series {series!r} must be 1-D or 2-D, got shape {array.shape}")
    infinite = np.isinf(array)
    if infinite.any():
        row, column = np.argwhere(infinite)[0]
        raise InputError(
            f"{name} of series {series!r}, row {row}, column {column}: {array[row, column]} is not finite; "
            "use NaN for a missing value"
        )
    return array


class MoiraiForecaster(FamilyTraits):
    """A loaded Moirai checkpoint (1.x, MoE or 2.0) ready to forecast; `predict` is the same for all."""

    def __init__(self, model: MoiraiNetwork, device: torch.device, name: str = "", plan: ExecutionPlan | None = None):
        self.model = model
        self.device = device
        self.name = name
        self.procedure = PROCEDURES[model.family]
        self.plan = plan or plan_for(device, model.config, model.dtype)  # default batch size and tokens per pass

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
        device: str = "auto",
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
    ) -> "MoiraiForecaster":
        """Load a local checkpoint folder or a Hub repo id onto `device` (progress: the Hub's download bars on a terminal)."""
        chosen = pick_device(device)
        folder = resolve_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir, progress=progress)
        return cls(load_model(folder, device=chosen, dtype=dtype), chosen, name=name_or_path)

    @property
    def family(self) -> str:
        """'moirai-1', 'moirai-moe' or 'moirai-2'."""
        return self.model.family

    @property
    def patch_sizes(self) -> tuple[int, ...]:
        return self.model.config.patch_sizes

    @property
    def default_patch_size(self) -> int | str:
        """What `predict` uses without `patch_size`: 16 for Moirai-MoE, 'auto' for 1.x, 2.0's only size."""
        default = self.procedure.default_patch_size
        return self.patch_sizes[0] if default is None else default

    @property
    def quantile_levels(self) -> tuple[float, ...] | None:
        """The levels a quantile model predicts (Moirai 2.0), else None."""
        return getattr(self.model.config, "quantile_levels", None)

    @property
    def parameter_count(self) -> int:
        """Trainable parameters of the network (MoE: all experts, not only the active ones)."""
        return sum(parameter.numel() for parameter in self.model.parameters())

    def predict(
        self,
        target: Sequence[np.ndarray],
        horizon: int,
        *,
        past_covariates: Sequence[np.ndarray] | None = None,
        known_covariates: Sequence[np.ndarray] | None = None,
        item_ids: Sequence[Hashable] | None = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        num_samples: int | None = None,
        patch_size: int | Literal["auto"] | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        decoding: Literal["exact", "cached"] = "exact",
        progress: Callable[[int], None] | None = None,
        token_budget: int | None = None,
        sort_quantiles: bool = False,
    ) -> Forecast | DirectQuantileForecast:
        """Forecast `horizon` steps after the end of each series.

        target: each (T_i,) or (T_i, V) with NaN for missing values (V the same for all).
        past_covariates: each (T_i, Cp), known only up to the forecast origin.
        known_covariates: each (T_i + horizon, Ck), known into the future.
        item_ids: a key per series (default: its position in `target`). Each series draws its
        samples from its own generator, seeded from `seed` and its key, so with a seed its
        sample paths depend on its own data, key and the options only, not on the other series
        or the batching (on the CPU bit for bit; elsewhere up to float rounding).
        patch_size: one of the checkpoint's sizes or 'auto'; None takes `default_patch_size`.
        Sampling families return num_samples (default 100) sample paths per series; Moirai
        2.0 returns its quantiles, and num_samples and seed do not apply to it.
        batch_size (series per batch) and token_budget (tokens per forward pass) default to the
        device's plan (`self.plan`): small chunks on a CPU, large passes on a GPU. sort_quantiles
        puts a quantile model's levels in order where they cross (see `with_sorted_quantiles`).
        """
        batch_size = self.plan.batch_size if batch_size is None else batch_size
        token_budget = self.plan.token_budget if token_budget is None else token_budget
        check_at_least_one(("token_budget", token_budget))
        num_samples = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
        targets, past, known = self._check_inputs(target, horizon, past_covariates, known_covariates, context_length, num_samples, batch_size)
        if decoding not in self.decodings:
            offered = " or ".join(self.decodings)
            if decoding in ("exact", "cached"):
                raise InputError(f"decoding {decoding!r} is not available for {self.family_title} checkpoints: use {offered}")
            raise InputError(f"unknown decoding {decoding!r}: use {offered}")
        keys = list(range(len(targets))) if item_ids is None else list(item_ids)
        if len(keys) != len(targets):
            raise InputError(f"got {len(keys)} item ids for {len(targets)} series")
        base_seed = run_seed(seed)
        patch_size = self.default_patch_size if patch_size is None else patch_size
        quantile_levels = self.quantile_levels
        width = num_samples if quantile_levels is None else len(quantile_levels)
        request = request_for(
            self.model.config, targets, past, known, horizon=horizon, num_samples=num_samples, batch_size=batch_size,
            context_length=context_length, patch_size=patch_size, decoding=decoding, token_budget=token_budget,
        )
        check_fits(self.model.config, request, self.device)  # before allocating anything
        targets, past, known, scalings = condition_inputs(targets, past, known, context_length)
        with torch.inference_mode():
            sizes = self._choose_patch_sizes(targets, past, known, horizon, context_length, patch_size, batch_size)
            dtype = np.float32 if all(scaling.identity for scaling in scalings) else np.float64
            out = np.empty((len(targets), width, horizon, targets[0].shape[1]), dtype=dtype)
            for size in sorted(set(sizes.tolist())):
                batches = self._batches(np.flatnonzero(sizes == size), targets, past, known, horizon, context_length, size, batch_size)
                for rows, batch in batches:
                    generators = series_generators(base_seed, [keys[i] for i in rows], self.device)
                    values = self._decode(batch, horizon, num_samples, decoding, generators, token_budget).float().cpu().numpy()
                    out[rows] = restore_samples(values, [scalings[i] for i in rows])
                    if progress is not None:
                        progress(len(rows))
        if quantile_levels is not None:
            direct = DirectQuantileForecast(out, quantile_levels, sizes)
            return direct.with_sorted_quantiles() if sort_quantiles else direct
        return Forecast(out, sizes)

    def _decode(
        self,
        batch: TokenBatch,
        horizon: int,
        num_samples: int,
        decoding: str,
        generators: Sequence[torch.Generator],
        token_budget: int,
    ) -> torch.Tensor:
        """One batch through the family's decoder: samples (B, S, H, V) or quantiles (B, Q, H, V).

        `generators` (one per series) feed the sampling families; Moirai 2.0 draws nothing.
        """
        if self.family == MOIRAI_2:
            return decode_quantiles(self.model, batch, horizon, token_budget)
        if self.family == MOIRAI_1:
            return decode_one_pass(self.model, batch, horizon, num_samples, generators, token_budget)
        if decoding == "cached":
            return decode_cached(self.model, batch, horizon, num_samples, generators)
        return decode_exact(self.model, batch, horizon, num_samples, generators, token_budget)

    def predict_dataset(self, dataset: "SeriesDataset", horizon: int, **options) -> Forecast | DirectQuantileForecast:
        """Forecast every series of a loaded dataset (see `moirai_cli.data.load_dataset`), covariates included."""
        records = dataset.series
        layout = dataset.layout
        return self.predict(
            [r.target for r in records],
            horizon,
            item_ids=[r.item_id for r in records],
            past_covariates=[r.past_covariates for r in records] if layout.past_covariates else None,
            known_covariates=[r.known_covariates for r in records] if layout.known_covariates else None,
            **options,
        )

    def predict_df(self, df: pd.DataFrame, horizon: int, *, future_df: pd.DataFrame | None = None, **options) -> pd.DataFrame:
        """Forecast a pandas frame (long, wide or single series) into a long frame of mean and quantiles.

        `options` are those of `ForecastJob.build` for reading and predicting (id_column, target, freq,
        past_covariates, known_covariates, dayfirst, ..., context_length, num_samples, quantile_levels,
        seed, ...); `future_df` holds the known covariates over the horizon. The table is read and
        forecast exactly as the command line does (the same procedure, `forecast_chunk`); what it warns
        about comes as Python warnings.
        """
        from moirai_cli.data import check_output_columns, load_dataset
        from moirai_cli.forecasting.procedure import FORECAST, forecast_chunk, report_to_python
        from moirai_cli.runtime import use_threads

        loading = sorted(set(options) & {f.name for f in dataclasses.fields(ModelSpec)})
        if loading:
            raise TypeError(f"predict_df: {loading[0]!r} is an option of loading the model; give it to from_pretrained")
        job = ForecastJob.build(horizon, future=future_df, **options)
        dataset = load_dataset(df, future=job.read.future, horizon=horizon, **job.read.table)
        check_output_columns(dataset, job.predict.quantile_levels)  # before the model runs
        if job.predict.threads is not None:
            use_threads(job.predict.threads)
        result = forecast_chunk(self, dataset, job)
        report_to_python(result, dataset.source)
        return result.tables[FORECAST]

    def fit(self, df: pd.DataFrame, horizon: int, **options) -> "MoiraiForecaster":
        """A new forecaster fine-tuned on `df` for forecasts of `horizon` steps, with each family's own loss.

        `df` is read as `predict_df` reads it; `options` are its reading options and the fine-tuning
        settings (`moirai_cli.training.FinetuneSettings`: steps, learning_rate, mode, lora_rank, ...),
        plus `output_dir` to also write the tuned checkpoint. This forecaster is left as it is.
        """
        from moirai_cli.training import fit  # the training layer, above this one: its entry point from here

        return fit(self, df, horizon, **options)

    def _batches(
        self, rows, targets, past, known, horizon, context_length, size, batch_size, holdout=False
    ) -> Iterator[tuple[np.ndarray, TokenBatch]]:
        """The series `rows` packed with patch size `size`, collated on the device in batches of up to `batch_size`.

        A batch only holds series with the same number of tokens: no row is padded, so each
        series is computed exactly as it would be alone (see `moirai_cli.model.layers.rowwise`).
        With `holdout`, each series' last `horizon` values become the scored future, so its
        known covariates stop where the target does.
        """
        pending: dict[int, list[tuple[int, object]]] = {}
        for i in rows:
            packed = pack_series(
                targets[i], horizon, context_length, size, self.model.config.max_patch_size,
                (known[i][: len(targets[i])] if holdout else known[i]) if known else None,
                past[i] if past else None, holdout=holdout, causal_mean_target=self.procedure.causal_mean_target,
            )
            group = pending.setdefault(len(packed.tokens["sample_id"]), [])
            group.append((i, packed))
            if len(group) == batch_size:
                yield self._collated(group, size)
                group.clear()
        for group in pending.values():
            if group:
                yield self._collated(group, size)

    def _collated(self, group: list[tuple[int, object]], size: int) -> tuple[np.ndarray, TokenBatch]:
        """(the group's series indices, their tokens collated on the device)."""
        return np.array([i for i, _ in group]), collate([packed for _, packed in group], size, self.device)

    def _check_inputs(self, target, horizon, past_covariates, known_covariates, context_length, num_samples, batch_size):
        """Validate shapes, values and options; return float64 (T, K) arrays."""
        check_at_least_one(("horizon", horizon))
        if context_length < 1 or num_samples < 1 or batch_size < 1:
            raise InputError("context_length, num_samples and batch_size must be at least 1")
        targets = [as_2d(t, "target", i) for i, t in enumerate(target)]
        if not targets:
            raise InputError("no series to forecast")
        widths = {t.shape[1] for t in targets}
        if len(widths) > 1:
            raise InputError(f"all series must have the same number of target variates, got {sorted(widths)}")
        for i, t in enumerate(targets):
            if len(t) == 0:
                raise InputError(f"series {i} is empty")
        past = known = None
        if past_covariates is not None:
            past = [as_2d(c, "past covariates", i) for i, c in enumerate(past_covariates)]
            for i, (t, c) in enumerate(zip(targets, past)):
                if len(c) != len(t):
                    raise InputError(f"past covariates of series {i} have {len(c)} rows, the target {len(t)}")
        if known_covariates is not None:
            known = [as_2d(c, "known covariates", i) for i, c in enumerate(known_covariates)]
            for i, (t, c) in enumerate(zip(targets, known)):
                if len(c) != len(t) + horizon:
                    raise InputError(
                        f"known covariates of series {i} have {len(c)} rows; they need the target's {len(t)} plus the horizon {horizon}"
                    )
        for name, covariates in (("past", past), ("known", known)):
            if covariates is not None and (len(covariates) != len(targets) or len({c.shape[1] for c in covariates}) > 1):
                raise InputError(f"{name} covariates must be given for every series with the same number of columns")
        return targets, past, known

    def _choose_patch_sizes(self, targets, past, known, horizon, context_length, patch_size, batch_size) -> np.ndarray:
        """One patch size per series: the given one, or with 'auto' the best-scoring one."""
        if patch_size != "auto":
            if not str(patch_size).isdigit() or int(patch_size) not in self.patch_sizes:
                raise InputError(f"patch size {patch_size} is not one of this checkpoint's sizes {list(self.patch_sizes)}")
            return np.full(len(targets), int(patch_size))
        if len(self.patch_sizes) == 1:
            return np.full(len(targets), self.patch_sizes[0])
        scores = np.stack([
            self.holdout_nll(targets, past, known, horizon, context_length, size, batch_size) for size in self.patch_sizes
        ])  # (sizes, N)
        return np.asarray(self.patch_sizes)[scores.argmin(axis=0)]

    def holdout_nll(self, targets, past, known, horizon, context_length, size, batch_size) -> np.ndarray:
        """Mean negative log-likelihood per series of its last `horizon` values given what precedes them.

        The score is summed over target variates of the per-variate mean over observed
        values, as Moirai 1.x's reference does to choose a patch size. A series of at most
        `horizon` values is scored too, from a context of nothing but padding, as there.
        """
        scores = np.zeros(len(targets))
        for rows, batch in self._batches(range(len(targets)), targets, past, known, horizon, context_length, size, batch_size, holdout=True):
            tokens = batch.tokens
            positions = batch.future.flatten(1)  # (B, V*F): only the held-out tokens are scored
            distribution = self.model(tokens, positions)  # batch shape (B, V*F, M)
            nll = -distribution.log_prob(gather_rows(tokens.target, positions))
            counted = gather_rows(tokens.observed, positions)  # future tokens are all prediction tokens
            nll = torch.where(counted, nll, 0.0).unflatten(1, batch.future.shape[1:])  # (B, V, F, M)
            count = counted.unflatten(1, batch.future.shape[1:]).sum(dim=(-1, -2))
            per_variate = nll.sum(dim=(-1, -2)) / count.clamp_min(1)  # (B, V)
            scores[rows] = per_variate.sum(-1).double().cpu().numpy()
        return scores
