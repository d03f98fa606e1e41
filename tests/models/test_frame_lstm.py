"""frame_lstm: shapes, padding invariance, the feature-cache path, freezing, ONNX and error messages."""

import io
import warnings

import pytest
import torch
from torch import nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.models import create_model

TINY = dict(num_classes=3, in_channels=3, hidden_size=8, encoder_kwargs={"widths": (4, 8)}, image_size=16)


def _model(**overrides) -> nn.Module:
    return create_model("frame_lstm", **{**TINY, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"bidirectional": True, "num_layers": 2, "dropout": 0.1},
        {"pooling": "attention"},
        {"pooling": "mean", "chunk_size": 2},
    ],
)
def test_shapes_and_padding_invariance(overrides: dict) -> None:
    model = _model(**overrides).eval()
    inputs = model.example_input(batch_size=3)
    assert inputs["lengths"].tolist() == [3, 2, 1]
    with torch.no_grad():
        out = model(**inputs)
        assert out.shape == (3, 3)
        assert model.forward_features(**inputs).shape == (3, model.num_features)
        for b, length in enumerate(inputs["lengths"].tolist()):
            alone = model(inputs["x"][b : b + 1, :length])
            torch.testing.assert_close(out[b : b + 1], alone, rtol=1e-5, atol=1e-5)
    assert model.num_features == 8 * (2 if overrides.get("bidirectional") else 1)


def test_padding_content_never_matters() -> None:
    model = _model().eval()
    inputs = model.example_input(batch_size=2)
    noisy = inputs["x"].clone()
    noisy[1, 2:] = torch.rand_like(noisy[1, 2:]) * 100
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, inputs["lengths"]), model(**inputs), rtol=0, atol=0)


def test_feature_path_equals_forward_and_encodes_each_frame() -> None:
    model = _model().eval()
    x, lengths = model.example_input(batch_size=2).values()
    with torch.no_grad():
        feats = model.forward_sequence_features(x, lengths)
        assert feats.shape == (2, 3, model.encoder.out_features)
        torch.testing.assert_close(feats[0, 1], model.encoder(x[0, 1:2])[0], rtol=0, atol=1e-6)
        assert torch.equal(feats[1, 2], torch.zeros(model.encoder.out_features))  # padded frame
        torch.testing.assert_close(model.forward_from_features(feats, lengths), model(x, lengths))


def test_freeze_all_keeps_encoder_in_eval_without_gradients() -> None:
    model = _model(freeze="all").train()
    bns = [m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    before = [bn.running_mean.clone() for bn in bns]
    out = model(**model.example_input(batch_size=2))
    out.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert all(torch.equal(bn.running_mean, b) for bn, b in zip(bns, before, strict=True))
    assert all(p.grad is not None for p in model.rnn.parameters())


def test_partial_freeze_trains_last_stage_only() -> None:
    model = _model(freeze=1).train()
    first, last = model.encoder.stages[0], model.encoder.stages[-1]
    assert not first.bn.training and last.bn.training
    model(**model.example_input(batch_size=2)).sum().backward()
    assert first.conv.weight.grad is None and last.conv.weight.grad is not None


def test_unpadded_path_exports_to_onnx_with_dynamic_batch_and_time() -> None:
    ort = pytest.importorskip("onnxruntime")
    model = _model(bidirectional=True).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(2, 3, 3, 16, 16),),
            buffer,
            input_names=["x"],
            dynamo=False,
            dynamic_axes={"x": {0: "B", 1: "T"}},
        )
    x = torch.rand(3, 5, 3, 16, 16)
    (onnx_out,) = ort.InferenceSession(buffer.getvalue()).run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_out), model(x), rtol=1e-4, atol=1e-5)


def test_wrong_inputs_say_what_to_change() -> None:
    model = _model()
    with pytest.raises(ShapeError, match=r"frame_lstm expects frames \(B, T, C, H, W\) with C=3, got \(2, 3, 32, 32\)"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(ShapeError, match=r"frame_lstm expects frames .* got \(2, 3, 1, 16, 16\)"):
        model(torch.rand(2, 3, 1, 16, 16))
    with pytest.raises(ShapeError, match=r"frame_lstm expects lengths in \[1, 3\]"):
        model(torch.rand(2, 3, 3, 16, 16), torch.tensor([4, 1]))
    with pytest.raises(ShapeError, match=r"frame_lstm expects frame features \(B, T, D\) with D=8"):
        model.forward_from_features(torch.rand(2, 3, 5))
    with pytest.raises(ConfigError, match="pooling"):
        _model(pooling="avg")


def test_forward_chunk_chained_over_padded_clips_equals_each_clip_alone() -> None:
    torch.manual_seed(0)
    model = _model(num_layers=2).eval()  # eval: BatchNorm uses running statistics, the same in every chunk
    lengths = torch.tensor([7, 4, 3, 1])  # ends mid-chunk, at a chunk boundary, in the first chunk
    x = torch.rand(4, 7, 3, 16, 16)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = 0.0
    encoded = []
    model.encoder.register_forward_hook(lambda m, i, o: encoded.append(i[0].shape[0]))
    state, outs = None, []
    with torch.no_grad():
        for start in range(0, 7, 3):
            chunk_lengths = (lengths - start).clamp(0, 3)
            out, state = model.forward_chunk(x[:, start : start + 3], state, chunk_lengths)
            outs.append(out)
        assert encoded == [3 + 3 + 3 + 1, 3 + 1, 1]  # only valid frames reach the encoder
        for b, n in enumerate(lengths.tolist()):
            alone = model.forward_features(x[b : b + 1, :n])  # (1, H): pooling="last" is the final h
            torch.testing.assert_close(state[0][-1, b : b + 1], alone, atol=1e-5, rtol=1e-5)
            assert torch.equal(torch.cat(outs, 1)[b, n:], torch.zeros_like(torch.cat(outs, 1)[b, n:]))
    encoded.clear()
    # A chunk in which every clip has ended skips the encoder and hands the state on unchanged.
    with torch.no_grad():
        out, (h, c) = model.forward_chunk(x[:, :2], state, torch.zeros(4, dtype=torch.long))
    assert encoded == [] and torch.equal(h, state[0]) and torch.equal(c, state[1]) and not out.any()


@pytest.mark.parametrize("overrides, match", [({"bidirectional": True}, "bidirectional=false"),
                                              ({"pooling": "mean"}, "pooling='last'")])
def test_forward_chunk_refuses_settings_a_chunk_cannot_reproduce(overrides: dict, match: str) -> None:
    model = _model(**overrides)
    with pytest.raises(ConfigError, match=match):
        model.forward_chunk(torch.rand(2, 3, 3, 16, 16))


def test_forward_chunk_checks_chunk_lengths() -> None:
    with pytest.raises(ShapeError, match="0..3"):
        _model().forward_chunk(torch.rand(2, 3, 3, 16, 16), lengths=torch.tensor([4, 1]))
