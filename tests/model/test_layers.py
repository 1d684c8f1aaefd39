"""Row-wise layers give every row the same bits whatever else is in the batch (CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import pytest

from moirai_cli.model.layers import MIN_ROWS, Attention, GatedFeedForward, PatchSizeLinear, rowwise


def test_rowwise_pads_small_and_ragged_row_counts_then_drops_the_padding():
    seen = []

    def record(x):
        seen.append(x.shape[0])
        return x * 2

    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(rowwise(record, x), x * 2)
    assert seen == [MIN_ROWS]
    rowwise(record, torch.randn(21, 8), widths=(8,))  # 21 rows of 8: padded to whole blocks of 64 values
    assert seen[-1] == 24
    rowwise(record, torch.randn(64, 8), widths=(8,))
    assert seen[-1] == 64


def test_an_expert_row_is_the_same_alone_and_in_any_batch():
    torch.manual_seed(0)
    expert = GatedFeedForward(128, 8)  # a width whose rows do not fill whole vector blocks
    batch = torch.randn(37, 128)
    with torch.inference_mode():
        together = expert(batch)
        for row in (0, 5, 36):
            assert torch.equal(expert(batch[row : row + 1])[0], together[row])
            assert torch.equal(expert(batch[row : row + 3])[0], together[row])


@pytest.mark.parametrize("mask", ["in", "out"])
def test_a_patch_size_linear_maps_with_the_weight_of_the_given_size_only(mask):
    """Each size has its own weight, restricted to its first inputs ("in") or outputs ("out")."""
    torch.manual_seed(2)
    sizes = (2, 4, 8)
    layer = PatchSizeLinear(8, 8, sizes, mask=mask)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(3, 7, 8)
    outputs = {}
    for index, size in enumerate(sizes):
        weight, bias = layer.weight[index].detach(), layer.bias[index].detach()
        if mask == "in":
            expected = F.linear(x[..., :size], weight[:, :size], bias)
        else:
            expected = torch.cat([F.linear(x, weight[:size], bias[:size]), bias[size:].expand(3, 7, -1)], dim=-1)
        outputs[size] = layer(x, size).detach()
        torch.testing.assert_close(outputs[size], expected)
    assert not torch.allclose(outputs[2], outputs[4])  # each size its own weight
    with pytest.raises(ValueError, match="patch size 16 is not one of"):
        layer(x, 16)


def test_attention_rows_are_the_same_alone_and_in_a_batch():
    torch.manual_seed(1)
    attention = Attention(128)
    query, key, value = (torch.randn(6, 2, 1, 64), torch.randn(6, 2, 9, 64), torch.randn(6, 2, 9, 64))
    bias = torch.zeros(6, 2, 1, 9)
    with torch.inference_mode():
        together = attention.attend(query, key, value, bias)
        alone = attention.attend(query[4:5], key[4:5], value[4:5], bias[4:5])
        reference = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1 / 8)
        expected = attention.out_proj(reference.transpose(1, 2).flatten(-2))
    assert torch.equal(alone[0], together[4])
    torch.testing.assert_close(together, expected)


def test_grouped_products_give_the_expert_loop_result_and_share_its_weights():
    from moirai_cli.model.layers import MixtureOfExperts

    torch.manual_seed(2)
    moe = MixtureOfExperts(128, 64)
    for parameter in moe.parameters():
        parameter.data.normal_(0, 0.1)
    centroid = torch.randn(32, 128, dtype=torch.float64)
    x = torch.randn(3, 40, 128)
    with torch.inference_mode():
        looped = moe(x, centroid)
        moe.use_grouped_products()
        grouped = moe(x, centroid)
    torch.testing.assert_close(grouped, looped, rtol=1e-5, atol=1e-5)
    stacked = moe.stacked["fc1"]
    assert moe.experts[5].fc1.weight.data_ptr() == stacked[5].data_ptr()  # a view, not a second copy


def test_a_gpu_forward_pass_reads_nothing_back_from_the_device():
    """On the meta device every value read back to the host fails, as a CUDA sync would in sync-debug mode.

    In bfloat16, the dtype in which CUDA runs grouped products (the expert loop of a float32
    network reads one count vector per layer).
    """
    from moirai_cli.model.checkpoint import random_model
    from moirai_cli.model.config import MoiraiMoEConfig
    from moirai_cli.model.network import PackedTokens

    model = random_model(MoiraiMoEConfig(d_model=128, d_ff=64, num_layers=2, patch_sizes=(8, 16))).eval()
    model.encoder.centroid = model.encoder.centroid.to("meta")
    model.to("meta", dtype=torch.bfloat16)
    batch, length, width = 4, 20, 16
    tokens = PackedTokens(
        target=torch.empty(batch, length, width, device="meta"),
        observed=torch.empty(batch, length, width, dtype=torch.bool, device="meta"),
        sample_id=torch.empty(batch, length, dtype=torch.long, device="meta"),
        time_id=torch.empty(batch, length, dtype=torch.long, device="meta"),
        variate_id=torch.empty(batch, length, dtype=torch.long, device="meta"),
        prediction_mask=torch.empty(batch, length, dtype=torch.bool, device="meta"),
        patch_size=16,
    )
    positions = torch.empty(batch, 1, dtype=torch.long, device="meta")
    with torch.inference_mode():
        try:
            model(tokens, positions)
        except (RuntimeError, NotImplementedError) as error:  # the expert loop needs counts on the host
            assert "meta" in str(error).lower()
        else:
            raise AssertionError("the expert loop should need a value from the device")
        model.use_grouped_experts()
        distribution = model(tokens, positions)
    assert distribution.loc.shape == (batch, 1, width)
