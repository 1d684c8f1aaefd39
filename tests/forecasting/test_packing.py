"""From series to tokens: imputation, windows, patches, ids and the reference's quirks.

Small patch sizes (4 in rows 8 wide) keep the expected layouts readable by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moirai_cli.forecasting.packing import causal_mean_impute, collate, pack_series

NAN = np.nan
FIELDS = ("target", "observed", "sample_id", "time_id", "variate_id", "prediction_mask")


def expected_impute(values) -> list[float]:
    """The causal-mean rule written out plainly, one value at a time.

    Forward-fill the series (a leading gap takes the first observed value); each missing value
    becomes the mean of all earlier forward-filled values; a missing first value takes the
    forward-filled first value. A series of one value, or with nothing observed, gets zeros.
    """
    x = [float(v) for v in values]
    observed = [not math.isnan(v) for v in x]
    if len(x) == 1 or not any(observed):
        return [v if o else 0.0 for v, o in zip(x, observed)]
    last = x[observed.index(True)]
    filled = []
    for v, o in zip(x, observed):
        if o:
            last = v
        filled.append(last)
    out = []
    for i, (v, o) in enumerate(zip(x, observed)):
        if o:
            out.append(v)
        elif i == 0:
            out.append(filled[0])
        else:
            out.append(sum(filled[:i]) / i)
    return out


def pack(target, horizon=8, context=16, patch=4, width=8, known=None, past=None, holdout=False):
    target = np.asarray(target, dtype=np.float32)
    if target.ndim == 1:
        target = target[:, None]
    return pack_series(target, horizon, context, patch, width, known, past, holdout=holdout)


def ramp(length: int, start: float = 1.0) -> np.ndarray:
    return np.arange(start, start + length, dtype=np.float32)


# --- causal_mean_impute -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1, 2, NAN, 6], [1, 2, 1.5, 6]),  # inner gap: mean of 1, 2
        ([1, 2, 3, NAN, NAN], [1, 2, 3, 2, 2.25]),  # trailing gap: (1+2+3)/3, (1+2+3+3)/4
        ([NAN, NAN, 5, 7], [5, 5, 5, 7]),  # leading gap: the first observed value
        ([NAN, 2, NAN, 4, NAN, NAN], [2, 2, 2, 4, 2.5, 2.8]),  # all kinds; the back-filled 2 counts
        ([4, NAN, NAN, NAN], [4, 4, 4, 4]),
        ([NAN], [0]),
        ([3], [3]),
        ([NAN, NAN, NAN], [0, 0, 0]),
        ([1, 2, 3], [1, 2, 3]),
    ],
)
def test_causal_mean_impute_by_hand(values, expected):
    out = causal_mean_impute(np.asarray(values, dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_causal_mean_impute_matches_the_plain_rule(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        length = int(rng.integers(1, 60))
        values = rng.normal(10, 5, length).astype(np.float32)
        values[rng.random(length) < rng.uniform(0, 0.9)] = np.nan
        if rng.random() < 0.3:
            values[: rng.integers(1, length + 1)] = np.nan  # a leading gap, sometimes everything
        original = values.copy()
        out = causal_mean_impute(values)
        np.testing.assert_allclose(out, expected_impute(values), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(values, original)  # the input is left alone
        assert not np.isnan(out).any()


@pytest.mark.gluonts
def test_causal_mean_impute_agrees_with_gluonts():
    feature = pytest.importorskip("gluonts.transform.feature")
    rng = np.random.default_rng(42)
    for _ in range(40):
        length = int(rng.integers(2, 50))
        values = rng.normal(0, 3, length).astype(np.float32)
        values[rng.random(length) < 0.4] = np.nan
        if rng.random() < 0.3:
            values[: rng.integers(1, length)] = np.nan
        if np.isnan(values).all():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):  # gluonts divides 0 by 0 at position 0
            reference = feature.CausalMeanValueImputation()(values.astype(np.float64).copy())
        np.testing.assert_allclose(causal_mean_impute(values), reference, rtol=1e-5, atol=1e-5)


# --- token layout: univariate -------------------------------------------------------------------


def test_univariate_full_context_layout():
    series = ramp(20)
    item = pack(series, horizon=8, context=16, patch=4, width=8)
    t = item.tokens
    assert len(t["sample_id"]) == 4 + 2
    np.testing.assert_array_equal(t["sample_id"], 1)
    np.testing.assert_array_equal(t["variate_id"], 0)
    np.testing.assert_array_equal(t["time_id"], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(t["prediction_mask"], [False] * 4 + [True] * 2)
    assert t["target"].shape == (6, 8) and t["target"].dtype == np.float32
    np.testing.assert_array_equal(t["target"][:4, :4], series[-16:].reshape(4, 4))
    np.testing.assert_array_equal(t["target"][:, 4:], 0)  # widened to the largest patch size
    np.testing.assert_array_equal(t["target"][4:], 0)  # future values start at 0
    np.testing.assert_array_equal(t["observed"][:, :4], True)
    np.testing.assert_array_equal(t["observed"][:, 4:], False)
    np.testing.assert_array_equal(item.last_context, [3])
    np.testing.assert_array_equal(item.future, [[4, 5]])
    assert item.future_covariates.shape == (0, 2)


def test_context_not_a_multiple_of_the_patch_size_is_left_padded():
    series = ramp(30)
    t = pack(series, horizon=4, context=10, patch=4, width=4).tokens
    # 10 values -> 3 patches of 4: two unobserved zeros, then the last 10 values.
    assert list(t["prediction_mask"]).count(False) == 3
    np.testing.assert_array_equal(t["target"][0], [0, 0, 21, 22])
    np.testing.assert_array_equal(t["observed"][0], [False, False, True, True])
    np.testing.assert_array_equal(t["target"][1:3].ravel(), series[-8:])
    np.testing.assert_array_equal(t["sample_id"], 1)
    np.testing.assert_array_equal(t["time_id"], [0, 1, 2, 3])


def test_context_longer_than_the_series_drops_padding_patches():
    series = ramp(5)
    item = pack(series, horizon=4, context=16, patch=4, width=4)
    t = item.tokens
    # 11 pad values and 5 real ones: only the last two patches hold real values.
    np.testing.assert_array_equal(t["prediction_mask"], [False, False, True])
    np.testing.assert_array_equal(t["target"][:2], [[0, 0, 0, 1], [2, 3, 4, 5]])
    np.testing.assert_array_equal(t["observed"][:2], [[False, False, False, True], [True] * 4])
    np.testing.assert_array_equal(t["time_id"], [0, 1, 2])
    np.testing.assert_array_equal(t["sample_id"], 1)
    np.testing.assert_array_equal(item.last_context, [1])
    np.testing.assert_array_equal(item.future, [[2]])


@pytest.mark.parametrize("length", [1, 3, 7, 16, 40])
@pytest.mark.parametrize("context", [5, 16, 21])
@pytest.mark.parametrize("horizon", [1, 4, 9])
def test_token_counts(length, context, horizon):
    patch = 4
    item = pack(np.ones(length), horizon=horizon, context=context, patch=patch, width=8)
    t = item.tokens
    past, future = math.ceil(min(length, context) / patch), math.ceil(horizon / patch)
    assert (~t["prediction_mask"]).sum() == past
    assert t["prediction_mask"].sum() == future
    assert item.future.shape == (1, future)
    # Time ids: past tokens count up from 0, future tokens continue.
    np.testing.assert_array_equal(t["time_id"], np.arange(past + future))
    # Exactly min(length, context) observed past values and `horizon` observed future slots.
    assert t["observed"][~t["prediction_mask"]].sum() == min(length, context)
    assert t["observed"][t["prediction_mask"]].sum() == horizon


def test_horizon_not_a_multiple_of_the_patch_size_is_right_padded_unobserved():
    t = pack(ramp(16), horizon=6, context=16, patch=4, width=8).tokens
    future = t["prediction_mask"]
    assert future.sum() == 2
    np.testing.assert_array_equal(
        t["observed"][future], [[True] * 4 + [False] * 4, [True] * 2 + [False] * 6]
    )
    np.testing.assert_array_equal(t["target"][future], 0)
    np.testing.assert_array_equal(t["sample_id"][future], 1)


def test_time_ids_start_at_the_first_observed_patch():
    series = np.concatenate([np.full(9, np.nan), ramp(7)])
    t = pack(series, horizon=4, context=16, patch=4, width=4).tokens
    # Patches 0 and 1 are real but unobserved: they share time 0 with the first observed patch.
    np.testing.assert_array_equal(t["sample_id"], 1)
    np.testing.assert_array_equal(t["time_id"], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(t["observed"][:3].ravel(), [False] * 9 + [True] * 3)
    # Leading missing values take the first observed value, and stay unobserved.
    np.testing.assert_array_equal(t["target"][:3].ravel()[:9], 1.0)


def test_a_fully_missing_patch_after_the_first_observation_still_counts():
    series = np.concatenate([ramp(4), np.full(4, np.nan), ramp(8)])
    t = pack(series, horizon=4, context=16, patch=4, width=4).tokens
    np.testing.assert_array_equal(t["time_id"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(t["observed"][1], False)
    # Causal means over the forward-filled history: 2.5, then (10 + 4) / 5, ...
    np.testing.assert_allclose(t["target"][1], expected_impute(series)[4:8], rtol=1e-6)


def test_univariate_imputation_uses_history_before_the_window():
    series = np.concatenate([np.full(40, 100.0), [1, 2, np.nan, 4, 5, 6, 7, 8]])
    t = pack(series, horizon=4, context=8, patch=4, width=4).tokens
    expected = expected_impute(series)[-8:]
    np.testing.assert_allclose(t["target"][:2].ravel(), expected, rtol=1e-6)
    assert t["target"][0, 2] == pytest.approx((40 * 100 + 1 + 2) / 42)
    assert not t["observed"][0, 2]


def test_all_missing_series_is_packed_with_zeros_and_time_zero():
    t = pack(np.full(8, np.nan), horizon=4, context=8, patch=4, width=4).tokens
    np.testing.assert_array_equal(t["target"], 0)
    np.testing.assert_array_equal(t["observed"][:2], False)
    np.testing.assert_array_equal(t["time_id"], [0, 0, 1])


# --- multivariate targets and covariates --------------------------------------------------------


def test_multivariate_order_variate_ids_and_zero_imputation():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(12, 2)).astype(np.float32)
    target[5, 0] = np.nan
    known = rng.normal(size=(12 + 6, 1)).astype(np.float32)
    known[3, 0] = np.nan
    past = rng.normal(size=(12, 2)).astype(np.float32)
    past[-1, 1] = np.nan
    item = pack(target, horizon=6, context=8, patch=4, width=8, known=known, past=past)
    t = item.tokens
    np.testing.assert_array_equal(
        t["variate_id"],
        [0, 0, 1, 1,  # past target patches, variate by variate
         0, 0, 1, 1,  # future target patches
         2, 2, 2, 2,  # known covariate: past, then future
         3, 3, 4, 4],  # past-only covariates: past only
    )
    np.testing.assert_array_equal(t["prediction_mask"], [False] * 4 + [True] * 4 + [False] * 8)
    np.testing.assert_array_equal(t["time_id"], [0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 2, 3, 0, 1, 0, 1])
    # Multivariate targets and covariates: missing values become 0, flagged unobserved.
    np.testing.assert_array_equal(t["target"][1, :4], np.nan_to_num(target[8:12, 0]))
    np.testing.assert_array_equal(t["target"][:2, :4].ravel(), np.nan_to_num(target[4:, 0]))
    assert t["target"][0, 1] == 0 and not t["observed"][0, 1]
    np.testing.assert_array_equal(t["target"][2:4, :4].ravel(), target[4:, 1])
    # Known covariates: the window's values, then the horizon's (right-padded, unobserved).
    np.testing.assert_array_equal(t["target"][8:10, :4].ravel(), known[4:12, 0])
    np.testing.assert_array_equal(t["target"][10:12, :4].ravel()[:6], known[12:, 0])
    np.testing.assert_array_equal(t["observed"][10:12, :4].ravel(), [True] * 6 + [False] * 2)
    np.testing.assert_array_equal(t["target"][14:16, :4].ravel(), np.nan_to_num(past[4:, 1]))
    assert not t["observed"][15, 3]
    # Where forecasts are read and where the known future sits.
    np.testing.assert_array_equal(item.last_context, [1, 3])
    np.testing.assert_array_equal(item.future, [[4, 5], [6, 7]])
    np.testing.assert_array_equal(item.future_covariates, [[10, 11]])


def test_time_ids_follow_the_first_patch_where_any_target_variate_is_observed():
    target = np.arange(32, dtype=np.float32).reshape(16, 2)
    target[:8, 0] = np.nan  # variate 0 observed from patch 2
    target[:4, 1] = np.nan  # variate 1 observed from patch 1
    t = pack(target, horizon=4, context=16, patch=4, width=4).tokens
    np.testing.assert_array_equal(t["time_id"], [0, 0, 1, 2, 0, 0, 1, 2, 3, 3])


def test_covariate_alignment_pad_counts_as_real_a_reference_quirk():
    # context 10 with patch 4: 2 alignment zeros, then 5 padding and the 5 real values.
    # The target's first patch is all padding (sample_id 0, dropped); the covariates'
    # first patch is kept, because the reference counts their alignment zeros as real.
    target = ramp(5)[:, None]
    known = np.ones((5 + 4, 1), np.float32)
    past = np.ones((5, 1), np.float32)
    t = pack(target, horizon=4, context=10, patch=4, width=4, known=known, past=past).tokens
    np.testing.assert_array_equal(
        t["variate_id"], [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    )
    np.testing.assert_array_equal(t["sample_id"], 1)
    # The extra covariate tokens hold nothing observed and sit at time 0.
    for first in (3, 7):
        np.testing.assert_array_equal(t["target"][first], 0)
        np.testing.assert_array_equal(t["observed"][first], False)
        assert t["time_id"][first] == 0


def test_no_extra_covariate_token_when_the_context_is_whole_patches():
    target = ramp(5)[:, None]
    known = np.ones((5 + 4, 1), np.float32)
    past = np.ones((5, 1), np.float32)
    t = pack(target, horizon=4, context=12, patch=4, width=4, known=known, past=past).tokens
    np.testing.assert_array_equal(t["variate_id"], [0, 0, 0, 1, 1, 1, 2, 2])


# --- hold-out mode -----------------------------------------------------------------------------


@pytest.mark.parametrize("variates", [1, 2])
def test_holdout_scores_the_last_horizon_values(variates):
    rng = np.random.default_rng(variates)
    horizon, length = 6, 30
    target = rng.normal(size=(length, variates)).astype(np.float32)
    target[[3, 26], 0] = np.nan  # one missing value in the history, one in the held-out part
    known = rng.normal(size=(length, 1)).astype(np.float32)
    past = rng.normal(size=(length, 2)).astype(np.float32)

    held = pack(target, horizon, 16, 4, 8, known=known, past=past, holdout=True)
    plain = pack(target[:-horizon], horizon, 16, 4, 8, known=known, past=past[:-horizon])
    future = held.tokens["prediction_mask"]
    np.testing.assert_array_equal(future, plain.tokens["prediction_mask"])
    np.testing.assert_array_equal(held.future, plain.future)
    np.testing.assert_array_equal(held.last_context, plain.last_context)
    for name in FIELDS:
        if name in ("target", "observed"):
            np.testing.assert_array_equal(held.tokens[name][~future], plain.tokens[name][~future], err_msg=name)
        else:
            np.testing.assert_array_equal(held.tokens[name], plain.tokens[name], err_msg=name)

    # The future tokens carry the held-out values (imputed as over the whole series) and flags.
    held_out = target[-horizon:]
    if variates == 1:
        imputed = np.asarray(expected_impute(target[:, 0]), np.float32)[-horizon:, None]
    else:
        imputed = np.nan_to_num(held_out)
    for v in range(variates):
        values = held.tokens["target"][held.future[v], :4].ravel()
        flags = held.tokens["observed"][held.future[v], :4].ravel()
        np.testing.assert_allclose(values[:horizon], imputed[:, v], rtol=1e-6)
        np.testing.assert_array_equal(flags[:horizon], ~np.isnan(held_out[:, v]))
        np.testing.assert_array_equal(flags[horizon:], False)
    assert not held.tokens["observed"][held.future[0]].ravel()[2]  # the held-out missing value


# --- collation ----------------------------------------------------------------------------------


def test_collate_right_pads_with_padding_tokens():
    short = pack(ramp(5), horizon=4, context=16, patch=4, width=8)
    long = pack(ramp(40), horizon=4, context=16, patch=4, width=8)
    batch = collate([short, long], 4)
    tokens = batch.tokens
    assert tokens.target.shape == (2, 5, 8) and tokens.sample_id.shape == (2, 5)
    assert tokens.target.dtype == torch.float32 and tokens.observed.dtype == torch.bool
    count = len(short.tokens["sample_id"])
    assert tokens.sample_id[0, count:].eq(0).all() and tokens.observed[0, count:].eq(False).all()
    assert tokens.prediction_mask[0, count:].eq(False).all()
    assert tokens.patch_size == 4
    for row, item in enumerate((short, long)):
        n = len(item.tokens["sample_id"])
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(tokens, name)[row, :n].numpy(), item.tokens[name])
    np.testing.assert_array_equal(batch.last_context.numpy(), [[1], [3]])
    np.testing.assert_array_equal(batch.future.numpy(), [[[2]], [[4]]])
    assert batch.patch_size == 4


def test_holdout_of_a_series_shorter_than_the_horizon_is_left_padded():
    # 5 values, horizon 10, patches of 4: the hold-out window is 5 padding rows then the 5 values,
    # right-aligned to whole patches; the context is nothing but padding (reference behaviour).
    target = ramp(5)[:, None]
    known = np.arange(5, dtype=np.float32)[:, None] + 100
    held = pack(target, horizon=10, context=8, patch=4, width=4, known=known, holdout=True)
    t = held.tokens
    future = held.future[0]  # 3 patches: [pad pad pad pad] [pad 1 2 3] [4 5 . .]
    assert len(future) == 3
    np.testing.assert_array_equal(t["sample_id"][future], [0, 1, 1])  # an all-padding patch stays, as padding
    np.testing.assert_array_equal(t["target"][future].ravel()[:12], [0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(t["observed"][future].ravel()[:12], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0])
    assert t["prediction_mask"][future].all() and not t["prediction_mask"][t["sample_id"] == 1].all()
    np.testing.assert_array_equal(t["time_id"][future], [1, 2, 3])  # the context has no observed value
    # The known covariates' future tokens are real (sample_id 1) even over the padding, as in the reference.
    covariate_future = held.future_covariates[0]
    np.testing.assert_array_equal(t["sample_id"][covariate_future], [1, 1, 1])
    np.testing.assert_array_equal(t["target"][covariate_future].ravel()[:10], [0, 0, 0, 0, 0, 100, 101, 102, 103, 104])
    # No context token survives: everything before the hold-out is padding.
    assert (t["prediction_mask"] | (t["variate_id"] == 1)).all()


@pytest.mark.parametrize("causal_mean, expected", [(True, [1.0, 1.0, 1.0, 4.0]), (False, [1.0, 0.0, 0.0, 4.0])])
def test_the_gap_rule_of_a_univariate_target_is_chosen_by_the_caller(causal_mean, expected):
    target = np.array([1.0, NAN, NAN, 4.0], np.float32)[:, None]
    t = pack_series(target, 4, 4, 4, 4, causal_mean_target=causal_mean).tokens
    np.testing.assert_allclose(t["target"][0], expected)


@pytest.mark.parametrize("holdout", [False, True])
@pytest.mark.parametrize("patch_size", [8, 16, 32])
@pytest.mark.parametrize("alignment", [0, 5])
def test_a_context_far_longer_than_the_series_packs_as_a_short_one(monkeypatch, holdout, patch_size, alignment):
    # --context-length 1000000000000 on 123-row series: "MemoryError: Unable to allocate 3.64 TiB".
    from moirai_cli.forecasting import packing

    rng = np.random.default_rng(0)
    length, horizon = 123, 10
    target = rng.normal(size=(length, 2))
    target[:7, 0] = np.nan
    known = rng.normal(size=(length if holdout else length + horizon, 1))
    past = rng.normal(size=(length, 1))

    def tokens(context):
        packed = pack_series(target, horizon, context, patch_size, 32, known, past, holdout=holdout)
        return packed.tokens, packed.last_context, packed.future, packed.future_covariates

    long = patch_size * 40 + alignment  # beyond the series by many patches, with `alignment` as its remainder
    huge = patch_size * (10**12 // patch_size) + alignment
    with monkeypatch.context() as uncapped:
        uncapped.setattr(packing, "context_needed", lambda context, rows, size: context)
        reference = tokens(long)  # every padding patch built, then dropped
    for context in (long, huge):
        got = tokens(context)
        assert got[0].keys() == reference[0].keys()
        for name in reference[0]:
            np.testing.assert_array_equal(got[0][name], reference[0][name], err_msg=name)
        for a, b in zip(got[1:], reference[1:]):
            np.testing.assert_array_equal(a, b)
