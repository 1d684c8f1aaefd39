"""Row-wise layers give every row the same bits whatever else is in the batch (CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moirai_cli.model.layers import MIN_ROWS, Attention, GatedFeedForward, rowwise


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
