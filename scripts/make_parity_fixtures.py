"""Regenerate the parity fixtures in tests/fixtures/ with the reference implementation.

Run by hand, never by CI, in the reference's own virtual environment:

    bash scripts/make-reference-venv.sh /tmp/moirai-ref
    /tmp/moirai-ref/bin/python scripts/make_parity_fixtures.py [--family moe moirai-1 moirai-2] [--cases standard leading-gaps]

For each family (all by default) it writes tiny random-initialised checkpoints in the Hub
layout and, for a set of awkward input batches, what the reference computes from them:

- Moirai-MoE (`tiny-moe`, one patch size 16; `tiny-moe-multipatch`, sizes 8/16/32):
  tokens, one-step predictive distribution, multi-step sample quantiles (two seeds), in parity/.
- Moirai 1.x (`tiny-moirai-1`, sizes 8/16/32/64/128): tokens and predictive distribution
  for one fixed patch size, the hold-out loss of every patch size that `patch_size="auto"`
  picks by, and the quantiles of auto-patch forecasts (two seeds), in parity-moirai-1/.
- Moirai 2.0 (`tiny-moirai-2`, patch 16, four patches per pass): tokens and the first
  pass's quantiles at every token, and the forecast quantiles, in parity-moirai-2/.

The leading-gap cases (`--cases leading-gaps`, in parity-leading-gaps/) start from small
files instead, written first: long (with covariates and a future file), wide and
multivariate tables whose series start with missing values. GluonTS's PandasDataset reads
them, as uni2ts's examples do, and each family's tiny checkpoint (read back from its folder,
not rewritten) forecasts them: tokens, and forecast quantiles per series. `--cases
leading-gaps` leaves every other file as it is.

Each family's data come from its own seeded generator, so one family can be rewritten
without touching the others' files. The test suite compares moirai_cli against these
files without the reference installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import einops
import torch
import uni2ts.model.moirai2.forecast as moirai2_forecast
from gluonts.torch.batchify import batchify
from gluonts.transform import TestSplitSampler
from gluonts.transform.split import TFTInstanceSplitter
from uni2ts.distribution import (
    LogNormalOutput,
    MixtureOutput,
    NegativeBinomialOutput,
    NormalFixedScaleOutput,
    StudentTOutput,
)
from uni2ts.model.moirai import MoiraiForecast, MoiraiModule
from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module
from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
QUANTILE_LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
NUM_SAMPLES = 2000


def mixture_output() -> MixtureOutput:
    return MixtureOutput([StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()])


def randomise(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Give every parameter random values (masked regions included): norms near 1, biases and weights of O(1) effect."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
            elif name.startswith("mask_encoding"):
                param.copy_(torch.randn(param.shape, generator=generator))
            else:
                fan_in = param.shape[-1]
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
    return module.eval()


def tiny_module(patch_sizes: tuple[int, ...], d_ff: int, num_layers: int, seed: int) -> MoiraiMoEModule:
    """A small reference network with every tensor randomised (masked regions included)."""
    torch.manual_seed(seed)
    module = MoiraiMoEModule(
        distr_output=mixture_output(),
        d_model=128,
        d_ff=d_ff,
        num_layers=num_layers,
        patch_sizes=patch_sizes,
        max_seq_len=512,
        attn_dropout_p=0.0,
        dropout_p=0.0,
        scaling=True,
    )
    generator = torch.Generator().manual_seed(seed)
    randomise(module, generator)
    with torch.no_grad():
        # The reference leaves the routing centroids uninitialised: fill them.
        module.encoder.centroid.copy_(torch.randn(module.encoder.centroid.shape, generator=generator, dtype=torch.float64))
    return module


def tiny_moirai_1(seed: int) -> MoiraiModule:
    """A small Moirai 1.x network with the published five patch sizes, every tensor randomised."""
    torch.manual_seed(seed)
    module = MoiraiModule(
        distr_output=mixture_output(),
        d_model=64,
        num_layers=2,
        patch_sizes=(8, 16, 32, 64, 128),
        max_seq_len=512,
        attn_dropout_p=0.0,
        dropout_p=0.0,
        scaling=True,
    )
    return randomise(module, torch.Generator().manual_seed(seed))


def tiny_moirai_2(seed: int) -> Moirai2Module:
    """A small Moirai 2.0 network with the published patch size, patches per pass and levels, randomised."""
    torch.manual_seed(seed)
    module = Moirai2Module(
        d_model=128,
        d_ff=128,
        num_layers=2,
        patch_size=16,
        max_seq_len=512,
        attn_dropout_p=0.0,
        dropout_p=0.0,
        scaling=True,
        num_predict_token=4,
        quantile_levels=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    )
    return randomise(module, torch.Generator().manual_seed(seed))


def make_series(rng: np.random.Generator, length: int, level: float, gaps: list[slice]) -> np.ndarray:
    """A seasonal series with NaN gaps."""
    t = np.arange(length)
    values = level + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.7, size=length) + 0.02 * t
    for gap in gaps:
        values[gap] = np.nan
    return values.astype(np.float32)


MOE_HORIZONS = {"univariate_covariates": 40, "multivariate_covariates": 40, "univariate_single_step": 16, "univariate_plain": 45}


def make_cases(rng: np.random.Generator, horizons: dict[str, int] = MOE_HORIZONS) -> dict[str, dict]:
    """Input batches: each a list of entries plus the forecast settings (cases without a horizon are left out)."""
    cases = {}
    horizon = horizons.get("univariate_covariates", 40)
    univariate = []
    for length, gaps in [
        (150, [slice(0, 9), slice(60, 63), slice(147, 150)]),  # leading, inner, trailing gaps
        (37, [slice(5, 7)]),  # shorter than the context
        (100, [slice(40, 41)]),
        (5, []),
    ]:
        univariate.append(
            {
                "target": make_series(rng, length, 10.0 + length / 10, gaps),
                "feat_dynamic_real": rng.normal(size=(2, length + horizon)).astype(np.float32),
                "past_feat_dynamic_real": rng.normal(size=(1, length)).astype(np.float32),
            }
        )
    univariate[0]["feat_dynamic_real"][0, 10:13] = np.nan
    univariate[0]["past_feat_dynamic_real"][0, 100:104] = np.nan
    cases["univariate_covariates"] = dict(entries=univariate, context_length=100, horizon=horizon, target_dim=1, known=2, past=1)

    horizon = horizons.get("multivariate_covariates", 40)
    multivariate = []
    for length in (90, 30):
        target = np.stack([make_series(rng, length, 5.0, [slice(3, 6)]), make_series(rng, length, -20.0, [slice(length - 2, length)])])
        multivariate.append(
            {
                "target": target,
                "feat_dynamic_real": rng.normal(size=(1, length + horizon)).astype(np.float32),
                "past_feat_dynamic_real": rng.normal(size=(2, length)).astype(np.float32),
            }
        )
    cases["multivariate_covariates"] = dict(entries=multivariate, context_length=70, horizon=horizon, target_dim=2, known=1, past=2)

    plain = [{"target": make_series(rng, n, 50.0, [slice(20, 25)] if n > 30 else [])} for n in (64, 200, 23)]
    for name in ("univariate_single_step", "univariate_plain"):
        if name in horizons:
            cases[name] = dict(entries=plain, context_length=64, horizon=horizons[name], target_dim=1, known=0, past=0)
    return {name: case for name, case in cases.items() if name in horizons}


def reference_batch(forecast: MoiraiMoEForecast, case: dict) -> dict[str, torch.Tensor]:
    """Run the reference's own GluonTS input pipeline (imputation, splitting, padding)."""
    hp = forecast.hparams
    ts_fields = ["feat_dynamic_real", "observed_feat_dynamic_real"] if hp.feat_dynamic_real_dim else []
    past_fields = ["past_feat_dynamic_real", "past_observed_feat_dynamic_real"] if hp.past_feat_dynamic_real_dim else []
    splitter = TFTInstanceSplitter(
        instance_sampler=TestSplitSampler(),
        past_length=forecast.past_length,
        future_length=hp.prediction_length,
        observed_value_field="observed_target",
        time_series_fields=ts_fields,
        past_time_series_fields=past_fields,
    )
    transform = forecast.get_default_transform() + splitter
    dataset = [dict(entry, start=pd.Period("2020-01-01", freq="h"), item_id=str(i)) for i, entry in enumerate(case["entries"])]
    dataset = [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()} for entry in dataset]
    instances = list(transform.apply(dataset, is_train=False))
    batch = batchify(instances)
    return {name: batch[name] for name in forecast.prediction_input_names}


def converted_tokens(forecast, patch_size: int, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The reference's tokens of pass 1 (target, observed, sample_id, time_id, variate_id, prediction_mask)."""
    return forecast._convert(
        patch_size,
        inputs["past_target"],
        inputs["past_observed_target"],
        inputs["past_is_pad"],
        feat_dynamic_real=inputs.get("feat_dynamic_real"),
        observed_feat_dynamic_real=inputs.get("observed_feat_dynamic_real"),
        past_feat_dynamic_real=inputs.get("past_feat_dynamic_real"),
        past_observed_feat_dynamic_real=inputs.get("past_observed_feat_dynamic_real"),
    )


def token_arrays(converted: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    target, observed, sample_id, time_id, variate_id, prediction_mask = converted
    return {
        "target": target.numpy(),
        "observed": observed.bool().numpy(),
        "sample_id": sample_id.numpy(),
        "time_id": time_id.numpy(),
        "variate_id": variate_id.numpy(),
        "prediction_mask": prediction_mask.numpy(),
    }


def one_step(forecast: MoiraiMoEForecast, inputs: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tokens of pass 1 and the full predictive distribution at every token (MoE and 1.x, fixed patch size)."""
    hp = forecast.hparams
    converted = forecast._convert(
        hp.patch_size,
        inputs["past_target"],
        inputs["past_observed_target"],
        inputs["past_is_pad"],
        feat_dynamic_real=inputs.get("feat_dynamic_real"),
        observed_feat_dynamic_real=inputs.get("observed_feat_dynamic_real"),
        past_feat_dynamic_real=inputs.get("past_feat_dynamic_real"),
        past_observed_feat_dynamic_real=inputs.get("past_observed_feat_dynamic_real"),
    )
    target, observed, sample_id, time_id, variate_id, prediction_mask = converted
    patch_size = torch.ones_like(time_id) * hp.patch_size
    with torch.no_grad():
        distr = forecast.module(target, observed, sample_id, time_id, variate_id, prediction_mask, patch_size)
    mixture = distr.base_dist
    student, normal, negbin, lognormal = mixture.components
    values = torch.as_tensor(rng.normal(scale=15.0, size=target.shape), dtype=torch.float32) + distr.loc
    values[..., ::5] = 0.0
    values[..., 1::7] = torch.round(values[..., 1::7].abs())
    with torch.no_grad():
        log_prob = distr.log_prob(values)
    return {
        "target": target.numpy(),
        "observed": observed.bool().numpy(),
        "sample_id": sample_id.numpy(),
        "time_id": time_id.numpy(),
        "variate_id": variate_id.numpy(),
        "prediction_mask": prediction_mask.numpy(),
        "log_weights": mixture.weights.logits.numpy(),
        "student_df": student.df.numpy(),
        "student_loc": student.loc.numpy(),
        "student_scale": student.scale.numpy(),
        "normal_loc": normal.loc.numpy(),
        "negbin_total_count": negbin.total_count.numpy(),
        "negbin_logits": negbin.logits.numpy(),
        "lognormal_loc": lognormal.loc.numpy(),
        "lognormal_scale": lognormal.scale.numpy(),
        "loc": distr.loc.numpy(),
        "scale": distr.scale.numpy(),
        "values": values.numpy(),
        "log_prob": log_prob.numpy(),
        "mean": distr.mean.numpy(),
    }


def sample_quantiles(forecast: MoiraiMoEForecast, inputs: dict[str, torch.Tensor], seed: int) -> np.ndarray:
    """Quantiles (N, Q, H, V) of NUM_SAMPLES reference sample paths."""
    torch.manual_seed(seed)
    with torch.no_grad():
        samples = forecast(**inputs, num_samples=NUM_SAMPLES).numpy()  # (N, S, H[, V])
    if samples.ndim == 3:
        samples = samples[..., None]
    return np.quantile(samples, QUANTILE_LEVELS, axis=1).transpose(1, 0, 2, 3)


def save_case(path: Path, case: dict, arrays: dict[str, np.ndarray]) -> None:
    """One .npz per case: raw inputs (as object-free arrays) and reference outputs."""
    out = dict(arrays)
    out["context_length"] = np.array(case["context_length"])
    out["horizon"] = np.array(case["horizon"])
    for i, entry in enumerate(case["entries"]):
        target = entry["target"]
        out[f"input_{i}_target"] = target.T if target.ndim == 2 else target
        if "feat_dynamic_real" in entry:
            out[f"input_{i}_known"] = entry["feat_dynamic_real"].T
        if "past_feat_dynamic_real" in entry:
            out[f"input_{i}_past"] = entry["past_feat_dynamic_real"].T
    out["num_series"] = np.array(len(case["entries"]))
    np.savez_compressed(path, **out)


def write_checkpoint(module: torch.nn.Module, name: str) -> None:
    """The module in the Hub layout (config.json + model.safetensors), as save_pretrained writes it."""
    module.save_pretrained(FIXTURES / name)
    (FIXTURES / name / "README.md").unlink(missing_ok=True)  # the Hub mixin's model card template


def write_readme(folder: Path, summary: dict[str, dict], what: str) -> None:
    (folder / "README.md").write_text(
        "Written by scripts/make_parity_fixtures.py with uni2ts 2.0.0 (torch "
        f"{torch.__version__}). Do not edit by hand.\n\n{what}:\n\n"
        + "\n".join(f"- {k}: " + ", ".join(f"{name} {value}" for name, value in v.items()) for k, v in summary.items())
        + "\n"
    )


def make_moe() -> None:
    rng = np.random.default_rng(20261126)
    checkpoints = {
        "tiny-moe": tiny_module((16,), d_ff=8, num_layers=2, seed=1),
        "tiny-moe-multipatch": tiny_module((8, 16, 32), d_ff=4, num_layers=1, seed=2),
    }
    for name, module in checkpoints.items():
        write_checkpoint(module, name)
    cases = make_cases(rng)
    summary = {}
    for checkpoint, module in checkpoints.items():
        for case_name, case in cases.items():
            if checkpoint == "tiny-moe-multipatch" and case_name not in ("univariate_covariates", "univariate_plain"):
                continue
            forecast = MoiraiMoEForecast(
                prediction_length=case["horizon"],
                target_dim=case["target_dim"],
                feat_dynamic_real_dim=case["known"],
                past_feat_dynamic_real_dim=case["past"],
                context_length=case["context_length"],
                module=module,
                patch_size=16,
                num_samples=NUM_SAMPLES,
            ).eval()
            inputs = reference_batch(forecast, case)
            arrays = one_step(forecast, inputs, rng)
            arrays["quantile_levels"] = QUANTILE_LEVELS
            arrays["quantiles_seed0"] = sample_quantiles(forecast, inputs, seed=0)
            arrays["quantiles_seed1"] = sample_quantiles(forecast, inputs, seed=1)
            path = FIXTURES / "parity" / f"{checkpoint}__{case_name}.npz"
            path.parent.mkdir(exist_ok=True)
            save_case(path, case, arrays)
            gap = np.abs(arrays["quantiles_seed0"] - arrays["quantiles_seed1"])
            summary[path.name] = {"mean": f"{gap.mean():.4f}", "max": f"{gap.max():.4f}"}
            print(path.name, summary[path.name])
    write_readme(FIXTURES / "parity", summary, "Reference seed-to-seed quantile gaps")


# Moirai 1.x: horizon per case, and the fixed patch size whose tokens and distribution are stored.
MOIRAI_1_HORIZONS = {"univariate_covariates": 40, "multivariate_covariates": 40, "univariate_plain": 45}
MOIRAI_1_FIXED_SIZE = {"univariate_covariates": 8, "multivariate_covariates": 32, "univariate_plain": 128}


def moirai_1_wrapper(module: MoiraiModule, case: dict, patch_size: int | str) -> MoiraiForecast:
    return MoiraiForecast(
        prediction_length=case["horizon"],
        target_dim=case["target_dim"],
        feat_dynamic_real_dim=case["known"],
        past_feat_dynamic_real_dim=case["past"],
        context_length=case["context_length"],
        module=module,
        patch_size=patch_size,
        num_samples=NUM_SAMPLES,
    ).eval()


def holdout_losses(forecast: MoiraiForecast, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """(patch sizes, N): the losses `patch_size="auto"` compares, called as the reference's forward calls them."""
    context, window = forecast.hparams.context_length, forecast.past_length

    def head(name: str, length: int) -> torch.Tensor | None:
        return None if inputs.get(name) is None else inputs[name][..., :length, :]

    losses = []
    with torch.no_grad():
        for size in forecast.module.patch_sizes:
            losses.append(
                forecast._val_loss(
                    patch_size=size,
                    target=head("past_target", window),
                    observed_target=head("past_observed_target", window),
                    is_pad=inputs["past_is_pad"][..., :window],
                    feat_dynamic_real=head("feat_dynamic_real", window),
                    observed_feat_dynamic_real=head("observed_feat_dynamic_real", window),
                    past_feat_dynamic_real=head("past_feat_dynamic_real", context),
                    past_observed_feat_dynamic_real=head("past_observed_feat_dynamic_real", context),
                )
            )
    return torch.stack(losses).numpy()


def make_moirai_1() -> None:
    rng = np.random.default_rng(20261127)
    module = tiny_moirai_1(seed=3)
    write_checkpoint(module, "tiny-moirai-1")
    folder = FIXTURES / "parity-moirai-1"
    folder.mkdir(exist_ok=True)
    summary = {}
    for case_name, case in make_cases(rng, MOIRAI_1_HORIZONS).items():
        fixed = moirai_1_wrapper(module, case, MOIRAI_1_FIXED_SIZE[case_name])
        arrays = one_step(fixed, reference_batch(fixed, case), rng)
        arrays["patch_size"] = np.array(MOIRAI_1_FIXED_SIZE[case_name])
        auto = moirai_1_wrapper(module, case, "auto")
        inputs = reference_batch(auto, case)
        arrays["patch_sizes"] = np.array(module.patch_sizes)
        arrays["holdout_loss"] = holdout_losses(auto, inputs)
        arrays["quantile_levels"] = QUANTILE_LEVELS
        arrays["quantiles_seed0"] = sample_quantiles(auto, inputs, seed=0)
        arrays["quantiles_seed1"] = sample_quantiles(auto, inputs, seed=1)
        path = folder / f"tiny-moirai-1__{case_name}.npz"
        save_case(path, case, arrays)
        gap = np.abs(arrays["quantiles_seed0"] - arrays["quantiles_seed1"])
        chosen = np.asarray(module.patch_sizes)[arrays["holdout_loss"].argmin(axis=0)]
        summary[path.name] = {"auto sizes": chosen.tolist(), "seed gap mean": f"{gap.mean():.4f}", "max": f"{gap.max():.4f}"}
        print(path.name, summary[path.name])
    write_readme(folder, summary, "Patch sizes the reference's auto rule picks, and its seed-to-seed quantile gaps")


# Moirai 2.0 (16 values a patch, 4 patches a pass): one pass, exactly one pass, two and three passes.
MOIRAI_2_HORIZONS = {"univariate_covariates": 40, "univariate_single_step": 64, "multivariate_covariates": 100, "univariate_plain": 150}


# uni2ts 2.0.0's Moirai2Forecast fails on a multivariate target whose horizon needs more than
# one pass: its first feedback step names the axis of V * num_predict_token tokens with
# length num_predict_token. Every other step, and the single-pass path, handle V variates.
FIRST_FEEDBACK_PATTERN = "... predict_token num_quantiles patch_size -> ... num_quantiles predict_token patch_size"


@contextlib.contextmanager
def multivariate_feedback_allowed():
    """Let einops infer that axis's length (V * num_predict_token) instead of checking it; nothing else changes."""

    def rearrange(tensor, pattern, **axes):
        if pattern == FIRST_FEEDBACK_PATTERN:
            axes.pop("predict_token", None)
        return einops.rearrange(tensor, pattern, **axes)

    saved = moirai2_forecast.rearrange
    moirai2_forecast.rearrange = rearrange
    try:
        yield
    finally:
        moirai2_forecast.rearrange = saved


def make_moirai_2() -> None:
    rng = np.random.default_rng(20261128)
    module = tiny_moirai_2(seed=4)
    write_checkpoint(module, "tiny-moirai-2")
    folder = FIXTURES / "parity-moirai-2"
    folder.mkdir(exist_ok=True)
    summary = {}
    for case_name, case in make_cases(rng, MOIRAI_2_HORIZONS).items():
        forecast = Moirai2Forecast(
            prediction_length=case["horizon"],
            target_dim=case["target_dim"],
            feat_dynamic_real_dim=case["known"],
            past_feat_dynamic_real_dim=case["past"],
            context_length=case["context_length"],
            module=module,
        ).eval()
        inputs = reference_batch(forecast, case)
        converted = converted_tokens(forecast, module.patch_size, inputs)
        arrays = token_arrays(converted)
        with torch.no_grad(), multivariate_feedback_allowed():
            arrays["first_pass"] = module(*converted, training_mode=False).numpy()  # (B, L, NPT * Q * P)
            quantiles = forecast(**inputs).numpy()  # (N, Q, H[, V])
        arrays["quantiles"] = quantiles[..., None] if quantiles.ndim == 3 else quantiles
        arrays["quantile_levels"] = np.asarray(module.quantile_levels)
        path = folder / f"tiny-moirai-2__{case_name}.npz"
        save_case(path, case, arrays)
        passes = 1 + max(0, -(-(-(-case["horizon"] // 16) - 4) // 4))
        summary[path.name] = {"horizon": case["horizon"], "passes": passes}
        print(path.name, summary[path.name])
    write_readme(
        folder,
        summary,
        "Cases (16 values a patch, 4 patches a pass). uni2ts 2.0.0 raises a shape error on a multivariate "
        "target that needs more than one pass; multivariate_covariates was written with that one shape check "
        "relaxed (scripts/make_parity_fixtures.py, multivariate_feedback_allowed)",
    )


# Series that start with missing values, read from tables the way a uni2ts user reads them (GluonTS's
# PandasDataset), written to parity-leading-gaps/ with the tables themselves. Context 64, patches of 16:
# a series' patches end at its last row, so a leading gap that ends (length - gap) rows before the end
# covers whole patches of the context when that is a multiple of 16, and ends mid-patch otherwise.
LEADING_GAPS = FIXTURES / "parity-leading-gaps"
GAP_CONTEXT = 64
GAP_PATCH = 16  # the patch size whose tokens are stored (Moirai-MoE's default, Moirai 2.0's only one)
# name: (rows, leading missing rows, inner gaps); every series starts on 2021-01-01.
LONG_SERIES = {
    "full": (120, 0, []),
    "before_context": (120, 10, []),  # shorter than the context, all of it before the context window
    "mid_patch": (80, 24, []),  # shorter than the context, ends 8 rows into the context's first patch
    "whole_patches": (100, 52, []),  # shorter than the context, covers the context's first patch exactly
    "as_long_as_context": (90, 64, []),
    "longer_than_context": (150, 100, [slice(120, 123)]),  # an inner gap whose causal mean the leading rows change
    "far_before_context": (200, 90, [slice(170, 175)]),  # outside the context, but in the causal means
    "short_series": (40, 20, []),  # a series shorter than the context: padding, then the gap
    "nearly_all_missing": (70, 66, []),  # four observed values, all in the last patch
    "nothing_observed": (30, 30, []),  # skipped by moirai-cli (the reference forecasts it from zeros)
}
WIDE_ROWS = 120
WIDE_SERIES = {
    "w_full": (0, []),
    "w_whole_patch": (72, []),  # longer than the context; covers its first patch exactly
    "w_mid_patch": (61, []),
    "w_before_context": (40, [slice(100, 103)]),
    "w_late": (110, []),
    "w_empty": (WIDE_ROWS, []),  # skipped by moirai-cli
}
# name: (rows, leading missing rows of t1, of t2)
MULTIVARIATE_SERIES = {
    "m_full": (90, 0, 0),
    "m_both": (100, 70, 70),  # rows where neither variate is observed
    "m_staggered": (90, 30, 50),
    "m_second_only": (50, 0, 20),  # shorter than the context
    "m_full_short": (60, 0, 0),
}
GAP_TABLES = {
    "long": dict(table="long.csv", future="long_future.csv", target=["y"], past_covariates=["rain"], known_covariates=["promo"]),
    "wide": dict(table="wide.csv", layout="wide", target=list(WIDE_SERIES)),
    "multivariate": dict(table="multivariate.csv", target=["t1", "t2"]),
}
GAP_HORIZONS = {  # family: table: horizon (Moirai 2.0: two passes for long; one for multivariate, see above)
    "moe": {"long": 20, "wide": 30, "multivariate": 16},
    "moirai-1": {"long": 20, "wide": 30, "multivariate": 16},
    "moirai-2": {"long": 80, "wide": 30, "multivariate": 20},
}
GAP_FUTURE_ROWS = 80  # rows of known covariates after each series in the future file (the longest horizon)


def daily(start: int, rows: int) -> list[str]:
    """`rows` dates, one a day, from `start` days after 2021-01-01."""
    return list(pd.date_range("2021-01-01", periods=start + rows, freq="D")[start:].strftime("%Y-%m-%d"))


def rounded(values: np.ndarray) -> np.ndarray:
    """Three decimals, so that the CSV text is short and both readers read the same numbers."""
    return np.round(np.asarray(values, dtype=np.float64), 3)


def write_gap_tables(rng: np.random.Generator) -> None:
    """The tables every family's leading-gap cases read: long (with covariates and a future file), wide, multivariate."""
    LEADING_GAPS.mkdir(exist_ok=True)
    history, future = [], []
    for name, (rows, lead, gaps) in LONG_SERIES.items():
        y = rounded(make_series(rng, rows, 20.0 + rows / 20, gaps))
        y[:lead] = np.nan
        rain = rounded(rng.normal(size=rows))
        rain[rows // 2 : rows // 2 + 2] = np.nan
        promo = rng.integers(0, 2, size=rows + GAP_FUTURE_ROWS)
        history.append(pd.DataFrame({"item_id": name, "timestamp": daily(0, rows), "y": y, "rain": rain, "promo": promo[:rows]}))
        future.append(pd.DataFrame({"item_id": name, "timestamp": daily(rows, GAP_FUTURE_ROWS), "promo": promo[rows:]}))
    pd.concat(history).to_csv(LEADING_GAPS / "long.csv", index=False)
    pd.concat(future).to_csv(LEADING_GAPS / "long_future.csv", index=False)
    wide = {"timestamp": daily(0, WIDE_ROWS)}
    for name, (lead, gaps) in WIDE_SERIES.items():
        wide[name] = rounded(make_series(rng, WIDE_ROWS, 30.0, gaps))
        wide[name][:lead] = np.nan
    pd.DataFrame(wide).to_csv(LEADING_GAPS / "wide.csv", index=False)
    parts = []
    for name, (rows, lead_1, lead_2) in MULTIVARIATE_SERIES.items():
        t1, t2 = rounded(make_series(rng, rows, 5.0, [])), rounded(make_series(rng, rows, -20.0, [slice(rows - 3, rows - 1)]))
        t1[:lead_1], t2[:lead_2] = np.nan, np.nan
        parts.append(pd.DataFrame({"item_id": name, "timestamp": daily(0, rows), "t1": t1, "t2": t2}))
    pd.concat(parts).to_csv(LEADING_GAPS / "multivariate.csv", index=False)
    (LEADING_GAPS / "cases.json").write_text(json.dumps(GAP_TABLES, indent=2) + "\n")


def gap_case(table: str, horizon: int) -> dict:
    """A table read by GluonTS's PandasDataset, as uni2ts's examples read one: entries, ids and wrapper settings."""
    from gluonts.dataset.pandas import PandasDataset

    spec = GAP_TABLES[table]
    frame = pd.read_csv(LEADING_GAPS / spec["table"], float_precision="round_trip")
    known, past = spec.get("known_covariates", []), spec.get("past_covariates", [])
    if table == "wide":
        frame.index = pd.to_datetime(frame.pop("timestamp"))
        dataset = PandasDataset(dict(frame), freq="D")
    else:
        if known:  # the horizon's rows of the future file, with no target: PandasDataset cuts them off the target
            ahead = pd.read_csv(LEADING_GAPS / spec["future"], float_precision="round_trip").groupby("item_id").head(horizon)
            frame = pd.concat([frame, ahead]).sort_values(["item_id", "timestamp"], kind="stable")
        dataset = PandasDataset.from_long_dataframe(
            frame, item_id="item_id", timestamp="timestamp", target=spec["target"] if len(spec["target"]) > 1 else spec["target"][0],
            feat_dynamic_real=known or None, past_feat_dynamic_real=past or None, future_length=horizon if known else 0, freq="D",
        )
    entries = list(dataset)
    target_dim = 1 if table == "wide" else len(spec["target"])  # a wide table's columns are univariate series
    return dict(
        entries=entries, item_ids=np.array([str(e["item_id"]) for e in entries]), context_length=GAP_CONTEXT,
        horizon=horizon, target_dim=target_dim, known=len(known), past=len(past),
    )


def save_gap_case(checkpoint: str, table: str, case: dict, arrays: dict[str, np.ndarray]) -> Path:
    """One .npz per checkpoint and table: the reference's outputs, per series in `item_ids` order."""
    out = dict(arrays, item_ids=case["item_ids"], context_length=np.array(case["context_length"]), horizon=np.array(case["horizon"]))
    path = LEADING_GAPS / f"{checkpoint}__{table}.npz"
    np.savez_compressed(path, **out)
    return path


def gap_summary(path: Path) -> dict[str, object]:
    """A leading-gap fixture's horizon and series, and the reference's seed-to-seed quantile gaps when it samples."""
    data = np.load(path)
    summary: dict[str, object] = {"horizon": int(data["horizon"]), "series": len(data["item_ids"])}
    if "quantiles_seed0" in data:
        gap = np.abs(data["quantiles_seed0"] - data["quantiles_seed1"])
        summary.update({"seed gap mean": f"{gap.mean():.4f}", "max": f"{gap.max():.4f}"})
    return summary


def sampled_gap_outputs(forecast, case: dict) -> dict[str, np.ndarray]:
    """Quantiles of NUM_SAMPLES reference sample paths, two seeds."""
    inputs = reference_batch(forecast, case)
    return {
        "quantile_levels": QUANTILE_LEVELS,
        "quantiles_seed0": sample_quantiles(forecast, inputs, seed=0),
        "quantiles_seed1": sample_quantiles(forecast, inputs, seed=1),
    }


def moe_gap_outputs(case: dict) -> tuple[str, dict[str, np.ndarray]]:
    """Moirai-MoE (tiny-moe, patch size 16): tokens and sample quantiles."""
    module = MoiraiMoEModule.from_pretrained(FIXTURES / "tiny-moe").eval()
    forecast = MoiraiMoEForecast(
        prediction_length=case["horizon"], target_dim=case["target_dim"], feat_dynamic_real_dim=case["known"],
        past_feat_dynamic_real_dim=case["past"], context_length=case["context_length"], module=module,
        patch_size=GAP_PATCH, num_samples=NUM_SAMPLES,
    ).eval()
    arrays = token_arrays(converted_tokens(forecast, GAP_PATCH, reference_batch(forecast, case)))
    return "tiny-moe", {**arrays, **sampled_gap_outputs(forecast, case)}


def moirai_1_gap_outputs(case: dict) -> tuple[str, dict[str, np.ndarray]]:
    """Moirai 1.x (tiny-moirai-1): tokens at patch size 16; with auto sizes, every size's hold-out loss and sample quantiles."""
    module = MoiraiModule.from_pretrained(FIXTURES / "tiny-moirai-1").eval()
    fixed = moirai_1_wrapper(module, case, GAP_PATCH)
    arrays = token_arrays(converted_tokens(fixed, GAP_PATCH, reference_batch(fixed, case)))
    auto = moirai_1_wrapper(module, case, "auto")
    arrays["patch_sizes"] = np.array(module.patch_sizes)
    arrays["holdout_loss"] = holdout_losses(auto, reference_batch(auto, case))
    return "tiny-moirai-1", {**arrays, **sampled_gap_outputs(auto, case)}


def moirai_2_gap_outputs(case: dict) -> tuple[str, dict[str, np.ndarray]]:
    """Moirai 2.0 (tiny-moirai-2): tokens and forecast quantiles."""
    module = Moirai2Module.from_pretrained(FIXTURES / "tiny-moirai-2").eval()
    forecast = Moirai2Forecast(
        prediction_length=case["horizon"], target_dim=case["target_dim"], feat_dynamic_real_dim=case["known"],
        past_feat_dynamic_real_dim=case["past"], context_length=case["context_length"], module=module,
    ).eval()
    inputs = reference_batch(forecast, case)
    arrays = token_arrays(converted_tokens(forecast, GAP_PATCH, inputs))
    with torch.no_grad():
        quantiles = forecast(**inputs).numpy()  # (N, Q, H[, V])
    arrays["quantiles"] = quantiles[..., None] if quantiles.ndim == 3 else quantiles
    arrays["quantile_levels"] = np.asarray(module.quantile_levels)
    return "tiny-moirai-2", arrays


GAP_FAMILIES = {"moe": moe_gap_outputs, "moirai-1": moirai_1_gap_outputs, "moirai-2": moirai_2_gap_outputs}


def make_leading_gaps(families: list[str]) -> None:
    """Leading-gap cases of the given families, from tables written first (with their own seeded generator)."""
    write_gap_tables(np.random.default_rng(20261129))
    for family in families:
        for table, horizon in GAP_HORIZONS[family].items():
            case = gap_case(table, horizon)
            checkpoint, arrays = GAP_FAMILIES[family](case)
            path = save_gap_case(checkpoint, table, case, arrays)
            print(path.name, gap_summary(path))
    write_readme(
        LEADING_GAPS,
        {path.name: gap_summary(path) for path in sorted(LEADING_GAPS.glob("*.npz"))},
        "Series that start with missing values (long.csv with long_future.csv, wide.csv, multivariate.csv; "
        "cases.json says how each is read), read by GluonTS's PandasDataset and forecast by uni2ts with "
        f"context {GAP_CONTEXT}: tokens at patch size {GAP_PATCH} and forecast quantiles (Moirai-MoE and 1.x: "
        "of 2000 sample paths, two seeds; 1.x also the hold-out loss of every patch size)",
    )


FAMILIES = {"moe": make_moe, "moirai-1": make_moirai_1, "moirai-2": make_moirai_2}
CASE_SETS = ("standard", "leading-gaps")


# --- Fine-tuning Moirai 1.x: one training batch, its loss and every parameter's gradient ---------
# Reads tests/fixtures/tiny-moirai-1 as written (family moirai-1 rewrites it from a fixed seed, the
# same weights), builds one batch with uni2ts's own fine-tuning transforms and collation, and records
# what `MoiraiFinetune.training_step` computes on it. Windows: (variates, length, window index);
# the crop of window w starts at row w (FinetunePatchCrop, distance 1).
FINETUNE_CONTEXT, FINETUNE_HORIZON, FINETUNE_PATCH = 50, 20, 16
FINETUNE_WINDOWS = ((1, 120, 3), (2, 100, 0), (1, 90, 11), (1, 75, 2))


def finetune_entries(rng: np.random.Generator) -> list[dict]:
    """Raw data entries as uni2ts's fine-tuning dataset yields them: a list of variates, gaps in context and horizon."""
    entries = []
    for index, (variates, length, window) in enumerate(FINETUNE_WINDOWS):
        t = np.arange(length)
        target = [
            (10 + 4 * variate + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.8, size=length)).astype(np.float32)
            for variate in range(variates)
        ]
        if index == 0:
            target[0][20:26] = np.nan  # inside the context
        if index == 2:
            target[0][window + FINETUNE_CONTEXT + 3 : window + FINETUNE_CONTEXT + 8] = np.nan  # inside the horizon
        entries.append({"target": target, "freq": "H", "window": window})
    return entries


def make_finetune_moirai_1() -> None:
    from uni2ts.data.loader import PadCollate
    from uni2ts.model.moirai.finetune import MoiraiFinetune

    module = MoiraiModule.from_pretrained(str(FIXTURES / "tiny-moirai-1"))
    finetune = MoiraiFinetune(
        min_patches=2, min_mask_ratio=0.15, max_mask_ratio=0.5, max_dim=8, num_training_steps=1, num_warmup_steps=0,
        module=module, context_length=FINETUNE_CONTEXT, prediction_length=FINETUNE_HORIZON, patch_size=FINETUNE_PATCH,
    )
    transform = finetune.train_transform_map["data"](
        distance=1, prediction_length=FINETUNE_HORIZON, context_length=FINETUNE_CONTEXT, patch_size=FINETUNE_PATCH
    )
    samples = [transform(entry) for entry in finetune_entries(np.random.default_rng(20261129))]
    collate = PadCollate(
        max_length=max(len(sample["target"]) for sample in samples), seq_fields=finetune.seq_fields, pad_func_map=finetune.pad_func_map
    )
    batch = collate(samples)
    finetune.train()
    with warnings_silenced():
        loss = finetune.training_step(batch, 0)
    loss.backward()
    arrays = {f"batch_{name}": tensor.numpy() for name, tensor in batch.items()}
    arrays["loss"] = loss.detach().numpy()
    for name, parameter in finetune.named_parameters():
        arrays["grad_" + name.removeprefix("module.")] = parameter.grad.numpy()
    folder = FIXTURES / "parity-finetune-moirai-1"
    folder.mkdir(exist_ok=True)
    np.savez_compressed(folder / "tiny-moirai-1__training_step.npz", **arrays)
    summary = {"tiny-moirai-1__training_step.npz": {"loss": f"{loss.item():.6f}", "rows": len(samples), "tokens": batch["target"].shape[1]}}
    print(summary)
    write_readme(
        folder,
        summary,
        f"One fine-tuning batch (context {FINETUNE_CONTEXT}, horizon {FINETUNE_HORIZON}, patch size {FINETUNE_PATCH}) "
        "built by uni2ts's MoiraiFinetune transforms and PadCollate, with training_step's loss and every "
        "parameter's gradient on the tiny-moirai-1 weights",
    )


@contextlib.contextmanager
def warnings_silenced():
    """training_step logs through Lightning, which warns when no Trainer is attached."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


FAMILIES["finetune-moirai-1"] = make_finetune_moirai_1


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the parity fixtures with uni2ts 2.0.0.")
    parser.add_argument("--family", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES), help="families to rewrite (default all)")
    parser.add_argument(
        "--cases", nargs="+", choices=CASE_SETS, default=list(CASE_SETS),
        help="standard: checkpoints and the array cases; leading-gaps: the tables in parity-leading-gaps/ (default both)",
    )
    args = parser.parse_args()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    if "standard" in args.cases:
        for family in args.family:
            FAMILIES[family]()
    if "leading-gaps" in args.cases:
        make_leading_gaps([family for family in sorted(FAMILIES) if family in args.family])


if __name__ == "__main__":
    main()
