"""``trainer.cuda_graphs``: the bookkeeping of :class:`GraphedForward` on a CPU (a stand-in capture function
that does what ``make_graphed_callables`` does to a model's state), the real capture on a GPU, and the recipe
checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cnnlstm.engine.recipe import resolve_config
from cnnlstm.errors import ConfigError
from cnnlstm.tasks import build_task
from cnnlstm.tasks.graphs import GraphedForward


class ConvBnLstm(nn.Module):
    """A conv + batch-norm + LSTM classifier (batch norm: running statistics a capture's warm-up would move)."""

    input_names = ("x",)
    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.head = nn.Linear(5, 4)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, 3)
        h = torch.relu(self.bn(self.conv(x.transpose(1, 2)))).transpose(1, 2)  # (B, T, 6)
        out, _ = self.lstm(h)
        return self.head(out[:, -1])  # (B, 4)


class StandIn:
    """Does to the model what ``make_graphed_callables`` does before it returns: three warm-up passes and one
    captured pass, each a training forward and backward (moving batch-norm statistics), then the module."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[tuple[int, ...], ...]] = []
        self.fail = fail

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> nn.Module:
        self.calls.append(tuple(tuple(a.shape) for a in args))
        params = [p for p in module.parameters() if p.requires_grad]
        for _ in range(4):  # autograd.grad, as make_graphed_callables: no .grad is written
            torch.autograd.grad(module(*args).sum(), params)
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        return module


def _train(model: nn.Module, forward, batches: list[Tensor], y: Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x in batches:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(forward(x), y[: len(x)]).backward()
        opt.step()


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    a = ConvBnLstm()
    b = ConvBnLstm()
    b.load_state_dict(a.state_dict())
    return a, b


def test_graphed_training_matches_eager_training_state_for_state() -> None:
    # The capture's warm-up passes must not leave their batch-norm updates (or gradients) behind.
    graphed_model, eager_model = _pair()
    stand_in = StandIn()
    graphs = GraphedForward(graphed_model, make_graphed=stand_in, device_type="cpu")
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 7, 3, generator=gen) for _ in range(4)]
    y = torch.randint(0, 4, (8,), generator=gen)
    _train(graphed_model, lambda x: graphs({"x": x}), batches, y)
    _train(eager_model, lambda x: eager_model(x), batches, y)
    assert len(stand_in.calls) == 1  # one signature, captured once
    for (name, value), (_, ref) in zip(graphed_model.state_dict().items(), eager_model.state_dict().items(),
                                       strict=True):
        torch.testing.assert_close(value, ref, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_the_graphs_static_inputs_are_private_copies_of_the_first_batch() -> None:
    # Later batches are copied into the static inputs: the first batch's own memory must not be them.
    model, _ = _pair()
    seen: list[Tensor] = []

    def stand_in(module: nn.Module, args: tuple[Tensor, ...]) -> nn.Module:
        seen.extend(args)
        return module

    x = torch.randn(8, 7, 3)
    GraphedForward(model, make_graphed=stand_in, device_type="cpu")({"x": x})
    assert seen[0].data_ptr() != x.data_ptr() and torch.equal(seen[0], x)


def test_one_capture_per_signature_then_eager_with_one_warning() -> None:
    model, _ = _pair()
    stand_in = StandIn()
    graphs = GraphedForward(model, make_graphed=stand_in, device_type="cpu", max_graphs=2)
    for batch in (8, 8, 5, 8, 5):  # a full batch and the last, smaller one: two graphs
        graphs({"x": torch.randn(batch, 7, 3)})
    assert stand_in.calls == [((8, 7, 3),), ((5, 7, 3),)]
    with pytest.warns(UserWarning, match="more than 2 batch shapes"):
        graphs({"x": torch.randn(3, 7, 3)})
    graphs({"x": torch.randn(4, 7, 3)})  # warned once only (pytest's filter would fail on a second warning here)
    assert len(stand_in.calls) == 2 and len(graphs.graphs) == 2


def test_unfreezing_parameters_is_a_new_signature() -> None:
    model, _ = _pair()
    stand_in = StandIn()
    graphs = GraphedForward(model, make_graphed=stand_in, device_type="cpu")
    model.conv.requires_grad_(False)
    graphs({"x": torch.randn(8, 7, 3)})
    model.conv.requires_grad_(True)  # optim.unfreeze_at_epoch: the old graph computes no conv gradients
    graphs({"x": torch.randn(8, 7, 3)})
    assert len(stand_in.calls) == 2


def test_evaluation_and_no_grad_and_other_devices_run_eagerly() -> None:
    model, _ = _pair()
    stand_in = StandIn()
    graphs = GraphedForward(model, make_graphed=stand_in, device_type="cpu")
    with torch.no_grad():
        graphs({"x": torch.randn(8, 7, 3)})
    model.eval()
    graphs({"x": torch.randn(8, 7, 3)})
    model.train()
    assert not GraphedForward(model, make_graphed=stand_in).eligible({"x": torch.randn(8, 7, 3)})  # cuda only
    assert stand_in.calls == []


def test_a_failed_capture_warns_once_restores_the_statistics_and_trains_eagerly() -> None:
    model, reference = _pair()
    stand_in = StandIn(fail=True)
    graphs = GraphedForward(model, make_graphed=stand_in, device_type="cpu")
    x = torch.randn(8, 7, 3)
    with pytest.warns(UserWarning, match="cannot be captured .*RuntimeError: operation not permitted"):
        out = graphs({"x": x})
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(out, reference(x), rtol=0, atol=0)  # the same batch-norm update as eager
    torch.testing.assert_close(model.bn.running_mean, reference.bn.running_mean, rtol=0, atol=0)
    graphs({"x": x})
    assert len(stand_in.calls) == 1 and graphs.failed is not None


def test_the_task_routes_training_forwards_through_its_graphs_and_keeps_its_state_dict() -> None:
    model, _ = _pair()
    task = build_task("classification", model, None, {"lr": 1e-3})
    keys = list(task.state_dict())
    task.use_cuda_graphs(True)
    assert list(task.state_dict()) == keys  # the graphs are not a submodule: checkpoints look the same
    stand_in = StandIn()
    task.graphs = GraphedForward(model, make_graphed=stand_in, device_type="cpu")
    task.train()
    task({"x": torch.randn(8, 7, 3), "y": torch.zeros(8, dtype=torch.long)})
    assert stand_in.calls == [((8, 7, 3),)]
    task.use_cuda_graphs(False)
    assert task.graphs is None


@pytest.mark.parametrize(("setting", "message"), [
    ("trainer.compile=true", "trainer.compile"),
    ("trainer.tbptt_steps=4", "trainer.tbptt_steps"),
    ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
    ("trainer.devices=2", "more than one device"),
    ("trainer.devices=[0,1]", "more than one device"),
])
def test_the_recipe_refuses_what_a_replayed_step_cannot_do(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"trainer.cuda_graphs does not run with {message}"):
        resolve_config("basic_motions", overrides=["trainer.cuda_graphs=true", setting])
    resolve_config("basic_motions", overrides=["trainer.cuda_graphs=true", "trainer.devices=[0]"])


@pytest.mark.gpu
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_graph_steps_match_eager_steps_on_a_gpu(bf16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    graphed_model, eager_model = (m.cuda() for m in _pair())
    graphs = GraphedForward(graphed_model)
    gen = torch.Generator(device="cuda").manual_seed(1)
    batches = [torch.randn(8, 7, 3, device="cuda", generator=gen) for _ in range(5)]
    first = batches[0].clone()
    y = torch.randint(0, 4, (8,), device="cuda", generator=gen)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        _train(graphed_model, lambda x: graphs({"x": x}), batches, y)
        assert torch.equal(batches[0], first)  # later batches went into the graph's own input, not into this one
        _train(eager_model, lambda x: eager_model(x), batches, y)
    assert graphs.failed is None and len(graphs.graphs) == 1
    tol = 2e-2 if bf16 else 1e-5
    for (name, value), (_, ref) in zip(graphed_model.state_dict().items(), eager_model.state_dict().items(),
                                       strict=True):
        torch.testing.assert_close(value, ref, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.gpu
def test_a_cuda_graphs_fit_trains_and_is_reproduced_by_evaluating_its_run(tmp_path: Path) -> None:
    from cnnlstm.engine import evaluate_run, fit

    # 50 training series in batches of 16: full batches and a smaller last one, two graphs
    gen = np.random.default_rng(0)
    y = np.arange(70) % 2
    x = gen.normal(size=(70, 30, 2)).astype(np.float32) + y[:, None, None]  # (N, T, C), learnable
    np.savez(tmp_path / "series.npz", X_train=x[:50], y_train=y[:50], X_test=x[50:], y_test=y[50:])
    recipe = {"seed": 0, "data": {"spec": f"npz:{tmp_path / 'series.npz'}", "batch_size": 16},
              "model": {"name": "lstm_fcn", "hidden_size": 4, "filters": [4, 8, 4]},
              "trainer": {"max_epochs": 2, "accelerator": "gpu", "devices": 1, "enable_progress_bar": False,
                          "cuda_graphs": True}}
    with _no_capture_warning():
        run = fit(recipe, out=tmp_path / "run", verbose=False)
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in run.history)
    again = evaluate_run(run.run_dir, accelerator="gpu")
    for key, value in again.metrics.items():
        assert value == pytest.approx(run.metrics[key], abs=1e-4), key


def _no_capture_warning():
    import warnings
    from contextlib import contextmanager

    @contextmanager
    def guard():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        bad = [str(w.message) for w in caught if "cuda_graphs" in str(w.message)]
        assert not bad, bad

    return guard()
