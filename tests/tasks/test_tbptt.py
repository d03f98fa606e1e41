"""Truncated BPTT: k >= T is full BPTT exactly; k < T matches a hand-written LSTM whose state is detached every
k steps; chunked padded batches match each sequence run alone; the Lightning mixin steps once per chunk."""

from __future__ import annotations

import copy
import functools

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.data import pad_collate
from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model
from cnnlstm.models.cached_features import CachedFeaturesModel
from cnnlstm.tasks.tbptt import TBPTTMixin, lstm_chunk, truncated_bptt


def reference_lstm(lstm: nn.LSTM, x: Tensor, detach_every: int | None = None) -> Tensor:
    """The LSTM equations step by step from ``lstm``'s weights; (h, c) detached every ``detach_every`` steps."""
    B, T, _ = x.shape
    L, H = lstm.num_layers, lstm.hidden_size
    h = [x.new_zeros(B, H) for _ in range(L)]
    c = [x.new_zeros(B, H) for _ in range(L)]
    outs = []
    for t in range(T):
        if detach_every and t and t % detach_every == 0:
            h, c = [v.detach() for v in h], [v.detach() for v in c]
        inp = x[:, t]  # (B, F)
        for layer in range(L):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            i, f, g, o = (inp @ w_ih.T + h[layer] @ w_hh.T + b).chunk(4, dim=1)  # PyTorch's gate order
            c[layer] = f.sigmoid() * c[layer] + i.sigmoid() * g.tanh()
            h[layer] = o.sigmoid() * c[layer].tanh()
            inp = h[layer]
        outs.append(inp)
    return torch.stack(outs, dim=1)  # (B, T, H)


def grads(module: nn.Module) -> list[Tensor]:
    out = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    return out


@pytest.fixture
def setup():
    torch.manual_seed(0)
    lstm, head = nn.LSTM(3, 5, num_layers=2, batch_first=True), nn.Linear(5, 2)
    x, y = torch.randn(2, 7, 3), torch.randn(2, 7, 2)
    return lstm, head, x, y


def chunk_loss(head: nn.Linear, y: Tensor):
    return lambda out, state, chunk: F.mse_loss(head(out), y[:, chunk], reduction="sum")


def test_k_at_least_T_is_exactly_full_bptt(setup) -> None:
    lstm, head, x, y = setup
    F.mse_loss(head(lstm(x)[0]), y, reduction="sum").backward()
    full = grads(lstm) + grads(head)
    for k in (7, 100):
        result = truncated_bptt(functools.partial(lstm_chunk, lstm), x, k, chunk_loss(head, y))
        assert result.chunks == 1
        assert all(torch.equal(a, b) for a, b in zip(grads(lstm) + grads(head), full, strict=True))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_below_T_gives_the_truncated_gradient(setup, k: int) -> None:
    lstm, head, x, y = setup
    # Reference: a per-step LSTM whose state is cut every k steps, all chunk losses summed, one backward.
    F.mse_loss(head(reference_lstm(lstm, x, detach_every=k)), y, reduction="sum").backward()
    truncated = grads(lstm) + grads(head)
    F.mse_loss(head(reference_lstm(lstm, x)), y, reduction="sum").backward()
    full = grads(lstm) + grads(head)
    result = truncated_bptt(functools.partial(lstm_chunk, lstm), x, k, chunk_loss(head, y))
    got = grads(lstm) + grads(head)
    assert result.chunks == result.backward_chunks == -(-7 // k)
    for a, b in zip(got, truncated, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # The truncation is real: the recurrent weights' gradient differs from full BPTT's.
    assert not torch.allclose(got[1], full[1], atol=1e-4)
    assert not result.state[0].requires_grad  # the state handed on is detached


def test_chunked_padded_batch_matches_each_sequence_alone() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    lengths = torch.tensor([7, 4, 3, 1])  # ends mid-chunk, at a chunk boundary (3), in the first chunk
    x = torch.randn(4, 7, 3)
    outs = []

    def collect(out, state, chunk):
        outs.append(out)
        return None

    result = truncated_bptt(functools.partial(lstm_chunk, lstm), x, 3, collect, lengths=lengths)
    out = torch.cat(outs, dim=1)  # (B, T, H)
    h, c = result.state
    for b, n in enumerate(lengths.tolist()):
        alone, (h_b, c_b) = lstm(x[b : b + 1, :n])
        torch.testing.assert_close(out[b : b + 1, :n], alone, atol=1e-6, rtol=0)
        assert torch.equal(out[b, n:], torch.zeros_like(out[b, n:]))  # padding outputs zeros
        torch.testing.assert_close(h[:, b : b + 1], h_b, atol=1e-6, rtol=0)
        torch.testing.assert_close(c[:, b : b + 1], c_b, atol=1e-6, rtol=0)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unidirectional"):
        lstm_chunk(nn.LSTM(3, 4, batch_first=True, bidirectional=True), torch.randn(2, 3, 3))
    with pytest.raises(ConfigError, match="positive int"):
        truncated_bptt(lambda x, s, n: (x, s), torch.randn(2, 3, 1), 0, lambda o, s, c: None)


class TinyTask(TBPTTMixin, pl.LightningModule):
    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model = model
        self.configure_tbptt(k, clip_val=None)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.5)


class PerStepTask(TinyTask):
    def tbptt_loss(self, out, state, batch, chunk):
        return self.model.forward_head(out).logsumexp(-1).sum()  # every chunk has a loss: one step each


def features_model() -> CachedFeaturesModel:
    torch.manual_seed(0)
    model = create_model("frame_lstm", num_classes=3, in_channels=1, encoder_kwargs={"widths": (6,)},
                         hidden_size=4, freeze="all")
    return CachedFeaturesModel(model)


@pytest.mark.parametrize("task_cls", [TinyTask, PerStepTask])
def test_lightning_mixin_takes_one_optimiser_step_per_chunk(task_cls: type) -> None:
    torch.manual_seed(1)
    samples = [{"x": torch.randn(n, 6), "y": torch.tensor(n % 3)} for n in (5, 3)]
    batch = pad_collate(samples)
    ref = features_model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    state, steps = None, 0
    for start in range(0, 5, 2):  # the hand-written TBPTT: k=2, an SGD step after each chunk's backward
        chunk = slice(start, min(start + 2, 5))
        out, state = ref.forward_chunk(batch["x"][:, chunk], state, (batch["lengths"] - start).clamp(0, 2))
        if task_cls is PerStepTask:
            loss = ref.forward_head(out).logsumexp(-1).sum()
        elif chunk.stop == 5:
            loss = F.cross_entropy(ref.forward_head(state[0][-1]), batch["y"])
        else:
            loss = None
        if loss is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        state = tuple(s.detach() for s in state)

    task = task_cls(features_model(), k=2)
    before = copy.deepcopy(task.model.state_dict())
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=pad_collate))
    assert trainer.global_step == steps == (3 if task_cls is PerStepTask else 1)
    after = task.model.state_dict()
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(after[name], value, atol=1e-6, rtol=0)
    assert not torch.equal(after["model.rnn.lstm.weight_hh_l0"], before["model.rnn.lstm.weight_hh_l0"])


def test_mixin_refuses_a_model_without_forward_chunk() -> None:
    with pytest.raises(ConfigError, match="forward_chunk"):
        TinyTask(nn.Linear(2, 2), k=2)
