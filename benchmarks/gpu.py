"""``python -m benchmarks gpu``: training throughput on a GPU, through the library's own training path.

The headline path is what ``cnnlstm fit`` runs: the registered ``frame_lstm`` (timm ``tf_efficientnet_lite0`` per
frame, LSTM 512, 101 classes), the classification task, and a Trainer from :func:`make_trainer` with the
recipe settings ``precision: bf16-mixed`` and ``channels_last: true``. Beside it, on the same model class, batch
and card: a hand-written bf16 + channels_last loop (the engine's overhead is the difference), the folded fp32
step, and the per-frame Python loop the tutorials write. ``lstm_fcn`` at the paper's widths runs through the
same engine path. Both also run with ``trainer.cuda_graphs`` (the model's forward and backward replayed from
CUDA graphs, :mod:`cnnlstm.tasks.graphs`). Batches are resident on the device for every path, as in a reference
measurement that times the training step rather than the input pipeline.

Every path is timed as ``--gpu-repeats`` windows of ``--gpu-steps`` steps after ``--gpu-warmup`` steps, with the
device synchronised at window edges only; the median window is reported. ``--gpu-small`` shrinks everything so
the suite can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HELP", "add_arguments", "run", "markdown", "engine_rate", "engine_syncs", "loop_rate"]

HELP = "GPU training throughput: frame_lstm (EfficientNet-Lite0, bf16, channels_last) through the engine vs loops"

#: (clips B, frames T, side S, classes, LSTM hidden) of the frame model; (batch, steps, channels) of lstm_fcn
FULL = {"frames": (32, 16, 112, 101, 512), "series": (256, 100, 6)}
SMALL = {"frames": (2, 3, 32, 5, 16), "series": (8, 20, 3)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the ``gpu`` suite."""
    p.add_argument("--gpu-steps", type=int, default=10, help="training steps per timed window")
    p.add_argument("--gpu-repeats", type=int, default=3, help="timed windows per path (the median is reported)")
    p.add_argument("--gpu-warmup", type=int, default=5, help="untimed steps before the first window")
    p.add_argument("--gpu-small", action="store_true", help="tiny sizes, to check the suite on a CPU")
    p.add_argument("--gpu-compile", action="store_true", help="also time the engine path with trainer.compile")
    p.add_argument("--gpu-anchor", default=None, metavar="PATH",
                   help="the anchor script (gpu_reference.py): also time its LRCN model and training step in this "
                        "suite's windows (the script itself times one window)")
    p.add_argument("--gpu-variants", action="store_true",
                   help="also time the engine with channels-last input frames, at 2x and 4x the batch, lstm_fcn "
                        "in bf16, and profile engine (with and without trainer.cuda_graphs) and hand-loop windows "
                        "(top kernels and host time per step)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _windows(marks: list[float], steps: int, items: int) -> list[float]:
    """Items/s of each window between consecutive time marks."""
    return [items * steps / (b - a) for a, b in zip(marks, marks[1:], strict=False)]


class _Batches(torch.utils.data.Dataset):
    """The same device-resident batch, ``n`` times (the DataLoader hands it over with ``batch_size=None``)."""

    def __init__(self, batch: dict[str, Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.batch


class _WindowTimer:
    """A Lightning callback that marks the (synchronised) time at the start of every window of steps."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.marks: list[float] = []

    def hook(self) -> Any:
        import lightning.pytorch as pl

        timer = self

        class Hook(pl.Callback):
            def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
                if batch_idx >= timer.warmup and (batch_idx - timer.warmup) % timer.steps == 0:
                    _sync(timer.device)
                    timer.marks.append(time.perf_counter())

            def on_train_end(self, trainer: Any, module: Any) -> None:
                _sync(timer.device)
                timer.marks.append(time.perf_counter())

        return Hook()


def engine_rate(model: nn.Module, batch: dict[str, Tensor], *, items: int, trainer: dict[str, Any], warmup: int,
                steps: int, repeats: int, device: torch.device) -> list[float]:
    """Items/s of ``model`` trained by the engine (classification task + :func:`make_trainer`), per window.

    Args:
        model: a registered classification model (moved and formatted here as ``trainer`` says).
        batch: a device-resident batch, e.g. ``{"x": ..., "y": ...}``.
        items: items per batch (clips or series).
        trainer: recipe ``trainer`` settings (``precision``, ``channels_last``, ``compile``, ``accelerator``).
        warmup: untimed steps first.
        steps: steps per window.
        repeats: windows.
        device: where the batch lives.

    Returns:
        items/s of each window.

    Example:
        >>> engine_rate(model, {"x": x, "y": y}, items=32, trainer={"precision": "bf16-mixed"},
        ...             warmup=5, steps=10, repeats=3, device=torch.device("cuda"))  # doctest: +SKIP
    """
    timer = _WindowTimer(warmup, steps, device)
    _train(model, batch, trainer=trainer, total=warmup + steps * repeats, device=device, callbacks=[timer.hook()])
    return _windows(timer.marks, steps, items)


def _train(model: nn.Module, batch: dict[str, Tensor], *, trainer: dict[str, Any], total: int, device: torch.device,
           callbacks: list[Any]) -> None:
    """``total`` engine training steps on the same resident batch, with ``callbacks`` on the Trainer."""
    from benchmarks.runs import quiet
    from cnnlstm.engine.fit import apply_speed_settings
    from cnnlstm.engine.trainer import make_trainer
    from cnnlstm.tasks import build_task

    apply_speed_settings(model, trainer)
    task = build_task("classification", model, {}, {"lr": 1e-3, "scheduler": "none"})
    task.use_cuda_graphs(trainer.get("cuda_graphs", False))
    section = {"max_epochs": 1, "accelerator": "gpu" if device.type == "cuda" else "cpu", "devices": 1,
               "limit_val_batches": 0, "enable_progress_bar": False, "log_every_n_steps": 50,
               "precision": trainer.get("precision", "32-true")}
    with quiet():
        pl_trainer, _ = make_trainer(section, {"enabled": False}, task, None, checkpoints=False, callbacks=callbacks)
        loader = torch.utils.data.DataLoader(_Batches(batch, total), batch_size=None, shuffle=False)
        pl_trainer.fit(task, train_dataloaders=loader)


def engine_syncs(model: nn.Module, batch: dict[str, Tensor], *, trainer: dict[str, Any], steps: int,
                 device: torch.device) -> dict[str, int]:
    """Where the engine's training steps make the CPU wait for the GPU: ``{"file:line": count}``.

    Runs ``steps`` engine steps under ``torch.cuda.set_sync_debug_mode("warn")``, which warns at every
    operation that synchronises the host with the device (``.item()``, ``bool(tensor)``, a copy to pageable
    memory). An empty result means the CPU can queue steps ahead of the GPU. CUDA only (``{}`` elsewhere).

    Example:
        >>> engine_syncs(model, {"x": x, "y": y}, trainer={}, steps=5, device=torch.device("cuda"))  # doctest: +SKIP
    """
    import warnings

    if device.type != "cuda":
        return {}
    counts: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            engine_rate(model, batch, items=1, trainer=trainer, warmup=1, steps=steps, repeats=1, device=device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            where = f"{Path(w.filename).name}:{w.lineno}"
            counts[where] = counts.get(where, 0) + 1
    return counts


def loop_rate(step: Callable[[], None], *, items: int, warmup: int, steps: int, repeats: int,
              device: torch.device) -> list[float]:
    """Items/s of a hand-written training ``step``, per window (same windows as :func:`engine_rate`).

    Example:
        >>> loop_rate(lambda: None, items=1, warmup=0, steps=1, repeats=2, device=torch.device("cpu"))  # doctest: +SKIP
    """
    for _ in range(warmup):
        step()
    marks = []
    for _ in range(repeats):
        _sync(device)
        marks.append(time.perf_counter())
        for _ in range(steps):
            step()
    _sync(device)
    marks.append(time.perf_counter())
    return _windows(marks, steps, items)


def _profile_table(prof: Any, steps: int) -> str:
    """The top kernels by device time, and the host time per step, of a finished ``torch.profiler`` run."""
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    events = prof.key_averages()
    host_us = sum(e.self_cpu_time_total for e in events) / steps
    # by device time (what the GPU does), then by host time (what keeps the CPU from queueing the next step)
    return (f"host time per step {host_us / 1e3:.2f} ms\n" + events.table(sort_by=sort, row_limit=15) + "\n"
            + events.table(sort_by="self_cpu_time_total", row_limit=15))


def _profiler(device: torch.device) -> Any:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=acts)


def loop_profile(step: Callable[[], None], *, device: torch.device, warmup: int = 5, steps: int = 5) -> str:
    """Profile ``steps`` hand-loop steps after ``warmup``: :func:`_profile_table`."""
    for _ in range(warmup):
        step()
    _sync(device)
    with _profiler(device) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    return _profile_table(prof, steps)


def engine_profile(model: nn.Module, batch: dict[str, Tensor], *, trainer: dict[str, Any], device: torch.device,
                   warmup: int = 5, steps: int = 5) -> str:
    """Profile ``steps`` engine training steps after ``warmup`` (the Trainer of :func:`engine_rate`)."""
    import lightning.pytorch as pl

    holder: dict[str, Any] = {}

    class Hook(pl.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == warmup:
                _sync(device)
                holder["prof"] = _profiler(device)
                holder["prof"].__enter__()

        def on_train_end(self, trainer: Any, module: Any) -> None:
            _sync(device)
            holder["prof"].__exit__(None, None, None)

    _train(model, batch, trainer=trainer, total=warmup + steps, device=device, callbacks=[Hook()])
    return _profile_table(holder["prof"], steps)


def _hand_step(model: nn.Module, x: Tensor, y: Tensor, *, bf16: bool, per_frame: bool = False,
               clip: float | None = None) -> Callable[[], None]:
    """A bare AdamW training step on ``model`` (optionally clipping the gradient norm at ``clip``)."""
    from benchmarks.speed_frames import per_frame_loop

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    device = x.device

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = per_frame_loop(model, x) if per_frame else model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()

    return step


def anchor_model(path: str | Path) -> type[nn.Module]:
    """The anchor script's ``LRCN`` class, read from its source without running the script (its top level times
    every path as it is imported): its imports and that class only.

    Example:
        >>> LRCN = anchor_model(".gpuref/gpu_reference.py")  # doctest: +SKIP
        >>> model = LRCN(folded=True, n_cls=101, hidden=512)  # doctest: +SKIP
    """
    import ast

    source = Path(path).read_text()
    tree = ast.parse(source)
    keep = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)
            or (isinstance(node, ast.ClassDef) and node.name == "LRCN")]
    if not any(isinstance(node, ast.ClassDef) for node in keep):
        raise SystemExit(f"{path} defines no LRCN class; pass the anchor script gpu_reference.py")
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102 - our file
    return namespace["LRCN"]


def _summary(rates: list[float]) -> dict[str, Any]:
    return {"rates": [round(r, 1) for r in rates], "median": round(statistics.median(rates), 1)}


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure every path; returns ``{"device", "sizes", "frame_paths", "series_paths", "check"}``.

    Example:
        >>> run(build_parser().parse_args(["gpu", "--gpu-small"]), print)  # doctest: +SKIP
    """
    from benchmarks.speed_frames import per_frame_loop
    from cnnlstm import create_model

    sizes = SMALL if args.gpu_small else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    B, T, S, K, hidden = sizes["frames"]
    encoder = "cnn" if args.gpu_small else "timm:tf_efficientnet_lite0"
    encoder_kwargs = {"widths": (8, 16)} if args.gpu_small else {}
    windows = {"warmup": args.gpu_warmup, "steps": args.gpu_steps, "repeats": args.gpu_repeats, "device": device}

    def frame_model() -> nn.Module:
        torch.manual_seed(0)
        return create_model("frame_lstm", num_classes=K, encoder=encoder, encoder_kwargs=encoder_kwargs,
                            hidden_size=hidden, image_size=S).to(device)

    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, T, 3, S, S, device=device, generator=gen)  # (B, T, C, H, W), random: never time zeros
    y = torch.randint(0, K, (B,), device=device, generator=gen)  # (B,)

    model = frame_model().eval()
    with torch.no_grad():  # the loop computes the same function, or its speed means nothing
        check = float((model(x[:4]) - per_frame_loop(model, x[:4])).abs().max())
    log(f"gpu: folded vs per-frame loop max |diff| {check:.2e} on {device}")

    frame_paths: dict[str, Any] = {}

    def record(paths: dict[str, Any], name: str, rates: list[float], unit: str) -> None:
        paths[name] = _summary(rates)  # logged at once: a call cut short by its time limit keeps what it measured
        log(f"gpu: {name}: {paths[name]['median']} {unit} (windows {', '.join(f'{r:.0f}' for r in rates)})")

    def clips(name: str, rates: list[float]) -> None:
        record(frame_paths, name, rates, "clips/s")

    bf16 = {"precision": "bf16-mixed", "channels_last": True}
    graphs = {**bf16, "cuda_graphs": True}
    batch = {"x": x, "y": y}
    # Most telling paths first: a call cut short by its time limit keeps them (each is logged as it finishes).
    clips("cnnlstm engine, bf16-mixed + channels_last",
          engine_rate(frame_model(), batch, items=B, trainer=bf16, **windows))
    m = frame_model().to(memory_format=torch.channels_last)
    clips("hand loop, bf16 autocast + channels_last",
          loop_rate(_hand_step(m, x, y, bf16=True), items=B, **windows))
    # the anchor's input layout: the folded frames already NHWC in memory, so the first conv needs no copy
    x_cl = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view_as(x)
    if args.gpu_anchor:
        torch.manual_seed(0)
        lrcn = anchor_model(args.gpu_anchor)(folded=True, n_cls=K, hidden=hidden)
        lrcn = lrcn.to(device).to(memory_format=torch.channels_last)
        clips("anchor script's model and step (bf16 autocast + channels_last, NHWC input), these windows",
              loop_rate(_hand_step(lrcn, x_cl, y, bf16=True), items=B, **windows))

    NB, L, C = sizes["series"]
    xs = torch.randn(NB, L, C, device=device, generator=gen)  # (B, L, C)
    ys = torch.randint(0, 4, (NB,), device=device, generator=gen)  # (B,)
    series = {"x": xs, "y": ys}

    def series_model() -> nn.Module:
        torch.manual_seed(0)
        return create_model("lstm_fcn", in_channels=C, num_classes=4, hidden_size=128, dropout=0.8,
                            filters=(128, 256, 128), kernel_sizes=(8, 5, 3)).to(device)

    series_paths: dict[str, Any] = {}

    def samples(name: str, rates: list[float]) -> None:
        record(series_paths, name, rates, "samples/s")

    fp32 = {"precision": "32-true"}
    samples("cnnlstm engine, fp32", engine_rate(series_model(), series, items=NB, trainer=fp32, **windows))
    samples("hand loop, fp32", loop_rate(_hand_step(series_model(), xs, ys, bf16=False), items=NB, **windows))
    samples("cnnlstm engine, fp32 + cuda_graphs",
            engine_rate(series_model(), series, items=NB, trainer={**fp32, "cuda_graphs": True}, **windows))
    clips("cnnlstm engine, bf16-mixed + channels_last + cuda_graphs",
          engine_rate(frame_model(), batch, items=B, trainer=graphs, **windows))
    if args.gpu_compile:
        clips("cnnlstm engine, bf16-mixed + channels_last + compile",
              engine_rate(frame_model(), batch, items=B, trainer={**bf16, "compile": True}, **windows))
    profiles: dict[str, Any] = {}
    if args.gpu_variants:
        clips("cnnlstm engine, bf16-mixed + channels_last + cuda_graphs, NHWC input",
              engine_rate(frame_model(), {"x": x_cl, "y": y}, items=B, trainer=graphs, **windows))
        for k in (2, 4):
            xk, yk = x.repeat(k, 1, 1, 1, 1), y.repeat(k)
            for name, settings in (("", bf16), (" + cuda_graphs", graphs)):
                clips(f"cnnlstm engine, bf16-mixed + channels_last{name}, batch {k * B}",
                      engine_rate(frame_model(), {"x": xk, "y": yk}, items=k * B, trainer=settings, **windows))
        samples("cnnlstm engine, bf16-mixed",
                engine_rate(series_model(), series, items=NB, trainer={"precision": "bf16-mixed"}, **windows))
        samples("cnnlstm engine, bf16-mixed + cuda_graphs",
                engine_rate(series_model(), series, items=NB, trainer={"precision": "bf16-mixed", "cuda_graphs": True},
                            **windows))
        profiles["engine_syncs_frame_lstm"] = engine_syncs(frame_model(), batch, trainer=bf16, steps=10, device=device)
        log(f"gpu: host-device syncs in 11 engine steps (frame_lstm): {profiles['engine_syncs_frame_lstm'] or 'none'}")
        profiles["engine"] = engine_profile(frame_model(), batch, trainer=bf16, device=device)
        profiles["engine + cuda_graphs"] = engine_profile(frame_model(), batch, trainer=graphs, device=device)
        m = frame_model().to(memory_format=torch.channels_last)
        profiles["hand loop"] = loop_profile(_hand_step(m, x, y, bf16=True), device=device)
        for name in ("engine", "engine + cuda_graphs", "hand loop"):
            log(f"gpu: profile of 5 frame_lstm steps, {name}:\n{profiles[name]}")
    clips("cnnlstm engine, fp32", engine_rate(frame_model(), batch, items=B, trainer=fp32, **windows))
    clips("per-frame Python loop, fp32",
          loop_rate(_hand_step(frame_model(), x, y, bf16=False, per_frame=True), items=B, **windows))
    syncs = engine_syncs(series_model(), series, trainer=fp32, steps=10, device=device)
    log(f"gpu: host-device syncs in 11 engine steps (lstm_fcn): {syncs or 'none'}")
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "sizes": {"frames": dict(zip(("B", "T", "S", "classes", "hidden"), (B, T, S, K, hidden), strict=True)),
                  "encoder": encoder, "series": dict(zip(("B", "L", "C"), (NB, L, C), strict=True)), **{
                      k: v for k, v in windows.items() if k != "device"}},
        "frame_paths": frame_paths,
        "series_paths": series_paths,
        "engine_syncs_in_11_steps": syncs,
        "profiles": profiles,
        "check_max_abs_diff": check,
    }


def markdown(record: dict[str, Any]) -> str:
    """The two throughput tables, each path beside the engine's headline figure.

    Example:
        >>> print(markdown(record))  # doctest: +SKIP
    """
    s = record["sizes"]
    f = s["frames"]
    lines = [f"Device: {record['device']}, torch {record['torch']}. frame_lstm: `{s['encoder']}` per frame, LSTM "
             f"{f['hidden']}, {f['classes']} classes, B={f['B']} clips x T={f['T']} frames x {f['S']}x{f['S']}, "
             f"AdamW; median of {s['repeats']} windows of {s['steps']} steps after {s['warmup']} warm-up steps.",
             "", "| path | clips/s | x per-frame loop |", "|---|---|---|"]
    base = record["frame_paths"]["per-frame Python loop, fp32"]["median"]
    for name, value in record["frame_paths"].items():
        lines.append(f"| {name} | {value['median']:.0f} | {value['median'] / base:.2f} |")
    ser = s["series"]
    lines += ["", f"lstm_fcn (LSTM 128 + conv 128/256/128), batch {ser['B']}, {ser['L']} steps x {ser['C']} channels:",
              "", "| path | samples/s | x hand loop fp32 |", "|---|---|---|"]
    hand = record["series_paths"]["hand loop, fp32"]["median"]
    for name, value in record["series_paths"].items():
        lines.append(f"| {name} | {value['median']:.0f} | {value['median'] / hand:.2f} |")
    if "engine_syncs_in_11_steps" in record and record["device"] != "cpu":
        syncs = record["engine_syncs_in_11_steps"]
        where = ", ".join(f"{k} x{v}" for k, v in syncs.items()) or "none"
        lines += ["", f"Host-device synchronisations in 11 engine training steps (lstm_fcn, fp32): {where}."]
    return "\n".join(lines)
