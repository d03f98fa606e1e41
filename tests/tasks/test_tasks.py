"""Task losses and metrics against hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.data import DataInfo
from cnnlstm.errors import ConfigError
from cnnlstm.tasks import CaptioningTask, ClassificationTask, CTCTask, ForecastingTask, build_task, task_for_kind
from cnnlstm.tasks.forecasting import FORECAST_LOSSES, forecast_loss


class Fixed(nn.Module):
    """Returns a fixed output whatever the input: the metrics are then known in advance."""

    def __init__(self, out: Tensor, kind: str, input_names=("x",)) -> None:
        super().__init__()
        self.out = out
        self.output_kind = kind
        self.input_names = input_names
        self.num_classes = out.shape[-1] if kind != "frames" else out.shape[2]
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, **inputs: Tensor) -> Tensor:
        return self.out + self.w


def _epoch(task, batch, stage="test") -> dict[str, float]:
    loss = task.step(batch, stage)
    task.losses[stage].update(loss.detach(), weight=len(next(iter(batch.values()))))
    values = {"loss": float(task.losses[stage].compute())}
    values.update({k: float(v) for k, v in task.metrics[stage].compute().items()})
    task.on_stage_epoch_end(stage, values)
    return values


def test_classification_metrics_and_confusion() -> None:
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    y = torch.tensor([0, 1, 2, 2])
    task = ClassificationTask(Fixed(logits, "logits"), question_types=["plain", "relational"])
    values = _epoch(task, {"x": torch.zeros(4, 1), "y": y, "qtype": torch.tensor([0, 0, 1, 1])})
    assert values["loss"] == pytest.approx(float(F.cross_entropy(logits, y)))
    assert values["acc"] == pytest.approx(0.75)
    # per-class F1: class0 1.0, class1 2/3 (p=.5, r=1), class2 2/3 (p=1, r=.5)
    assert values["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert values["acc_plain"] == 1.0 and values["acc_relational"] == 0.5
    assert task.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_classification_rejects_mismatched_classes() -> None:
    with pytest.raises(ConfigError, match="model.num_classes=2"):
        ClassificationTask(Fixed(torch.zeros(1, 3), "logits"), class_names=["a", "b"])


def test_ctc_loss_and_decoded_metrics() -> None:
    # 4 steps, classes {blank, a, b}; best path "a a - b" -> "ab"; second sample best path "b - - -" -> "b"
    path = torch.tensor([[1, 1, 0, 2], [2, 0, 0, 0]])
    logits = F.one_hot(path, 3).float() * 5  # (B, W, K)
    task = CTCTask(Fixed(logits, "sequence_logits"), charset=["-", "a", "b"])
    targets = torch.tensor([[1, 2], [1, 0]])
    lengths = torch.tensor([2, 1])
    values = _epoch(task, {"x": torch.zeros(2, 1, 8, 4), "targets": targets, "target_lengths": lengths})
    log_probs = logits.log_softmax(-1).transpose(0, 1)
    expected = F.ctc_loss(log_probs, targets, torch.tensor([4, 4]), lengths, zero_infinity=True)
    assert values["loss"] == pytest.approx(float(expected))
    assert values["acc"] == 0.5  # "ab" right, "b" vs "a" wrong
    assert values["cer"] == pytest.approx(1 / 3)  # one substitution over three reference characters


def test_ctc_scores_against_the_data_text_so_an_unknown_character_counts_as_wrong() -> None:
    # Both samples decode to "ab"; the second's true text "abz" holds a character the charset lacks, so its
    # targets are [a, b] (CTC needs known ids) but it must still count as wrong, with one deletion in CER.
    path = torch.tensor([[1, 0, 2, 0], [1, 0, 2, 0]])
    task = CTCTask(Fixed(F.one_hot(path, 3).float() * 5, "sequence_logits"), charset=["-", "a", "b"])
    batch = {"x": torch.zeros(2, 1, 8, 16), "targets": torch.tensor([[1, 2], [1, 2]]),
             "target_lengths": torch.tensor([2, 2]), "text": ["ab", "abz"], "lengths": torch.tensor([16, 12])}
    values = _epoch(task, batch)
    assert values["acc"] == 0.5
    assert values["cer"] == pytest.approx(1 / 5)  # one missing character over 2 + 3 reference characters


def test_forecasting_metrics_and_copy_last_baseline() -> None:
    x = torch.zeros(2, 3, 1, 4, 4)
    x[:, -1] = 0.5
    y = torch.ones(2, 2, 1, 4, 4)
    pred = torch.full_like(y, 0.75)
    task = ForecastingTask(Fixed(pred, "frames"), ssim_kernel=3)
    values = _epoch(task, {"x": x, "y": y})
    assert values["mse"] == pytest.approx(0.0625) and values["loss"] == pytest.approx(0.0625)
    assert values["mae"] == pytest.approx(0.25)
    assert values["baseline_mse"] == pytest.approx(0.25)  # copying the 0.5 frame misses by 0.5


@pytest.mark.parametrize("loss, expected", [
    ("mse", (0.25**2 + 0.5**2) / 2),  # half the pixels predict 0.75 for 1, half 0.5 for 0
    ("l1", (0.25 + 0.5) / 2),
    ("bce", -(math.log(0.75) + math.log(1 - 0.5)) / 2),
])
def test_forecasting_loss_choice_against_hand_computed_values(loss: str, expected: float) -> None:
    y = torch.zeros(2, 2, 1, 4, 4)
    y[..., :2] = 1.0  # left half lit
    pred = torch.where(y > 0, torch.tensor(0.75), torch.tensor(0.5))
    task = ForecastingTask(Fixed(pred, "frames"), ssim_kernel=3, optim={"loss": loss})
    values = _epoch(task, {"x": torch.zeros(2, 3, 1, 4, 4), "y": y})
    assert values["loss"] == pytest.approx(expected, rel=1e-6)
    assert values["mse"] == pytest.approx((0.25**2 + 0.5**2) / 2)  # the metrics do not follow the loss


def test_forecasting_mse_plus_ssim_on_flat_frames() -> None:
    # Flat frames: every window's means are the frame values and the variances are 0, so SSIM is
    # (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * data_range)^2; the loss adds 1 - SSIM to the MSE.
    a, b, c1 = 0.2, 0.6, 1e-4
    pred, y = torch.full((1, 2, 1, 16, 16), a), torch.full((1, 2, 1, 16, 16), b)
    task = ForecastingTask(Fixed(pred, "frames"), optim={"loss": "mse+ssim"})
    values = _epoch(task, {"x": torch.zeros(1, 3, 1, 16, 16), "y": y})
    ssim = (2 * a * b + c1) / (a * a + b * b + c1)  # 0.6001; float32 window variances are ~1e-8, not 0
    assert values["ssim"] == pytest.approx(ssim, abs=2e-4)
    assert values["loss"] == pytest.approx((a - b) ** 2 + 1 - ssim, abs=2e-4)
    frames = torch.rand(1, 2, 1, 16, 16)
    assert float(forecast_loss("mse+ssim", frames, frames)) == pytest.approx(0.0, abs=1e-5)  # SSIM 1, MSE 0


def test_forecasting_loss_gradients_and_wrong_choices() -> None:
    pred = torch.rand(1, 2, 1, 12, 12, requires_grad=True)
    for name in FORECAST_LOSSES:
        pred.grad = None
        forecast_loss(name, pred, torch.rand(1, 2, 1, 12, 12)).backward()
        assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0, name
    with pytest.raises(ConfigError, match="did you mean 'bce'"):
        ForecastingTask(Fixed(torch.zeros(1, 1, 1, 4, 4), "frames"), optim={"loss": "bec"})
    clipped = Fixed(torch.zeros(1, 1, 1, 4, 4), "frames")
    clipped.output = "clamp"
    with pytest.raises(ConfigError, match="model.output: sigmoid"):
        ForecastingTask(clipped, optim={"loss": "bce"})
    assert ForecastingTask(clipped, optim={"loss": "mse"}).loss_name == "mse"
    with pytest.raises(ConfigError, match="loss is fixed"):
        ClassificationTask(Fixed(torch.zeros(1, 3), "logits"), optim={"loss": "mse"})


def test_captioning_loss_ignores_padding_and_bleu_of_exact_generation() -> None:
    vocab = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "circle", "is", "here"]
    caption = torch.tensor([[1, 4, 5, 6, 7, 8, 2, 0]])  # <start> a red circle is here <end> <pad>
    logits = F.one_hot(caption[:, 1:], len(vocab)).float() * 20  # (B, L-1, V): always right, teacher forced
    task = CaptioningTask(Fixed(logits, "caption_logits", ("images", "captions")), vocab=vocab)
    task.generate = lambda images: [[4, 5, 6, 7, 8, 2]]  # greedy decode that reproduces the caption
    values = _epoch(task, {"images": torch.zeros(1, 3, 8, 8), "captions": caption})
    target = caption[:, 1:].clone()
    expected = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=0)
    assert values["loss"] == pytest.approx(float(expected))
    assert values["bleu4"] == pytest.approx(1.0)
    assert task.decode([1, 4, 5, 2, 6]) == "a red"


def test_kind_to_task_and_unknown_task() -> None:
    assert [task_for_kind(k) for k in ("series", "vqa", "text_image", "forecast", "captions")] == [
        "classification", "classification", "ctc", "forecasting", "captioning"]
    with pytest.raises(ConfigError, match="did you mean 'classification'"):
        build_task("clasification", Fixed(torch.zeros(1, 2), "logits"))


def test_recipe_optim_loss_reaches_the_forecasting_task() -> None:
    from cnnlstm import create_model
    from cnnlstm.engine.recipe import apply_overrides, load_recipe, validate_recipe

    config = validate_recipe(apply_overrides(load_recipe("moving_digits"), ["optim.loss=mse+ssim"]))
    model = create_model("conv_lstm_forecaster", in_channels=1, hidden_size=4, horizon=2)
    assert build_task("forecasting", model, DataInfo(), config["optim"]).loss_name == "mse+ssim"
    default = validate_recipe(load_recipe("moving_digits"))["optim"]
    assert build_task("forecasting", model, DataInfo(), default).loss_name == "mse"
    with pytest.raises(ConfigError, match="optim.loss"):
        validate_recipe(apply_overrides(load_recipe("moving_digits"), ["optim.loss=3"]))


def _reference_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5, side: int = 11) -> float:
    """SSIM as Wang et al. 2004 define it, in float64 numpy: an 11 x 11 Gaussian window (sigma 1.5) slid over
    every position where it fits, C1 = (0.01 L)^2, C2 = (0.03 L)^2, population (co)variances, mean of the map
    (scikit-image's ``structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``)."""
    g = np.exp(-((np.arange(side) - side // 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()  # (side, side), sums to 1
    win = np.lib.stride_tricks.sliding_window_view
    wa, wb = win(a, (side, side)), win(b, (side, side))  # (H-side+1, W-side+1, side, side)
    mean = lambda v: (v * w).sum(axis=(-2, -1))  # noqa: E731 - a weighted window mean
    ma, mb = mean(wa), mean(wb)
    va, vb, cov = mean(wa * wa) - ma**2, mean(wb * wb) - mb**2, mean(wa * wb) - ma * mb
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def test_forecasting_ssim_is_the_standard_gaussian_ssim() -> None:
    # The task's SSIM (and so every val/ssim, test/ssim in docs/benchmarks.md) against an independent float64
    # implementation of Wang et al.'s definition, on sparse bright blobs over black like moving digits.
    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(2, 3, 1, 32, 32, generator=gen) > 0.9).float()  # (B, K, C, H, W)
    pred = (y + 0.3 * torch.rand(y.shape, generator=gen)).clamp(0, 1) * 0.8
    task = ForecastingTask(Fixed(pred, "frames"))
    values = _epoch(task, {"x": torch.zeros(2, 3, 1, 32, 32), "y": y})
    want = np.mean([_reference_ssim(p[0].double().numpy(), t[0].double().numpy())
                    for p, t in zip(pred.flatten(0, 1), y.flatten(0, 1), strict=True)])
    assert values["ssim"] == pytest.approx(want, abs=1e-4)
    # The grey floor: truth 0 everywhere, forecast a flat 0.02: luminance C1 / (0.02^2 + C1) = 0.2, structure 1.
    floor = _reference_ssim(np.full((16, 16), 0.02), np.zeros((16, 16)))
    assert floor == pytest.approx(1e-4 / (0.02**2 + 1e-4))
    task = ForecastingTask(Fixed(torch.full((1, 2, 1, 16, 16), 0.02), "frames"))
    assert _epoch(task, {"x": torch.zeros(1, 3, 1, 16, 16), "y": torch.zeros(1, 2, 1, 16, 16)})["ssim"] == \
        pytest.approx(floor, abs=1e-3)
