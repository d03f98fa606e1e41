"""MiniRocket: its features against aeon's transform, its ridge read-out against scikit-learn and a leave-one-out
loop, and its closed-form fit through ``cnnlstm fit`` (alone and as an ensemble member beside ``lstm_fcn``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aeon.transformations.collection.convolution_based import MiniRocket as AeonMiniRocket
from sklearn.linear_model import RidgeClassifierCV

from cnnlstm.models import create_model
from cnnlstm.models.minirocket import ALPHAS, calibrate_temperature, minirocket_plan, ridge_loo


def _series(n: int, channels: int, length: int, seed: int = 0) -> np.ndarray:
    """(N, F, T) float32, aeon's layout; a class-dependent bump so the sets are learnable."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, channels, length)).astype(np.float32)
    x[1::2, :, length // 3: length // 2] += 2.0
    return x


def _assert_same_features(ours: np.ndarray, theirs: np.ndarray, length: int, dilations: list[int]) -> None:
    """Equal, but for a few features one step apart: each is a fraction of steps, and a bias equal to a
    convolution output (a quantile can be one) may tip the other way under another summation order."""
    assert ours.shape == theirs.shape
    gap = np.abs(ours - theirs)
    assert (gap > 1e-6).mean() < 1e-4
    assert gap.max() <= 1.0 / (length - 8 * max(dilations)) + 1e-6  # one step of the shortest pooled span


def _fit(x: np.ndarray, y: np.ndarray, **kwargs: object) -> torch.nn.Module:
    model = create_model("minirocket", num_classes=int(y.max()) + 1, in_channels=x.shape[1], **kwargs)
    model.fit_data(torch.from_numpy(x).transpose(1, 2).contiguous(), None, torch.from_numpy(y))
    return model.eval()


@pytest.mark.parametrize(("channels", "length"), [(1, 60), (3, 40), (2, 9)])
def test_features_equal_aeons_minirocket_transform(channels: int, length: int) -> None:
    x = _series(16, channels, length)
    reference = AeonMiniRocket(random_state=0).fit(x)
    model = _fit(x, np.arange(16) % 2)
    dilations, counts = minirocket_plan(length, 10_000, 32)
    assert model.dilations == dilations == [int(d) for d in reference.parameters[2]]
    assert model.features_per_dilation == counts == [int(c) for c in reference.parameters[3]]
    np.testing.assert_allclose(model.biases.numpy(), reference.parameters[4], atol=1e-5)
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(x).transpose(1, 2).contiguous()).numpy()
    assert ours.shape == (16, 9996)
    _assert_same_features(ours, reference.transform(x), length, dilations)


def test_shorter_series_count_as_zero_padded_to_the_fitted_length() -> None:
    """MiniRocket pads unequal series with zeros to one length; a series' features do not depend on its batch."""
    x = _series(10, 2, 30)
    model = _fit(x, np.arange(10) % 2)
    short = torch.from_numpy(x[:3, :, :20]).transpose(1, 2).contiguous()  # (3, 20, 2)
    padded = torch.nn.functional.pad(short, (0, 0, 0, 10))  # zeros to the fitted 30 steps
    ragged = torch.cat([padded, torch.randn(3, 7, 2)], dim=1)  # noise past the lengths
    with torch.no_grad():
        alone = model.forward_features(short)
        as_padded = model.forward_features(padded)
        in_batch = model.forward_features(ragged, torch.tensor([20, 20, 20]))
    torch.testing.assert_close(alone, as_padded, rtol=0, atol=0)
    torch.testing.assert_close(in_batch, as_padded, rtol=0, atol=0)
    theirs = AeonMiniRocket(random_state=0).fit(x).transform(np.pad(x[:3, :, :20], ((0, 0), (0, 0), (0, 10))))
    _assert_same_features(as_padded.numpy(), theirs, 30, model.dilations)


@pytest.mark.parametrize(("n", "p", "classes"), [(30, 200, 3), (80, 12, 4), (24, 300, 2)])
def test_ridge_read_out_equals_scikit_learns_ridge_classifier_cv(n: int, p: int, classes: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, p))
    y = rng.integers(0, classes, n)
    x[:, 0] += 2 * y
    reference = RidgeClassifierCV(alphas=np.array(ALPHAS)).fit(x, y)
    weight, bias, alpha, _ = ridge_loo(torch.from_numpy(x), torch.from_numpy(y), classes)
    assert alpha == pytest.approx(reference.alpha_)
    decisions = (torch.from_numpy(x) @ weight.T + bias).numpy()
    expected = reference.decision_function(x)
    np.testing.assert_allclose(decisions[:, 1] if classes == 2 else decisions, expected, atol=1e-8)


@pytest.mark.parametrize(("n", "p"), [(12, 40), (30, 5)])
def test_leave_one_out_decisions_equal_refits_without_each_series(n: int, p: int) -> None:
    rng = np.random.default_rng(p)
    x = torch.from_numpy(rng.normal(size=(n, p)))
    y = torch.from_numpy(rng.integers(0, 3, n))
    _, _, alpha, loo = ridge_loo(x, y, 3, alphas=(0.7,))
    for i in range(n):
        keep = torch.arange(n) != i
        weight, bias, _, _ = ridge_loo(x[keep], y[keep], 3, alphas=(alpha,))
        torch.testing.assert_close(loo[i], x[i] @ weight.T + bias, rtol=1e-8, atol=1e-8)


def test_temperature_is_the_cross_entropy_minimiser_on_the_grid() -> None:
    decisions = torch.tensor([[0.4, -0.4], [-0.2, 0.2], [0.1, -0.1], [0.3, -0.3]])
    labels = torch.tensor([0, 1, 1, 0])
    t = calibrate_temperature(decisions, labels, temperatures=(0.5, 1.0, 2.0, 4.0))
    losses = {s: float(torch.nn.functional.cross_entropy(s * decisions, labels)) for s in (0.5, 1.0, 2.0, 4.0)}
    assert t == min(losses, key=losses.get)


def test_fitted_model_predicts_as_the_ridge_read_out_and_round_trips_through_its_kwargs() -> None:
    x = _series(20, 1, 50)
    y = np.arange(20) % 2
    model = _fit(x, y, num_features=840)
    series = torch.from_numpy(x).transpose(1, 2).contiguous()
    with torch.no_grad():
        features = model.forward_features(series) / model.scale
        logits = model(series)
    weight, bias, _, _ = ridge_loo(features, torch.from_numpy(y), 2)
    decisions = features.double() @ weight.T + bias
    assert torch.equal(logits.argmax(1), decisions.argmax(1))
    assert model.model_kwargs["seq_len"] == 50
    clone = create_model("minirocket", **model.model_kwargs).eval()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(series), logits, rtol=0, atol=0)


def test_memory_bounded_blocks_give_the_same_features_and_fit() -> None:
    x = _series(12, 2, 40)
    y = np.arange(12) % 2
    whole = _fit(x, y, num_features=840)
    torch.manual_seed(0)
    small = create_model("minirocket", num_classes=2, in_channels=2, num_features=840)
    small.max_elements = 5_000  # one series and a bias or two at a time
    small.fit_data(torch.from_numpy(x).transpose(1, 2).contiguous(), None, torch.from_numpy(y))
    series = torch.from_numpy(x).transpose(1, 2).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(small.eval().forward_features(series), whole.forward_features(series),
                                   rtol=0, atol=0)
        torch.testing.assert_close(small(series), whole(series))


def test_fit_needs_two_series() -> None:
    from cnnlstm.errors import DataError

    model = create_model("minirocket", num_classes=2, in_channels=1, num_features=840)
    with pytest.raises(DataError, match="at least 2"):
        model.fit_data(torch.randn(1, 20, 1), None, torch.tensor([0]))
