"""Regenerate the parity fixtures in tests/fixtures/ with the reference implementation.

Run by hand, never by CI, in the reference's own virtual environment:

    bash ../shared/reference/make-venv.sh /tmp/moirai-ref
    /tmp/moirai-ref/bin/python scripts/make_parity_fixtures.py

It writes two tiny random-initialised checkpoints in the Hub layout (one patch size 16,
one with sizes 8/16/32) and, for a set of awkward input batches, the reference's tokens,
one-step predictive distribution and multi-step sample quantiles (two seeds).
The test suite compares moirai_cli against these files without the reference installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
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
from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
QUANTILE_LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
NUM_SAMPLES = 2000


def tiny_module(patch_sizes: tuple[int, ...], d_ff: int, num_layers: int, seed: int) -> MoiraiMoEModule:
    """A small reference network with every tensor randomised (masked regions included)."""
    torch.manual_seed(seed)
    module = MoiraiMoEModule(
        distr_output=MixtureOutput(
            [StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()]
        ),
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
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
            else:
                fan_in = param.shape[-1]
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
        # The reference leaves the routing centroids uninitialised: fill them.
        module.encoder.centroid.copy_(torch.randn(module.encoder.centroid.shape, generator=generator, dtype=torch.float64))
    return module.eval()


def make_series(rng: np.random.Generator, length: int, level: float, gaps: list[slice]) -> np.ndarray:
    """A seasonal series with NaN gaps."""
    t = np.arange(length)
    values = level + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=0.7, size=length) + 0.02 * t
    for gap in gaps:
        values[gap] = np.nan
    return values.astype(np.float32)


def make_cases(rng: np.random.Generator) -> dict[str, dict]:
    """Input batches: each a list of entries plus the forecast settings."""
    cases = {}
    horizon = 40
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
    cases["univariate_single_step"] = dict(entries=plain, context_length=64, horizon=16, target_dim=1, known=0, past=0)
    cases["univariate_plain"] = dict(entries=plain, context_length=64, horizon=45, target_dim=1, known=0, past=0)
    return cases


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


def one_step(forecast: MoiraiMoEForecast, inputs: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tokens of pass 1 and the full predictive distribution at every token."""
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


def main() -> None:
    rng = np.random.default_rng(20261126)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    checkpoints = {
        "tiny-moe": tiny_module((16,), d_ff=8, num_layers=2, seed=1),
        "tiny-moe-multipatch": tiny_module((8, 16, 32), d_ff=4, num_layers=1, seed=2),
    }
    for name, module in checkpoints.items():
        module.save_pretrained(FIXTURES / name)
        (FIXTURES / name / "README.md").unlink(missing_ok=True)  # the Hub mixin's model card template
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
            summary[path.name] = {"seed_gap_mean": float(gap.mean()), "seed_gap_max": float(gap.max())}
            print(path.name, summary[path.name])
    (FIXTURES / "parity" / "README.md").write_text(
        "Written by scripts/make_parity_fixtures.py with uni2ts 2.0.0 (torch "
        f"{torch.__version__}). Do not edit by hand.\n\nReference seed-to-seed quantile gaps:\n\n"
        + "\n".join(f"- {k}: mean {v['seed_gap_mean']:.4f}, max {v['seed_gap_max']:.4f}" for k, v in summary.items())
        + "\n"
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
