"""Shared argument and input checks: what they refuse, what they let through, and the words they use."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.checks import (
    check_input,
    check_token_ids,
    require_dropout,
    require_non_negative,
    require_positive,
    weights_dtype,
)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(0, "got 0"), (-2, "got -2"), (3.5, r"got 3.5 \(float\)"), ("3", r"got '3' \(str\)"), (True, r"\(bool\)"),
     (None, r"got None \(NoneType\)"), ([4, 0], r"every entry of size must be an integer >= 1, got \[4, 0\]"),
     ((4, "8"), "every entry")],
)
def test_require_positive_refuses_non_positive_and_non_integer_sizes(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=rf"^net: .*{fragment}") as info:
        require_positive("net", size=value)
    assert "size" in str(info.value)


def test_require_positive_accepts_ints_lists_and_optional_none() -> None:
    require_positive("net", a=1, b=(2, 3), c=[], d=torch.tensor(3).item())
    require_positive("net", allow_none=True, seq_len=None, chunk_size=4)
    require_non_negative("net", head_hidden_size=0)
    with pytest.raises(ConfigError, match="head_hidden_size must be an integer >= 0"):
        require_non_negative("net", head_hidden_size=-1)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_require_dropout_refuses_rates_outside_zero_one(rate: object) -> None:
    with pytest.raises(ConfigError, match=r"net: dropout must be a number in \[0, 1\)"):
        require_dropout("net", dropout=rate)


def test_check_input_names_the_layout_the_empty_dimension_and_the_fixed_size() -> None:
    check_input(torch.rand(2, 3, 4), "B, T, F", "net", F=4, dtype=torch.float32)
    with pytest.raises(ShapeError, match=r"^net expects a series \(B, T, F\) with F=4 \(in_channels\), got \(2, 3\)$"):
        check_input(torch.rand(2, 3), "B, T, F", "net", what="a series", hint=" (in_channels)", F=4)
    with pytest.raises(ShapeError, match=r"with F=4, got \(2, 3, 5\)"):
        check_input(torch.rand(2, 3, 5), "B, T, F", "net", F=4)
    with pytest.raises(ShapeError, match=r"with at least one time step, got \(2, 0, 4\)"):
        check_input(torch.rand(2, 0, 4), "B, T, F", "net", F=4)
    with pytest.raises(ShapeError, match=r"with at least one sample, got \(0, 3, 4\)"):
        check_input(torch.rand(0, 3, 4), "B, T, F", "net")
    with pytest.raises(ShapeError, match=r"with H >= 1"):
        check_input(torch.rand(2, 1, 0, 5), "B, C, H, W", "net")
    with pytest.raises(ShapeError, match="got list"):
        check_input([1.0, 2.0], "B, F", "net")


def test_check_input_refuses_other_dtypes_and_names_the_conversion() -> None:
    with pytest.raises(ShapeError, match=r"as torch.float32 .* got torch.float64; convert the input with \.float\(\)"):
        check_input(torch.rand(2, 3).double(), "B, F", "net", dtype=torch.float32)
    with pytest.raises(ShapeError, match=r"got torch.int64; convert the input with \.float\(\)"):
        check_input(torch.ones(2, 3, dtype=torch.long), "B, F", "net", dtype=torch.float32)
    with pytest.raises(ShapeError, match=r"as torch.float64 .* with \.double\(\)"):
        check_input(torch.rand(2, 3), "B, F", "net", dtype=torch.float64)
    with pytest.raises(ShapeError, match="pass integer token ids"):
        check_input(torch.rand(2, 3), "B, L", "net", dtype=torch.long)
    check_input(torch.ones(2, 3, dtype=torch.int32), "B, L", "net", dtype=torch.long)  # any integer ids


def test_check_input_lets_autocast_choose_the_compute_dtype() -> None:
    x = torch.rand(2, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        check_input(x, "B, F", "net", dtype=torch.float32)
        with pytest.raises(ShapeError, match="float64"):  # autocast leaves float64 alone, so the model would fail
            check_input(x.double(), "B, F", "net", dtype=torch.float32)
    with pytest.raises(ShapeError, match="bfloat16"):
        check_input(x, "B, F", "net", dtype=torch.float32)


def test_check_token_ids_refuses_ids_outside_the_vocabulary() -> None:
    check_token_ids(torch.tensor([[0, 4]]), 5, "net")
    check_token_ids(torch.zeros(2, 0, dtype=torch.long), 5, "net")
    with pytest.raises(ShapeError, match=r"net got token ids in \[0, 5\] but vocab_size is 5 \(ids 0..4\)"):
        check_token_ids(torch.tensor([[0, 5]]), 5, "net")
    with pytest.raises(ShapeError, match=r"in \[-1, 2\]"):
        check_token_ids(torch.tensor([-1, 2]), 5, "net")


def test_weights_dtype_follows_the_module() -> None:
    assert weights_dtype(nn.Linear(2, 2)) == torch.float32
    assert weights_dtype(nn.Linear(2, 2).double()) == torch.float64
    assert weights_dtype(nn.ReLU()) == torch.get_default_dtype()
