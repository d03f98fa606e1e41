"""One parametrised test over ``list_models()``: every registered model keeps the model contract.

See docs/architecture.md ("The model contract"). A new model family only needs small constructor
arguments in ``SMALL`` (when its defaults are not already tiny) to be covered here.
"""

from __future__ import annotations

import pytest
import torch

import cnnlstm
from cnnlstm.errors import ShapeError
from cnnlstm.models import create_model, get_model_class, model_config

# Small constructor arguments so every model runs in milliseconds on the CPU.
SMALL: dict[str, dict] = {
    "frame_lstm": dict(num_classes=3, in_channels=3, hidden_size=8, encoder_kwargs={"widths": (4, 8)}),
    "multi_input": dict(num_classes=3, in_channels=3, vocab_size=11, hidden_size=8, embedding_dim=8,
                        encoder_kwargs={"widths": (4, 8)}),
    "captioner": dict(vocab_size=12, in_channels=3, embedding_dim=8, hidden_size=8, attention_size=8,
                      encoder_kwargs={"widths": (4, 8)}),
    "lstm_fcn": dict(num_classes=3, in_channels=2, hidden_size=8),
    "mlstm_fcn": dict(num_classes=3, in_channels=2, hidden_size=8),
    "deep_conv_lstm": dict(num_classes=3, in_channels=2, hidden_size=8),
    "crnn": dict(num_classes=5, in_channels=1, hidden_size=8, widths=(4, 8, 8, 8, 8, 8)),
    "conv_lstm_forecaster": dict(in_channels=1, hidden_size=8, horizon=3),
    "minirocket": dict(num_classes=3, in_channels=2, num_features=840),
}
EXPECTED = {"frame_lstm", "captioner", "lstm_fcn", "mlstm_fcn", "deep_conv_lstm", "crnn",
            "conv_lstm_forecaster", "multi_input", "minirocket"}
# The library's own models; test suites register toy models of their own, which need not keep the full contract.
MODELS = [n for n in cnnlstm.list_models() if get_model_class(n).__module__.startswith("cnnlstm.")]


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **SMALL.get(name, {}))


def _call(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    return model(**inputs)


def test_registry_lists_every_family() -> None:
    assert EXPECTED <= set(MODELS), f"missing: {sorted(EXPECTED - set(MODELS))}"


@pytest.mark.parametrize("name", MODELS)
def test_class_attributes(name: str) -> None:
    cls = get_model_class(name)
    assert isinstance(cls.input_names, tuple) and cls.input_names
    assert cls.output_kind in {"logits", "sequence_logits", "frames", "caption_logits"}
    assert isinstance(cls.supports_lengths, bool)
    assert cls.__doc__ and "Shape" in (cls.__doc__ + (cls.forward.__doc__ or ""))


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_and_finite(name: str) -> None:
    model = _build(name).eval()
    inputs = model.example_input(batch_size=2)
    assert isinstance(inputs, dict) and set(inputs) <= set(model.input_names)
    with torch.no_grad():
        out = _call(model, inputs)
    assert out.shape[0] == 2
    assert torch.isfinite(out).all()
    if model.output_kind == "logits":
        assert out.shape == (2, model.num_classes)
    elif model.output_kind in ("sequence_logits", "caption_logits"):
        assert out.dim() == 3 and out.shape[-1] == model.num_classes
    elif model.output_kind == "frames":
        assert out.dim() == 5 and out.shape[2] == model.num_classes
    with torch.no_grad():
        feats = model.forward_features(**inputs)
    assert feats.shape[0] == 2 and feats.shape[-1] == model.num_features
    if model.output_kind in ("logits", "sequence_logits"):
        # Decoders (captioner, forecaster) need more than pooled features for their head; classifiers do not.
        with torch.no_grad():
            torch.testing.assert_close(model.forward_head(feats), out)


@pytest.mark.parametrize("name", MODELS)
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    model = _build(name).train()
    out = _call(model, model.example_input(batch_size=2))
    # A random projection, so no gradient cancels by symmetry (a plain sum would under softmax-like heads).
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name}.{pname} got an all-zero gradient"


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic_and_state_dict_round_trips(name: str) -> None:
    model = _build(name).eval()
    inputs = model.example_input(batch_size=2)
    with torch.no_grad():
        a, b = _call(model, inputs), _call(model, inputs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    config = model_config(model)
    assert config["name"] == name
    torch.manual_seed(123)  # a different init, so equal outputs must come from the loaded weights
    clone = create_model(config["name"], **config["kwargs"]).eval()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(_call(clone, inputs), a, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in MODELS if get_model_class(n).supports_lengths])
def test_padding_invariance(name: str) -> None:
    """A padded batch gives the same outputs as each sequence run alone, unpadded."""
    model = _build(name).eval()
    inputs = model.example_input(batch_size=3)
    lengths = inputs["lengths"]
    assert len(set(lengths.tolist())) > 1, "example_input should give unequal lengths"
    seq_key = "sequence" if "sequence" in inputs else "x"
    with torch.no_grad():
        batched = _call(model, inputs)
        for i, length in enumerate(lengths.tolist()):
            single = {k: v[i : i + 1] for k, v in inputs.items() if k != "lengths"}
            axis = 3 if single[seq_key].dim() == 4 else 1  # CRNN's text lines: the width is the sequence
            single[seq_key] = single[seq_key].narrow(axis, 0, length)
            alone = _call(model, single)
            # Per-step outputs (CRNN columns) exist only for the valid steps of the line alone.
            expected = batched[i : i + 1]
            if model.output_kind == "sequence_logits":
                expected = expected[:, : alone.shape[1]]
            torch.testing.assert_close(expected, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_wrong_rank_names_the_expected_layout(name: str) -> None:
    model = _build(name).eval()
    inputs = model.example_input(batch_size=2)
    first = model.input_names[0]
    bad = dict(inputs)
    bad[first] = inputs[first][0]  # drop the batch dimension
    with pytest.raises(ShapeError, match=name):
        _call(model, bad)
