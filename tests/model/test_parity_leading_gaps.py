"""Parity on series that start with missing values, read from files by the data layer (load_dataset).

The reference (uni2ts 2.0.0) reads the same files through GluonTS's PandasDataset and keeps the rows
before a series' first observed value as context (tests/fixtures/parity-leading-gaps/, written by
scripts/make_parity_fixtures.py --cases leading-gaps): long (with past and known covariates), wide and
multivariate files, with leading gaps shorter than, as long as and longer than the context, ending on a
patch boundary or mid-patch. Every check is judged on the series that start with a missing value alone,
and on the others alone:

(a) tokens at patch size 16, exactly;
(b) Moirai 2.0's forecast quantiles to 1e-5 relative; Moirai-MoE's and 1.x's quantiles of 2000 sample
    paths within the reference's own seed-to-seed noise on the same series;
(c) Moirai 1.x: the hold-out loss of every patch size to 1e-5, and the size `auto` picks;
(d) the same checks fail when the leading rows are trimmed, as moirai-cli once did.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_parity import GAP_TOLERANCE, NUM_SAMPLES, max_relative_error

from moirai_cli.data import SeriesDataset, load_dataset
from moirai_cli.forecasting.packing import pack_series
from moirai_cli.forecasting.pipeline import MoiraiForecaster

FIXTURES = Path(__file__).parent.parent / "fixtures"
GAPS = FIXTURES / "parity-leading-gaps"
TABLES = json.loads((GAPS / "cases.json").read_text())
CASES = sorted(GAPS.glob("*.npz"))
SAMPLED = [path for path in CASES if not path.name.startswith("tiny-moirai-2")]
PATCH_SIZE = 16  # the patch size of the stored tokens
TOLERANCE = 1e-5  # Moirai 2.0: float32 rounding


@pytest.fixture(scope="module")
def forecasters() -> dict[str, MoiraiForecaster]:
    names = {path.name.split("__")[0] for path in CASES}
    return {name: MoiraiForecaster.from_pretrained(str(FIXTURES / name), device="cpu") for name in names}


def read_table(name: str, horizon: int | None = None) -> SeriesDataset:
    """A fixture file as moirai-cli reads it (with its future file for a forecast of `horizon` steps)."""
    options = dict(TABLES[name])
    table, future = GAPS / options.pop("table"), options.pop("future", None)
    ahead = future is not None and horizon is not None
    return load_dataset(table, future=GAPS / future if ahead else None, horizon=horizon if ahead else None, **options)


def read_case(path: Path) -> tuple[dict, SeriesDataset]:
    """The reference's arrays of a fixture and the dataset moirai-cli reads from its file."""
    data = dict(np.load(path))
    return data, read_table(path.stem.split("__")[1], int(data["horizon"]))


def reference_rows(data: dict, dataset: SeriesDataset) -> np.ndarray:
    """The row of the reference's batch of each series moirai-cli forecasts."""
    ids = data["item_ids"].tolist()
    return np.array([ids.index(str(record.item_id)) for record in dataset.series])


def starts_missing(dataset: SeriesDataset) -> np.ndarray:
    """(series,) whether a series' first row has a missing target value (in any variate)."""
    return np.array([bool(np.isnan(record.target[0]).any()) for record in dataset.series])


def classes(dataset: SeriesDataset) -> dict[str, np.ndarray]:
    """The two classes every check is judged on, each non-empty."""
    leading = starts_missing(dataset)
    assert leading.any() and (~leading).any()
    return {"leading gap": leading, "no leading gap": ~leading}


def trimmed(dataset: SeriesDataset) -> SeriesDataset:
    """The dataset as moirai-cli read it before: each series from its first observed value (covariates cut alike)."""
    records = []
    for record in dataset.series:
        first = int(np.flatnonzero(~np.isnan(record.target).all(axis=1))[0])
        cut = {name: getattr(record, name)[first:] for name in ("target", "past_covariates", "known_covariates") if getattr(record, name) is not None}
        records.append(replace(record, timestamps=record.timestamps[first:], **cut))
    return replace(dataset, series=records)


def test_the_files_hold_each_kind_of_leading_gap():
    """Gaps shorter than, as long as and longer than the context (64); ending in it on a patch boundary and
    mid-patch, or before it; in a series shorter than the context; in one variate of a multivariate target."""
    context = 64
    gaps = []  # (leading missing rows, series length)
    for name in TABLES:
        for record in read_table(name).series:
            observed = ~np.isnan(record.target)
            gaps += [(int(np.argmax(column)), len(column)) for column in observed.T if not column[0]]
    sizes = {"shorter" if lead < context else "equal" if lead == context else "longer" for lead, _ in gaps}
    assert sizes == {"shorter", "equal", "longer"}
    ends_in_context = [(length - lead) % PATCH_SIZE for lead, length in gaps if length - lead < context]
    assert 0 in ends_in_context and any(ends_in_context)
    assert any(lead <= length - context for lead, length in gaps)
    assert any(length < context for _, length in gaps)
    multivariate = read_table("multivariate").series
    assert any(np.isnan(r.target[0]).any() and not np.isnan(r.target[0]).all() for r in multivariate)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_tokens_match_reference(path: Path, forecasters):
    data, dataset = read_case(path)
    forecaster = forecasters[path.name.split("__")[0]]
    horizon, context = int(data["horizon"]), int(data["context_length"])
    assert dataset.skipped == [i for i in data["item_ids"].tolist() if i not in {str(r.item_id) for r in dataset.series}]
    real = data["sample_id"] == 1
    for record, row in zip(dataset.series, reference_rows(data, dataset)):
        item = pack_series(
            record.target, horizon, context, PATCH_SIZE, forecaster.model.config.max_patch_size,
            record.known_covariates, record.past_covariates, causal_mean_target=forecaster.procedure.causal_mean_target,
        )
        assert real[row].sum() == len(item.tokens["sample_id"]), f"{record.item_id}: we keep the reference's non-padding tokens"
        for name in ("target", "observed", "time_id", "variate_id", "prediction_mask"):
            np.testing.assert_array_equal(item.tokens[name], data[name][row][real[row]], err_msg=f"{record.item_id}: {name}")


def moirai_2_errors(path: Path, forecaster: MoiraiForecaster, dataset: SeriesDataset | None = None) -> dict[str, float]:
    """Max relative error of the forecast quantiles against the reference's, per class of series."""
    data, read = read_case(path)
    dataset = dataset or read
    forecast = forecaster.predict_dataset(dataset, int(data["horizon"]), context_length=int(data["context_length"]))
    reference = data["quantiles"][reference_rows(data, read)]
    return {name: max_relative_error(forecast.values[rows], reference[rows]) for name, rows in classes(read).items()}


MOIRAI_2 = [path for path in CASES if path.name.startswith("tiny-moirai-2")]


@pytest.mark.parametrize("path", MOIRAI_2, ids=[p.stem for p in MOIRAI_2])
def test_moirai_2_quantiles_match_reference_on_each_class(path: Path, forecasters):
    errors = moirai_2_errors(path, forecasters["tiny-moirai-2"])
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("path", MOIRAI_2, ids=[p.stem for p in MOIRAI_2])
def test_trimming_the_leading_rows_fails_the_moirai_2_check(path: Path, forecasters):
    _, dataset = read_case(path)
    errors = moirai_2_errors(path, forecasters["tiny-moirai-2"], trimmed(dataset))
    assert errors["leading gap"] > 100 * TOLERANCE and errors["no leading gap"] < TOLERANCE, errors


def sampled_gaps(path: Path, forecaster: MoiraiForecaster, dataset: SeriesDataset | None = None) -> dict[str, tuple[float, float]]:
    """Per class: (mean |our quantile - reference's|, mean |reference's - reference's with another seed|)."""
    data, read = read_case(path)
    forecast = forecaster.predict_dataset(
        dataset or read, int(data["horizon"]), context_length=int(data["context_length"]), num_samples=NUM_SAMPLES, seed=7,
    )
    ours = forecast.quantiles(data["quantile_levels"])
    rows = reference_rows(data, read)
    reference, again = data["quantiles_seed0"][rows], data["quantiles_seed1"][rows]
    return {
        name: (float(np.abs(ours[mask] - reference[mask]).mean()), float(np.abs(again[mask] - reference[mask]).mean()))
        for name, mask in classes(read).items()
    }


@pytest.mark.parametrize("path", SAMPLED, ids=[p.stem for p in SAMPLED])
def test_sampled_quantiles_within_reference_noise_on_each_class(path: Path, forecasters):
    for name, (ours, noise) in sampled_gaps(path, forecasters[path.name.split("__")[0]]).items():
        assert ours <= GAP_TOLERANCE * noise, f"{name}: our gap {ours:.4f} vs reference seed gap {noise:.4f}"


@pytest.mark.parametrize("checkpoint", ["tiny-moe", "tiny-moirai-1"])
def test_trimming_the_leading_rows_fails_the_sampled_check(checkpoint: str, forecasters):
    path = GAPS / f"{checkpoint}__long.npz"
    _, dataset = read_case(path)
    ours, noise = sampled_gaps(path, forecasters[checkpoint], trimmed(dataset))["leading gap"]
    assert ours > GAP_TOLERANCE * noise, f"trimmed: gap {ours:.4f} vs reference seed gap {noise:.4f}"


MOIRAI_1 = [path for path in CASES if path.name.startswith("tiny-moirai-1")]


@pytest.mark.parametrize("path", MOIRAI_1, ids=[p.stem for p in MOIRAI_1])
def test_moirai_1_auto_patch_size_scores_and_picks_as_the_reference(path: Path, forecasters):
    data, dataset = read_case(path)
    forecaster = forecasters["tiny-moirai-1"]
    horizon, context = int(data["horizon"]), int(data["context_length"])
    records = dataset.series
    past = [r.past_covariates for r in records] if dataset.layout.past_covariates else None
    known = [r.known_covariates for r in records] if dataset.layout.known_covariates else None
    with torch.inference_mode():
        scores = np.stack([
            forecaster.holdout_nll([r.target for r in records], past, known, horizon, context, size, 32)
            for size in forecaster.patch_sizes
        ])
    reference = data["holdout_loss"][:, reference_rows(data, dataset)]
    for name, rows in classes(dataset).items():
        assert max_relative_error(scores[:, rows], reference[:, rows]) < 1e-5, name
    forecast = forecaster.predict_dataset(dataset, horizon, context_length=context, num_samples=2, seed=0)
    np.testing.assert_array_equal(forecast.patch_sizes, data["patch_sizes"][reference.argmin(axis=0)])
