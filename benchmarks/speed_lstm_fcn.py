"""LSTM-FCN training samples/s: the cnnlstm engine vs hand-written PyTorch loops vs Keras 3 (torch backend).

Same architecture everywhere (LSTM 128 + conv 128/256/128 with kernels 8/5/3, dropout 0.8 on the LSTM branch),
same synthetic data (N series of 100 steps x 6 channels, 4 classes), batch 64, one epoch per timed unit.

- **cnnlstm engine**: ``lstm_fcn`` in the classification task under the Lightning Trainer the engine builds
  (AdamW + cosine schedule, automatic gradient clipping, per-step metrics, the padding collate), timed per
  epoch by a callback, so Trainer start-up is not counted.
- **hand loop, cnnlstm model**: the same ``lstm_fcn`` module in a bare ``for`` loop over tensor slices
  (isolates what the engine costs).
- **hand loop, plain module**: a 12-line ``nn.Module`` as in the anchor script (Conv1d with bias, plain
  BatchNorm): what a user would write without cnnlstm.
- **Keras 3, torch backend**: the Keras reference model, ``model.fit(epochs=1)``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.timing import interleaved

__all__ = ["PlainLSTMFCN", "lstm_fcn_speed"]

#: (series N, length L, channels C, classes K, batch B)
FCN_SIZES = {"full": (1024, 100, 6, 4, 64), "small": (32, 20, 6, 4, 16)}


class PlainLSTMFCN(nn.Module):
    """LSTM-FCN as a user writes it by hand (the anchor script's module), for the reference loop.

    Shape:
        - x: ``(B, L, C)``; output: ``(B, K)``.

    Example:
        >>> PlainLSTMFCN(6, 4)(torch.randn(2, 10, 6)).shape
        torch.Size([2, 4])
    """

    def __init__(self, channels: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.drop = nn.Dropout(0.8)
        layers: list[nn.Module] = []
        for c_in, c_out, k in ((channels, 128, 8), (128, 256, 5), (256, 128, 3)):
            layers += [nn.Conv1d(c_in, c_out, k, padding="same"), nn.BatchNorm1d(c_out), nn.ReLU()]
        self.fcn = nn.Sequential(*layers)
        self.fc = nn.Linear(hidden + 128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.lstm(x)  # (B, L, hidden)
        conv = self.fcn(x.transpose(1, 2)).mean(-1)  # (B, C, L) -> (B, 128)
        return self.fc(torch.cat([self.drop(h[:, -1]), conv], 1))  # (B, K)


def _hand_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, batch: int) -> None:
    model.train()
    for i in range(0, len(x), batch):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i : i + batch]), y[i : i + batch]).backward()
        opt.step()


def _keras_model(length: int, channels: int, num_classes: int) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"keras was imported with the {keras.backend.backend()} backend; set KERAS_BACKEND=torch")
    inp = keras.Input((length, channels))
    a = keras.layers.Dropout(0.8)(keras.layers.LSTM(128)(inp))
    y = inp
    for filters, kernel in ((128, 8), (256, 5), (128, 3)):
        y = keras.layers.Conv1D(filters, kernel, padding="same")(y)
        y = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(y))
    b = keras.layers.GlobalAveragePooling1D()(y)
    out = keras.layers.Dense(num_classes, activation="softmax")(keras.layers.concatenate([a, b]))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


class _EngineEpochs:
    """Runs the engine's Trainer for 1 + repeats epochs at once; each call returns the next epoch's rate."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int, repeats: int) -> None:
        import lightning.pytorch as pl
        from torch.utils.data import DataLoader

        from cnnlstm import create_model
        from cnnlstm.data.collate import pad_collate
        from cnnlstm.data.series_dataset import build_series_bundle
        from cnnlstm.engine.trainer import make_trainer
        from cnnlstm.tasks import build_task

        bundle = build_series_bundle("synthetic", (x, y), (x[:batch], y[:batch]))
        model = create_model("lstm_fcn", num_classes=int(y.max()) + 1, in_channels=x.shape[2])
        self.task = build_task("classification", model, bundle.info, {"lr": 1e-3})
        self.loader = DataLoader(bundle.train, batch_size=batch, shuffle=True, collate_fn=pad_collate)
        self.n = len(x)
        self.times: list[float] = []
        outer = self

        class _Clock(pl.Callback):
            def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
                self.start = time.perf_counter()

            def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
                outer.times.append(time.perf_counter() - self.start)

        section = {"max_epochs": repeats + 1, "accelerator": "cpu", "enable_progress_bar": False,
                   "limit_val_batches": 0}
        self.trainer, _ = make_trainer(section, {"enabled": False}, self.task, None)
        self.trainer.callbacks.append(_Clock())

    def run_all(self) -> None:
        from benchmarks.runs import quiet

        with quiet():
            self.trainer.fit(self.task, train_dataloaders=self.loader)


def lstm_fcn_speed(*, repeats: int, keras: bool = True, small: bool = False) -> dict[str, Any]:
    """Samples/s of one training epoch per path, median over ``repeats`` epochs after one warm-up epoch.

    The engine path trains its epochs in one ``Trainer.fit`` (Lightning cannot be paused between epochs), so
    it runs first as a block; the hand loops and Keras alternate epoch by epoch.

    Args:
        repeats: timed epochs per path.
        keras: include Keras 3 with its torch backend (needs ``pip install keras``).
        small: tiny sizes, for smoke tests.

    Returns:
        ``{"sizes", "paths": {name: {"rates", "median"}}, "ratios": {...}, "keras_error"?}``.

    Example:
        >>> lstm_fcn_speed(repeats=3)["ratios"]["engine / hand loop (cnnlstm model)"]  # doctest: +SKIP
    """
    from cnnlstm import create_model

    N, L, C, K, B = FCN_SIZES["small" if small else "full"]
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(N, L, C)).astype(np.float32)
    y_np = rng.integers(0, K, size=N)
    y_np[:K] = np.arange(K)  # every class present
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    torch.manual_seed(0)

    engine = _EngineEpochs(x_np, y_np, B, repeats)
    engine.run_all()
    results: dict[str, Any] = {"cnnlstm engine (Lightning)": {
        "rates": [round(N / t, 2) for t in engine.times[1:]],
        "median": round(N / float(np.median(engine.times[1:])), 2)}}

    ours = create_model("lstm_fcn", num_classes=K, in_channels=C)
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    plain = PlainLSTMFCN(C, K)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-3)

    def timed(fn: Any) -> float:
        start = time.perf_counter()
        fn()
        return N / (time.perf_counter() - start)

    paths = {
        "hand loop, cnnlstm lstm_fcn": lambda: timed(lambda: _hand_epoch(ours, ours_opt, x, y, B)),
        "hand loop, plain nn.Module": lambda: timed(lambda: _hand_epoch(plain, plain_opt, x, y, B)),
    }
    keras_error = None
    if keras:
        try:
            km = _keras_model(L, C, K)
            paths["Keras 3 (torch backend)"] = lambda: timed(lambda: km.fit(x_np, y_np, epochs=1, batch_size=B,
                                                                            verbose=0))
        except (ImportError, RuntimeError) as exc:
            keras_error = f"{type(exc).__name__}: {exc}"
    for run in paths.values():  # warm-up epoch (allocator, Keras graph tracing)
        run()
    results.update(interleaved(paths, repeats))
    engine_rate = results["cnnlstm engine (Lightning)"]["median"]
    ratios = {f"engine / {name}": round(engine_rate / results[name]["median"], 3) for name in paths}
    if "Keras 3 (torch backend)" in results:
        ratios["hand loop (plain) / Keras 3"] = round(results["hand loop, plain nn.Module"]["median"]
                                                      / results["Keras 3 (torch backend)"]["median"], 3)
    out = {"sizes": {"N": N, "L": L, "C": C, "K": K, "batch": B}, "paths": results, "ratios": ratios}
    if keras_error:
        out["keras_error"] = keras_error
    return out
