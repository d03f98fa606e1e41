"""ConvLSTM's traced time loop (the scripted scan it takes while traced) against its eager Python loop."""

from __future__ import annotations

import pytest
import torch

from cnnlstm.export.tracing import tracing_quietly
from cnnlstm.layers.conv_lstm import ConvLSTM
from cnnlstm.layers.conv_lstm_scan import scan_direction

OPTIONS = [
    dict(), dict(bidirectional=True, num_layers=2), dict(peephole=True, spatial_size=(6, 5)), dict(layer_norm=True)
]
IDS = ["plain", "bidirectional-2-layers", "peephole", "layer-norm"]


def _assert_same(got: tuple, expected: tuple) -> None:
    out, states = got
    expected_out, expected_states = expected
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-6)
    for (h, c), (h_ref, c_ref) in zip(states, expected_states, strict=True):
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_direction_equals_the_eager_loop(options: dict, reverse: bool) -> None:
    stack = ConvLSTM(2, 3, kernel_size=(3, 2), **options).eval()  # an even kernel: asymmetric "same" padding
    cell = stack.cells[0]
    x = torch.randn(2, 4, 2, 6, 5)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    for m in (None, mask):
        with torch.no_grad():
            expected = stack._run_direction(cell, x, cell.init_state(x), m, reverse)
            got = scan_direction(cell, x, cell.init_state(x), m, reverse)
        _assert_same((got[0], [got[1]]), (expected[0], [expected[1]]))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
@pytest.mark.parametrize("padded", [False, True])
def test_traced_conv_lstm_keeps_time_dynamic(options: dict, padded: bool) -> None:
    # Traced on T=4, run on T=6: an unrolled Python loop would have frozen four steps into the graph.
    stack = ConvLSTM(2, 3, kernel_size=(3, 2), **options).eval()
    x = torch.randn(2, 6, 2, 6, 5)
    lengths = torch.tensor([6, 3]) if padded else torch.tensor([6, 6])

    class Run(torch.nn.Module):  # lengths by keyword, as the models call it
        def __init__(self) -> None:
            super().__init__()
            self.stack = stack

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple:
            out, states = self.stack(x, lengths=lengths)
            return out, tuple(states)  # a traced module returns tensors and tuples, not lists

    with torch.no_grad(), tracing_quietly():
        traced = torch.jit.trace(Run(), (x[:, :4], torch.tensor([4, 2])), check_trace=False)
        expected = stack(x, lengths=lengths)
        got = traced(x, lengths)
    assert "prim::Loop" in str(traced.inlined_graph)
    assert x.shape[1] != 4 and got[0].shape[1] == x.shape[1]
    _assert_same(got, expected)


def test_the_exported_copy_swaps_no_module_and_leaves_the_model_alone() -> None:
    from cnnlstm import create_model
    from cnnlstm.export.tracing import exportable_copy

    model = create_model("conv_lstm_forecaster", in_channels=1, hidden_size=4).train()
    clone = exportable_copy(model)
    assert [type(m) for m in clone.modules()] == [type(m) for m in model.modules()]  # nothing rewritten
    assert not clone.training and not any(p.requires_grad for p in clone.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
