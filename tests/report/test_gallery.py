"""Gallery drawers: the pictures hold the sample's own pixels, frames side by side, every kind drawn."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlstm.data import DataInfo
from cnnlstm.report.gallery import DRAWERS, MIN_FRAME_SIDE, draw_sample, image_uri, strip_uri


def _pixels(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_image_in_unit_range_keeps_its_values_and_is_enlarged_pixel_for_pixel() -> None:
    image = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])  # (1, 2, 2)
    pixels = _pixels(image_uri(image))
    factor = pixels.shape[0] // 2
    assert pixels.shape == (2 * factor, 2 * factor) and factor >= 48
    expected = np.round(image[0].numpy() * 255).astype(np.uint8)
    assert np.array_equal(pixels[::factor, ::factor], expected)


def test_normalised_image_is_stretched_to_its_own_range() -> None:
    pixels = _pixels(image_uri(torch.tensor([[[-2.0, 2.0]]])))
    assert pixels.min() == 0 and pixels.max() == 255


def test_strip_puts_rows_of_frames_side_by_side_on_one_scale() -> None:
    context = torch.zeros(3, 1, 4, 4)  # (T, C, H, W)
    truth = torch.ones(2, 1, 4, 4)
    pixels = _pixels(strip_uri(context, truth))
    f = MIN_FRAME_SIDE // 4
    assert pixels.shape == ((4 * 2 + 2) * f, (4 * 3 + 2 * 2) * f)  # 2 rows, 3 columns, 2-pixel gaps
    assert pixels[0, 0] == 0 and pixels[6 * f, 0] == 255  # black context, white truth: one shared scale
    assert pixels[6 * f, 12 * f] == 255  # the empty third cell of the truth row stays white


@pytest.mark.parametrize("kind", sorted(DRAWERS))
def test_every_kind_draws_its_sample(kind: str) -> None:
    frames = torch.rand(5, 1, 8, 8)
    sample = {"x": frames if kind in ("frames", "forecast") else torch.rand(6, 2) if kind == "series"
              else torch.rand(1, 8, 20), "y": torch.rand(2, 1, 8, 8), "image": torch.rand(3, 8, 8),
              "sequence": torch.tensor([4, 5, 0]), "images": torch.rand(3, 8, 8)}
    score = {"index": 0, "loss": 1.5, "true": "ab", "pred": "", "cer": 1.0, "probability": 0.4,
             "forecast": torch.rand(2, 1, 8, 8)}
    item = draw_sample(kind, sample, score,
                       DataInfo(extras={"vocab": ["<pad>", "<start>", "<end>", "<unk>", "what", "colour"]}))
    assert item.index == 0 and item.loss == 1.5 and item.figures
    for _, uri in item.figures:
        assert _pixels(uri).size > 0
    text = dict(item.fields)
    if kind == "vqa":
        assert text["question"] == "what colour"
    if kind in ("text_image", "captions"):
        assert "(nothing)" in text.values() and item.correct is False
