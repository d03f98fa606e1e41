"""Padding masks and length validation."""

import pytest
import torch

from cnnlstm.errors import ShapeError
from cnnlstm.layers.masking import check_lengths, check_mask, lengths_to_mask, mask_to_lengths


def test_lengths_to_mask_matches_hand_written_mask() -> None:
    mask = lengths_to_mask(torch.tensor([1, 3, 2]), 3)
    expected = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    assert torch.equal(mask_to_lengths(mask), torch.tensor([1, 3, 2]))


def test_check_lengths_accepts_and_casts_to_int64() -> None:
    out = check_lengths(torch.tensor([3, 1], dtype=torch.int32), batch_size=2, max_len=3, owner="m")
    assert out.dtype == torch.int64 and out.tolist() == [3, 1]
    assert check_lengths(None, batch_size=2, max_len=3, owner="m") is None


@pytest.mark.parametrize(
    ("lengths", "fragment"),
    [
        (torch.tensor([[3, 1]]), "shape (2,)"),
        (torch.tensor([3]), "shape (2,)"),
        (torch.tensor([3.0, 1.0]), "integer lengths"),
        (torch.tensor([0, 2]), "[1, 3]"),
        (torch.tensor([4, 2]), "[1, 3]"),
        ([3, 1], "tensor"),
    ],
)
def test_check_lengths_rejects_bad_lengths_naming_the_owner(lengths, fragment: str) -> None:
    with pytest.raises(ShapeError, match="frame_lstm") as info:
        check_lengths(lengths, batch_size=2, max_len=3, owner="frame_lstm")
    assert fragment in str(info.value)


def test_check_mask_converts_numbers_and_rejects_wrong_shape() -> None:
    assert check_mask(torch.tensor([[1, 0]]), 1, 2, owner="m").dtype == torch.bool
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        check_mask(torch.ones(2, 4, dtype=torch.bool), 2, 3, owner="m")
