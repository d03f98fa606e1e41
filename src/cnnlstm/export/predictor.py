"""Run an exported ONNX model with onnxruntime: the deployment path of ``cnnlstm predict --onnx``.

:class:`OnnxPredictor` runs the file alone; :class:`OnnxModel` puts it behind the registered-model interface the
tasks call, so :func:`predict_onnx` predicts with the run's own input reading, labels and decoding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError, WeightsError

__all__ = ["OnnxModel", "OnnxPredictor", "predict_onnx"]

_INT_INPUTS = ("lengths", "captions")


class OnnxPredictor:
    """An exported cnnlstm model on onnxruntime (CPU by default), called like the eager model.

    The file's metadata (written by :func:`~cnnlstm.export.export_onnx`) names the inputs and the output kind,
    so nothing else from the run is needed. Inputs may be torch tensors or numpy arrays; a model that takes
    ``lengths`` gets full lengths when they are left out.

    Args:
        path: an ``.onnx`` file from :func:`~cnnlstm.export.export_onnx`.
        providers: onnxruntime execution providers, in preference order.
        threads: intra-op threads (``None``: onnxruntime's default, all cores).

    Shape:
        - inputs and output: those of the exported model (``output_kind`` says which, e.g. logits ``(B, K)``).

    Example:
        >>> predictor = OnnxPredictor("export/model.onnx")  # doctest: +SKIP
        >>> predictor(x=torch.randn(4, 100, 6)).shape  # doctest: +SKIP
        (4, 4)
    """

    def __init__(
        self, path: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"no ONNX model at {path}; write one with `cnnlstm export`")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable files
            raise WeightsError(f"{path} is not a loadable ONNX model ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        graph_inputs = [i.name for i in self.session.get_inputs()]
        self.input_names: tuple[str, ...] = tuple(json.loads(meta.get("cnnlstm_input_names", json.dumps(graph_inputs))))
        self.output_kind: str | None = meta.get("cnnlstm_output_kind")
        self.model_config: dict[str, Any] = json.loads(meta.get("cnnlstm_model", "{}"))
        self.path = path

    def _feed(self, inputs: dict[str, Tensor | np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(inputs) - set(self.input_names)
        if unknown:
            raise ConfigError(f"{self.path.name} takes {self.input_names}, got unknown inputs {sorted(unknown)}")
        feed = {}
        for name in self.input_names:
            if name in inputs:
                value = inputs[name]
                array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
                feed[name] = array.astype(np.int64 if name in _INT_INPUTS else array.dtype, copy=False)
            elif name == "lengths":
                first = feed.get("x", feed.get("sequence"))
                if first is None:
                    raise ShapeError(f"{self.path.name} needs 'lengths' with its sequence input")
                steps = first.shape[3] if first.ndim == 4 else first.shape[1]  # text lines: the width is the time
                feed[name] = np.full(first.shape[0], steps, dtype=np.int64)  # nothing padded
            else:
                raise ShapeError(f"{self.path.name} needs input {name!r} (inputs: {', '.join(self.input_names)})")
        for name, array in feed.items():
            if name not in _INT_INPUTS and array.dtype == np.float64:
                feed[name] = array.astype(np.float32)  # exported in fp32
        return feed

    def run(self, **inputs: Tensor | np.ndarray) -> np.ndarray:
        """The model output as a numpy array (see the class docstring)."""
        return self.session.run(None, self._feed(inputs))[0]

    def __call__(self, **inputs: Tensor | np.ndarray) -> Tensor:
        """The model output as a torch tensor."""
        return torch.from_numpy(self.run(**inputs))

    def predict_proba(self, **inputs: Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities (softmax over the last axis) for classifiers (``output_kind == "logits"``).

        Shape:
            - output: ``(B, K)``.
        """
        if self.output_kind not in (None, "logits"):
            raise ConfigError(f"predict_proba is for classifiers; {self.path.name} outputs {self.output_kind}")
        logits = self.run(**inputs)
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)


class OnnxModel(nn.Module):
    """An exported model on onnxruntime behind the registered-model interface the tasks call.

    Args:
        path: an ``.onnx`` file from :func:`~cnnlstm.export.export_onnx`.
        num_classes: used when the file's metadata does not say (a model exported without its registry config).

    Shape:
        - inputs and output: those of the exported model.

    Example:
        >>> model = OnnxModel("export/model.onnx")  # doctest: +SKIP
        >>> model(x=torch.randn(4, 100, 6)).shape  # doctest: +SKIP
        torch.Size([4, 4])
    """

    def __init__(self, path: str | Path, num_classes: int | None = None) -> None:
        super().__init__()
        self.predictor = OnnxPredictor(path)
        self.input_names = self.predictor.input_names
        self.output_kind = self.predictor.output_kind or "logits"
        kwargs = self.predictor.model_config.get("kwargs", {})
        self.num_classes = kwargs.get("num_classes", kwargs.get("vocab_size", num_classes))
        self.model_name = self.predictor.model_config.get("name", "onnx")
        # Valid output steps per input width (CRNN): the task decodes only those, as it does for the eager model.
        from cnnlstm.models import get_model_class, list_models

        if self.model_name in list_models() and hasattr(get_model_class(self.model_name), "output_lengths"):
            self.output_lengths = get_model_class(self.model_name).output_lengths

    def forward(self, **inputs: Tensor) -> Tensor:
        """The exported model's output for keyword inputs."""
        return self.predictor(**inputs)


def predict_onnx(run_dir: str | Path, inputs: list[str], onnx: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`cnnlstm.engine.predict.predict` with the run's ONNX export on onnxruntime instead of PyTorch.

    Args:
        run_dir: a directory written by ``fit``.
        inputs: file paths, read as for the eager model.
        onnx: an ``.onnx`` file exported from this run (``cnnlstm export``).
        **kwargs: ``batch_size``, ``out``, ``beam_size`` of :func:`~cnnlstm.engine.predict.predict`.

    Example:
        >>> predict_onnx("runs/basic_motions", ["walk.npz"], "runs/basic_motions/export/model.onnx")  # doctest: +SKIP
    """
    from cnnlstm.engine.predict import predict, read_data_info  # here: the engine pulls in Lightning

    num_classes = read_data_info(run_dir).model_kwargs.get("num_classes")
    return predict(run_dir, inputs, model=OnnxModel(onnx, num_classes), **kwargs)
