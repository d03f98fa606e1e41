"""Every registered model, fuzzed: constructor arguments over (and just past) their documented ranges, then
inputs of the documented layout and mutations of it.

Contract checked: a model either refuses its arguments or inputs with one of cnnlstm's own errors
(``CnnLstmError``), or builds and returns an output of the documented kind with one row per sample, finite for
finite inputs. A raw ``RuntimeError``/``IndexError``/``ZeroDivisionError`` from torch or Python is a bug: the CLI
would print a traceback instead of a message saying what to change.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_helpers import FUZZ

import cnnlstm
from cnnlstm.errors import CnnLstmError
from cnnlstm.models import create_model

SIZES = st.integers(-1, 6)  # 0 and -1 are invalid for every size argument; small positives keep models tiny
DROPOUT = st.sampled_from([-0.1, 0.0, 0.3, 0.99, 1.0, 1.5])
TINY_CNN = {"widths": (4, 8)}

# One strategy per model: each documented constructor argument over its range and a step past it.
ARGS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "lstm_fcn": st.fixed_dictionaries({
        "num_classes": SIZES, "in_channels": SIZES, "hidden_size": SIZES, "num_layers": st.integers(-1, 2),
        "bidirectional": st.booleans(), "dropout": DROPOUT,
        "filters": st.lists(st.integers(-1, 6), min_size=0, max_size=3),
        "kernel_sizes": st.lists(st.integers(-1, 5), min_size=0, max_size=3),
        "se_reduction": st.integers(-1, 4),
    }),
    "deep_conv_lstm": st.fixed_dictionaries({
        "num_classes": SIZES, "in_channels": SIZES, "hidden_size": SIZES, "num_layers": st.integers(-1, 2),
        "bidirectional": st.booleans(), "dropout": DROPOUT, "filters": SIZES, "kernel_size": st.integers(-1, 6),
        "num_conv_layers": st.integers(-1, 3),
    }),
    "crnn": st.fixed_dictionaries({
        "num_classes": st.integers(0, 5), "in_channels": st.integers(-1, 2), "hidden_size": SIZES,
        "num_layers": st.integers(-1, 2), "dropout": DROPOUT, "image_height": st.sampled_from([0, 7, 16, 32]),
        "widths": st.lists(st.integers(-1, 4), min_size=5, max_size=7),
    }),
    "conv_lstm_forecaster": st.fixed_dictionaries({
        "in_channels": st.integers(-1, 2), "hidden_size": st.one_of(SIZES, st.lists(SIZES, min_size=0, max_size=2)),
        "num_layers": st.one_of(st.none(), st.integers(-1, 2)), "kernel_size": st.integers(-1, 4),
        "horizon": st.integers(-1, 3), "patch_size": st.integers(-1, 3), "dropout": DROPOUT,
        "peephole": st.booleans(), "layer_norm": st.booleans(), "image_size": st.sampled_from([None, 8]),
    }),
    "frame_lstm": st.fixed_dictionaries({
        "num_classes": SIZES, "in_channels": st.integers(-1, 3), "hidden_size": SIZES, "num_layers": st.integers(-1, 2),
        "bidirectional": st.booleans(), "dropout": DROPOUT,
        "pooling": st.sampled_from(["last", "mean", "max", "attention", "median"]),
        "chunk_size": st.one_of(st.none(), st.integers(-1, 3)), "image_size": st.sampled_from([0, 8, 16]),
        "encoder_kwargs": st.sampled_from([TINY_CNN, {"widths": (0, 4)}, {"widths": ()}]),
    }),
    "multi_input": st.fixed_dictionaries({
        "num_classes": SIZES, "in_channels": st.integers(-1, 3), "hidden_size": SIZES, "num_layers": st.integers(-1, 2),
        "bidirectional": st.booleans(), "dropout": DROPOUT,
        "vocab_size": st.one_of(st.none(), st.integers(-1, 12)),
        "sequence_features": st.one_of(st.none(), st.integers(-1, 3)), "embedding_dim": SIZES,
        "fusion": st.sampled_from(["concat", "sum", "product", "gated", "film", "bilinear", "cross_attention",
                                    "relation", "x"]),
        "fusion_size": st.one_of(st.none(), st.sampled_from([-1, 0, 4, 8])),
        "image_features": st.sampled_from(["auto", "pooled", "grid"]), "head_hidden_size": st.integers(-1, 6),
        "image_size": st.sampled_from([8, 16]), "encoder_kwargs": st.just(TINY_CNN),
    }),
    "captioner": st.fixed_dictionaries({
        "vocab_size": st.integers(-1, 12), "in_channels": st.integers(-1, 3), "embedding_dim": SIZES,
        "hidden_size": SIZES, "attention_size": SIZES, "dropout": DROPOUT, "encoder_kwargs": st.just(TINY_CNN),
    }),
    "minirocket": st.fixed_dictionaries({
        "num_classes": SIZES, "in_channels": SIZES, "num_features": st.sampled_from([-1, 0, 83, 84, 170]),
        "max_dilations": st.integers(-1, 3), "seed": st.integers(0, 3), "fit_on_validation": st.booleans(),
        "seq_len": st.one_of(st.none(), st.integers(-1, 20)),
    }),
}
ARGS["mlstm_fcn"] = ARGS["lstm_fcn"]

# Arguments documented as "a positive size": 0 or less must be refused at construction, not produce a model
# with an empty output (num_classes=0 gives (B, 0) logits) or a crash at the first forward.
POSITIVE = {
    "lstm_fcn": ("num_classes", "in_channels", "hidden_size", "num_layers", "se_reduction"),
    "mlstm_fcn": ("num_classes", "in_channels", "hidden_size", "num_layers", "se_reduction"),
    "deep_conv_lstm": ("num_classes", "in_channels", "hidden_size", "num_layers", "filters", "num_conv_layers"),
    "crnn": ("in_channels", "hidden_size", "num_layers"),
    "conv_lstm_forecaster": ("in_channels", "horizon", "patch_size", "kernel_size"),
    "frame_lstm": ("num_classes", "in_channels", "hidden_size", "num_layers", "image_size"),
    "multi_input": ("num_classes", "in_channels", "hidden_size", "num_layers", "embedding_dim"),
    "captioner": ("in_channels", "embedding_dim", "hidden_size", "attention_size"),
    "minirocket": ("num_classes", "in_channels", "max_dilations", "seq_len"),
}
POSITIVE_LISTS = {"lstm_fcn": ("filters", "kernel_sizes"), "mlstm_fcn": ("filters", "kernel_sizes"),
                  "crnn": ("widths",)}


def _valid_sizes(name: str, kwargs: dict[str, Any]) -> bool:
    scalars = all(not isinstance(kwargs.get(k), int) or kwargs[k] >= 1 for k in POSITIVE.get(name, ()))
    lists = all(all(v >= 1 for v in kwargs.get(k, ())) for k in POSITIVE_LISTS.get(name, ()))
    return scalars and lists


def _mutate(inputs: dict[str, torch.Tensor], how: str, t: int) -> dict[str, torch.Tensor]:
    """A documented-layout input changed in one way: time cut to ``t`` steps, a dtype, or a dropped batch dim."""
    first = next(iter(inputs))
    x = inputs[first]
    out = dict(inputs)
    if how == "time" and x.dim() in (3, 5):  # series (B, T, F) and clips (B, T, C, H, W): time is dim 1
        out[first] = x[:, :t]
        if "lengths" in out:
            out["lengths"] = out["lengths"].clamp(max=max(t, 1))
    elif how == "double" and x.is_floating_point():
        out[first] = x.double()
    elif how == "unbatched":
        out[first] = x[0]
    elif how == "ids_out_of_range":
        for key, value in inputs.items():
            if key != "lengths" and not value.is_floating_point():
                out[key] = value + 1000
    return out


def _check_output(model: torch.nn.Module, inputs: dict[str, torch.Tensor], out: torch.Tensor) -> None:
    batch = next(iter(inputs.values())).shape[0]
    assert out.shape[0] == batch, f"output {tuple(out.shape)} for a batch of {batch}"
    if model.output_kind == "logits":
        assert out.shape == (batch, model.num_classes)
    if all(torch.isfinite(v).all() for v in inputs.values() if v.is_floating_point()):
        assert torch.isfinite(out).all(), "finite inputs gave a non-finite output"


@pytest.mark.parametrize("name", sorted(ARGS))
def test_every_registered_model_is_fuzzed(name: str) -> None:
    assert set(cnnlstm.list_models()) - {"toy_lstm"} <= set(ARGS), "add the new model's arguments to ARGS"


@pytest.mark.parametrize("name", sorted(ARGS))
def test_constructor_and_forward_raise_only_cnnlstm_errors(name: str) -> None:
    @settings(FUZZ, max_examples=30)
    @given(kwargs=ARGS[name], how=st.sampled_from(["none", "none", "time", "double", "unbatched", "ids_out_of_range"]),
           t=st.integers(0, 2))
    def prop(kwargs: dict[str, Any], how: str, t: int) -> None:
        torch.manual_seed(0)
        try:
            model = create_model(name, **kwargs).eval()
        except CnnLstmError:
            return
        assert _valid_sizes(name, kwargs), f"{name}({kwargs}) accepted a non-positive size"
        inputs = _mutate(model.example_input(batch_size=2), how, t)
        try:
            with torch.no_grad():
                out = model(**inputs)
        except CnnLstmError:
            return
        # Only the documented layout may run; a mutated one that slips through must still give sane output.
        _check_output(model, inputs, out)

    prop()


# Regressions found by the fuzzer, kept as plain cases so each bug has its own name and message.
ZERO_SIZE_CASES = [
    ("lstm_fcn", {"num_classes": 3, "in_channels": 2, "hidden_size": 8, "num_layers": 0}),
    ("lstm_fcn", {"num_classes": 3, "in_channels": 2, "hidden_size": 8, "filters": (0, 4, 4)}),
    ("lstm_fcn", {"num_classes": 3, "in_channels": 2, "hidden_size": 8, "kernel_sizes": (0, 3, 3)}),
    ("mlstm_fcn", {"num_classes": 3, "in_channels": 2, "hidden_size": 8, "se_reduction": 0}),
    ("crnn", {"num_classes": 5, "in_channels": 1, "hidden_size": 0, "widths": (4, 8, 8, 8, 8, 8)}),
    ("crnn", {"num_classes": 5, "in_channels": 1, "hidden_size": 8, "num_layers": 0, "widths": (4, 8, 8, 8, 8, 8)}),
    ("crnn", {"num_classes": 5, "in_channels": 0, "hidden_size": 8, "widths": (4, 8, 8, 8, 8, 8)}),
    ("crnn", {"num_classes": 5, "in_channels": 1, "hidden_size": 8, "widths": (0, 8, 8, 8, 8, 8)}),
    ("frame_lstm", {"num_classes": 0, "in_channels": 3, "hidden_size": 8, "encoder_kwargs": TINY_CNN}),
    ("frame_lstm", {"num_classes": 3, "in_channels": 3, "hidden_size": 8, "image_size": 0,
                    "encoder_kwargs": TINY_CNN}),
    ("multi_input", {"num_classes": 3, "vocab_size": 11, "embedding_dim": 0, "hidden_size": 8,
                     "encoder_kwargs": TINY_CNN}),
    ("captioner", {"vocab_size": 12, "embedding_dim": 8, "hidden_size": 0, "attention_size": 8,
                   "encoder_kwargs": TINY_CNN}),
    ("captioner", {"vocab_size": 12, "embedding_dim": 0, "hidden_size": 8, "attention_size": 8,
                   "encoder_kwargs": TINY_CNN}),
]


@pytest.mark.parametrize(("name", "kwargs"), ZERO_SIZE_CASES, ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={w}" for k, w in v.items() if k != "encoder_kwargs"))
def test_zero_sizes_are_refused_at_construction(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(CnnLstmError):
        model = create_model(name, **kwargs).eval()
        with torch.no_grad():
            model(**model.example_input(batch_size=2))  # a raw torch error here fails the test too
        raise AssertionError(f"{name}({kwargs}) built and ran")  # pragma: no cover - reached only on the bug


SMALL: dict[str, dict[str, Any]] = {
    "frame_lstm": dict(num_classes=3, in_channels=3, hidden_size=8, encoder_kwargs=TINY_CNN),
    "lstm_fcn": dict(num_classes=3, in_channels=2, hidden_size=8),
    "mlstm_fcn": dict(num_classes=3, in_channels=2, hidden_size=8),
    "deep_conv_lstm": dict(num_classes=3, in_channels=2, hidden_size=8),
    "conv_lstm_forecaster": dict(in_channels=1, hidden_size=8, horizon=3),
    "minirocket": dict(num_classes=3, in_channels=2, num_features=840),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zero_length_sequences_are_a_shape_error(name: str) -> None:
    """(B, 0, ...) reaches the LSTM as an empty sequence; torch's message names no layout to fix."""
    model = create_model(name, **SMALL[name]).eval()
    inputs = model.example_input(batch_size=2)
    inputs = {"x": inputs["x"][:, :0]}  # (B, 0, F) or (B, 0, C, H, W), no lengths
    with pytest.raises(CnnLstmError, match=name):
        model(**inputs)


@pytest.mark.parametrize("name", sorted(SMALL) + ["crnn", "multi_input", "captioner"])
def test_float64_inputs_are_refused_or_cast(name: str) -> None:
    """NumPy arrays arrive as float64; a model either casts them or says to call .float()."""
    kwargs = SMALL.get(name) or {
        "crnn": dict(num_classes=5, in_channels=1, hidden_size=8, widths=(4, 8, 8, 8, 8, 8)),
        "multi_input": dict(num_classes=3, vocab_size=11, hidden_size=8, embedding_dim=8, encoder_kwargs=TINY_CNN),
        "captioner": dict(vocab_size=12, embedding_dim=8, hidden_size=8, attention_size=8, encoder_kwargs=TINY_CNN),
    }[name]
    model = create_model(name, **kwargs).eval()
    inputs = model.example_input(batch_size=2)
    doubled = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    try:
        with torch.no_grad():
            out, ref = model(**doubled), model(**inputs)
    except CnnLstmError as exc:
        assert "float" in str(exc)
        return
    torch.testing.assert_close(out.float(), ref, rtol=1e-4, atol=1e-5)


def test_captioner_token_ids_outside_the_vocabulary_are_a_shape_error() -> None:
    model = create_model("captioner", vocab_size=12, embedding_dim=8, hidden_size=8, attention_size=8,
                         encoder_kwargs=TINY_CNN).eval()
    inputs = model.example_input(batch_size=2)
    inputs["captions"] = inputs["captions"] + 100  # ids >= vocab_size: nn.Embedding raises IndexError
    with pytest.raises(CnnLstmError, match="vocab"):
        model(**inputs)
