"""ConvLSTM against independent references: hand-written gate equations, per-step loops, reversed runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.conv_lstm import ConvLSTM, ConvLSTMCell


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _hand_step(cell: ConvLSTMCell, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, peep=None):
    """Shi et al. (2015) equations written out with F.conv2d, independent of the cell's code path."""
    w, b = cell.conv.weight, cell.conv.bias
    z = F.conv2d(torch.cat([x, h], dim=1), w, b, padding=w.shape[-1] // 2)
    zi, zf, zg, zo = z.split(cell.hidden_channels, dim=1)
    if peep is not None:
        zi, zf = zi + peep[0] * c, zf + peep[1] * c
    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
    if peep is not None:
        zo = zo + peep[2] * c_new
    return torch.sigmoid(zo) * torch.tanh(c_new), c_new


def _loop(lstm: ConvLSTM, x: torch.Tensor, cells: list[int], reverse: bool = False) -> torch.Tensor:
    """Reference single-direction run through cell.forward, one step at a time."""
    h_c = None
    out = [None] * x.shape[1]
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    for t in steps:
        h_c = lstm.cells[cells[0]](x[:, t], h_c)
        out[t] = h_c[0]
    return torch.stack(out, dim=1)


def test_cell_step_matches_hand_computation() -> None:
    cell = ConvLSTMCell(2, 3, kernel_size=3)
    x, h, c = torch.randn(2, 2, 5, 6), torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    want_h, want_c = _hand_step(cell, x, h, c)
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_h, want_h)
    torch.testing.assert_close(got_c, want_c)


def test_cell_with_fixed_weights_known_values() -> None:
    # 1x1 kernel, one input and one hidden channel: gates are scalars we can evaluate by hand.
    cell = ConvLSTMCell(1, 1, kernel_size=1)
    with torch.no_grad():
        cell.conv.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]).view(4, 2, 1, 1))
        cell.conv.bias.zero_()
    x, h, c = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 2.0)
    h1, c1 = cell(x, (h, c))
    # z = (i, f, g, o) = (1*x, 0, 2*x, 1*h) = (1, 0, 2, 0.5)
    c_want = _sigmoid(0.0) * 2.0 + _sigmoid(1.0) * math.tanh(2.0)
    h_want = _sigmoid(0.5) * math.tanh(c_want)
    assert c1.item() == pytest.approx(c_want, rel=1e-6)
    assert h1.item() == pytest.approx(h_want, rel=1e-6)


def test_peephole_cell_matches_hand_computation_and_checks_size() -> None:
    cell = ConvLSTMCell(2, 3, kernel_size=3, peephole=True, spatial_size=(5, 6))
    x, h, c = torch.randn(2, 2, 5, 6), torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    want_h, want_c = _hand_step(cell, x, h, c, peep=cell.peephole)
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_h, want_h)
    torch.testing.assert_close(got_c, want_c)
    with pytest.raises(ShapeError, match="spatial_size"):
        cell(torch.randn(2, 2, 4, 4))
    with pytest.raises(ConfigError, match="spatial_size"):
        ConvLSTMCell(2, 3, 3, peephole=True)


def test_forget_bias_starts_at_one() -> None:
    cell = ConvLSTMCell(2, 3, kernel_size=3)
    torch.testing.assert_close(cell.conv.bias[3:6], torch.ones(3))
    assert cell.conv.bias[:3].abs().max() < 1


@pytest.mark.parametrize("dims,size", [(1, (7,)), (2, (4, 5)), (3, (2, 3, 3))])
def test_stack_matches_per_step_cell_loop(dims: int, size: tuple[int, ...]) -> None:
    lstm = ConvLSTM(2, [3, 4], kernel_size=3, num_layers=2, dims=dims)
    x = torch.randn(2, 4, 2, *size)
    out, states = lstm(x)
    ref = _loop(lstm, _loop(lstm, x, [0]), [1])
    assert out.shape == (2, 4, 4, *size)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(states[1][0], ref[:, -1])


def test_bidirectional_is_forward_run_concat_reversed_run() -> None:
    lstm = ConvLSTM(2, 3, kernel_size=3, num_layers=2, bidirectional=True)
    x = torch.randn(2, 4, 2, 5, 5)
    out, states = lstm(x)
    # Layer by layer: forward cell on x, backward cell on time-reversed x (re-reversed), concat channels.
    l0 = torch.cat([_loop(lstm, x, [0]), _loop(lstm, x.flip(1), [1]).flip(1)], dim=2)
    l1 = torch.cat([_loop(lstm, l0, [2]), _loop(lstm, l0.flip(1), [3]).flip(1)], dim=2)
    assert out.shape == (2, 4, 6, 5, 5) and len(states) == 4
    torch.testing.assert_close(out, l1)
    torch.testing.assert_close(states[3][0], l1[:, 0, 3:])  # backward final state = its output at t=0
    torch.testing.assert_close(states[2][0], l1[:, -1, :3])


def test_two_halves_with_carried_state_equal_one_run() -> None:
    lstm = ConvLSTM(1, [3, 2], kernel_size=(3, 3), num_layers=2)
    x = torch.randn(2, 6, 1, 4, 4)
    full, full_states = lstm(x)
    first, mid = lstm(x[:, :4])
    second, end = lstm(x[:, 4:], state=mid)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full)
    for (h, c), (h_ref, c_ref) in zip(end, full_states, strict=True):
        torch.testing.assert_close(h, h_ref)
        torch.testing.assert_close(c, c_ref)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_invariance(bidirectional: bool) -> None:
    lstm = ConvLSTM(2, [3, 2], kernel_size=3, num_layers=2, bidirectional=bidirectional).eval()
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 2, 4, 4)  # padded steps hold noise: it must not leak
    out, states = lstm(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, alone_states = lstm(x[b : b + 1, :n])
        torch.testing.assert_close(out[b : b + 1, :n], alone, rtol=1e-5, atol=1e-5)
        assert (out[b, n:] == 0).all()  # padded outputs are zero
        for (h, c), (h_ref, c_ref) in zip(states, alone_states, strict=True):
            torch.testing.assert_close(h[b : b + 1], h_ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(c[b : b + 1], c_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", [{"peephole": True, "spatial_size": (4, 4)}, {"layer_norm": True}])
def test_variants_run_differ_and_learn(option: dict) -> None:
    torch.manual_seed(0)
    plain = ConvLSTM(2, 3, kernel_size=3)
    torch.manual_seed(0)
    variant = ConvLSTM(2, 3, kernel_size=3, **option)
    if option.get("layer_norm"):
        # The shift of the norm replaces the conv bias; give both the same gate weights to compare like with like.
        assert variant.cells[0].conv.bias is None
        variant.cells[0].conv.weight.data.copy_(plain.cells[0].conv.weight.data)
    x = torch.randn(2, 3, 2, 4, 4)
    out, _ = variant(x)
    assert out.shape == (2, 3, 3, 4, 4) and torch.isfinite(out).all()
    assert not torch.allclose(out, plain(x)[0], atol=1e-4)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in variant.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_layer_norm_normalises_each_gate() -> None:
    cell = ConvLSTMCell(2, 3, kernel_size=3, layer_norm=True)
    x, h, c = torch.randn(2, 2, 5, 5) * 10, torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    z = F.conv2d(torch.cat([x, h], 1), cell.conv.weight, None, padding=1)
    zi, zf, zg, zo = (F.layer_norm(g, g.shape[1:]) + cell.gate_norm.bias[k * 3 : k * 3 + 3].view(1, 3, 1, 1)
                      for k, g in enumerate(z.split(3, dim=1)))
    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
    h_new = torch.sigmoid(zo) * torch.tanh(F.layer_norm(c_new, c_new.shape[1:]))
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_c, c_new, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_h, h_new, rtol=1e-5, atol=1e-5)


def test_inputless_cell_runs_on_state_alone() -> None:
    cell = ConvLSTMCell(0, 3, kernel_size=3)
    h, c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    want_h, want_c = _hand_step(cell, torch.zeros(2, 0, 4, 4), h, c)
    got_h, got_c = cell(None, (h, c))
    torch.testing.assert_close(got_h, want_h)
    torch.testing.assert_close(got_c, want_c)


def test_errors_name_the_layout() -> None:
    lstm = ConvLSTM(2, 3, kernel_size=3)
    with pytest.raises(ShapeError, match=r"\(B, T, C, S0, S1\) with C=2, got \(2, 2, 4, 4\)"):
        lstm(torch.randn(2, 2, 4, 4))
    with pytest.raises(ShapeError, match="lengths"):
        lstm(torch.randn(2, 3, 2, 4, 4), lengths=torch.tensor([4, 1]))
    with pytest.raises(ShapeError, match="state 0"):
        lstm(torch.randn(2, 3, 2, 4, 4), state=[(torch.zeros(2, 3, 5, 5), torch.zeros(2, 3, 5, 5))])
    with pytest.raises(ConfigError, match="num_layers"):
        ConvLSTM(2, [3, 4], kernel_size=3, num_layers=3)
