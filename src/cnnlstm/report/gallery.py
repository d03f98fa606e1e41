"""Drawing test examples for a report, one drawer per dataset kind.

Every drawer takes a raw test sample (the dict the dataset returns, before collation), its
:data:`~cnnlstm.report.per_sample.SampleScore` and the dataset's ``info``, and returns a :class:`GalleryItem`:
pictures as PNG data URIs (nothing to fetch: a report is one self-contained file) and labelled text fields.

============  =====================================================================
kind          drawn as
============  =====================================================================
series        one small plot per channel
frames        the clip's frames as a strip
images        the image
text_image    the line image, true and predicted text, character error rate
vqa           the image, the question, true and predicted answer
captions      the image, the generated caption, the reference captions
forecast      context frames | true future frames | predicted frames
============  =====================================================================

A new kind registers its drawer with :func:`register_drawer`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from cnnlstm.data.info import DataInfo

__all__ = ["GalleryItem", "DRAWERS", "register_drawer", "draw_sample", "png_data_uri", "image_uri", "strip_uri"]

#: at most this many frames of a clip, channels of a series are drawn
MAX_FRAMES = 10
MAX_CHANNELS = 6
#: a frame (or image) whose shorter side is below this many pixels is enlarged, pixel for pixel, to be seen
MIN_SIDE = 96
MIN_FRAME_SIDE = 48


@dataclass
class GalleryItem:
    """One drawn test example.

    Attributes:
        index: the sample's position in the test split.
        loss: its per-sample test loss.
        figures: ``(label, data URI)`` pictures.
        fields: ``(label, text)`` pairs (true / predicted label, question, CER, ...).
        correct: whether the prediction equals the truth (``None`` where there is no such thing, forecasts).
        wide: drawn across two gallery columns (strips of frames).
    """

    index: int
    loss: float
    figures: list[tuple[str, str]] = field(default_factory=list)
    fields: list[tuple[str, str]] = field(default_factory=list)
    correct: bool | None = None
    wide: bool = False


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI for an ``<img src>``.

    Example:
        >>> png_data_uri(b"\\x89PNG")
        'data:image/png;base64,iVBORw=='
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _value_range(*arrays: np.ndarray) -> tuple[float, float]:
    """Pixels already in [0, 1] are shown as they are; anything else (normalised inputs) from its min to max."""
    lo = min(float(np.nanmin(a)) for a in arrays)
    hi = max(float(np.nanmax(a)) for a in arrays)
    return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)


def _to_uint8(image: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """(C, H, W) floats to (H, W) or (H, W, 3) bytes, ``value_range`` (default :func:`_value_range`) to 0..255."""
    image = image[:3] if image.shape[0] >= 3 else image[:1]
    lo, hi = value_range or _value_range(image)
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    pixels = np.clip(np.nan_to_num(scaled) * 255 + 0.5, 0, 255).astype(np.uint8)
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)


def _encode(pixels: np.ndarray, side: int, target: int = MIN_SIDE) -> str:
    """PNG data URI of ``pixels``, enlarged by a whole factor until ``side`` (a frame's side) reaches ``target``."""
    from PIL import Image

    image = Image.fromarray(pixels)
    if side < target:
        factor = -(-target // side)
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)


def image_uri(image: Tensor | np.ndarray) -> str:
    """One (C, H, W) image as a PNG data URI (pixels in [0, 1] as they are, others scaled; small ones enlarged)."""
    pixels = _to_uint8(_numpy(image))
    return _encode(pixels, min(pixels.shape[:2]))


def strip_uri(*rows: Tensor | np.ndarray, limit: int = MAX_FRAMES) -> str:
    """Rows of frames (each (T, C, H, W), at most ``limit`` per row), frames side by side, as one PNG data URI.

    All rows share one value range, so brightness compares across frames and rows (context, truth, forecast).
    """
    arrays = [_numpy(r)[:limit] for r in rows]  # each (T', C, H, W)
    value_range = _value_range(*arrays)
    H, W = arrays[0].shape[-2:]
    columns = max(len(a) for a in arrays)
    gap = 2
    sample = _to_uint8(arrays[0][0], value_range)
    canvas = np.full(((H + gap) * len(arrays) - gap, (W + gap) * columns - gap, *sample.shape[2:]), 255, np.uint8)
    for r, frames in enumerate(arrays):
        for t, frame in enumerate(frames):
            y, x = r * (H + gap), t * (W + gap)
            canvas[y : y + H, x : x + W] = _to_uint8(frame, value_range)
    return _encode(canvas, min(H, W), MIN_FRAME_SIDE)


#: line colours of a series' channels (matplotlib's tab10, so they match the learning curves' style)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _series_uri(x: Tensor | np.ndarray, width: int = 320, height: int = 46) -> str:
    """A series (T, F) as one small panel per channel (at most :data:`MAX_CHANNELS`), each on its own scale.

    Drawn with PIL, not matplotlib: a report draws many of them, and a matplotlib figure costs about a second.
    """
    from PIL import Image, ImageDraw

    series = _numpy(x)
    series = series[:, None] if series.ndim == 1 else series  # (T,) -> (T, 1)
    channels = min(series.shape[1], MAX_CHANNELS)
    label_w, pad = 30, 4
    image = Image.new("RGB", (width, channels * height), "white")
    draw = ImageDraw.Draw(image)
    plot_w = width - label_w - pad
    steps = len(series)
    for c in range(channels):
        top = c * height
        values = np.nan_to_num(series[:, c])
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo if hi > lo else 1.0
        draw.rectangle([label_w, top + 2, width - pad, top + height - 3], outline="#d0d5dd")
        draw.text((2, top + height // 2 - 6), f"ch {c}", fill="#616e7c")
        xs = label_w + 1 + np.arange(steps) * (plot_w - 2) / max(steps - 1, 1)
        ys = top + height - 5 - (values - lo) / span * (height - 9)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=PALETTE[c % len(PALETTE)], width=1)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def _words(ids: Sequence[int] | Tensor, vocab: Sequence[str] | None) -> str:
    ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    if not vocab:
        return " ".join(str(i) for i in ids if i != 0)
    specials = {"<pad>", "<start>", "<end>"}
    return " ".join(vocab[i] for i in ids if 0 <= i < len(vocab) and vocab[i] not in specials)


def _class_fields(score: dict[str, Any]) -> list[tuple[str, str]]:
    fields = [("true", str(score["true"])), ("predicted", str(score["pred"]))]
    if "probability" in score:
        fields.append(("p(predicted)", f"{score['probability']:.3f}"))
    return fields


def _draw_series(sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    return _item(score, [("series", _series_uri(sample["x"]))], _class_fields(score))


def _draw_frames(sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    item = _item(score, [(f"frames (first {min(len(sample['x']), MAX_FRAMES)} of {len(sample['x'])})",
                          strip_uri(sample["x"]))], _class_fields(score))
    item.wide = len(sample["x"]) > 4
    return item


def _draw_images(sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    return _item(score, [("image", image_uri(sample["x"]))], _class_fields(score))


def _draw_text_image(sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    fields = [("true", score["true"]), ("predicted", score["pred"] or "(nothing)"), ("CER", f"{score['cer']:.3f}")]
    return _item(score, [("text line", image_uri(sample["x"]))], fields)


def _draw_vqa(sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    question = _words(sample["sequence"], info.extras.get("vocab")) if "sequence" in sample else ""
    fields = [("question", question), ("true answer", str(score["true"])), ("predicted", str(score["pred"]))]
    image = next((sample[k] for k in ("image", "images", "x") if k in sample), None)
    return _item(score, [("image", image_uri(image))] if image is not None else [], fields)


def _draw_captions(sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    references = info.extras.get("references")
    refs = references[score["index"]] if references and score["index"] < len(references) else [score["true"]]
    fields = [("generated", score["pred"] or "(nothing)"), *[(f"reference {i + 1}", r) for i, r in enumerate(refs)]]
    return _item(score, [("image", image_uri(sample["images"]))], fields)


def _draw_forecast(sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    context, truth, forecast = sample["x"], sample["y"], score["forecast"]  # (T, ...), (K, ...), (K, C, H, W)
    label = (f"rows: context ({min(len(context), MAX_FRAMES)} of {len(context)} frames) · truth · "
             f"prediction ({len(truth)} frames)")
    item = _item(score, [(label, strip_uri(context[-MAX_FRAMES:], truth, forecast))], [("MSE", f"{score['loss']:.4g}")])
    item.wide = True
    return item


def _item(score: dict[str, Any], figures: list[tuple[str, str]], fields: list[tuple[str, str]]) -> GalleryItem:
    correct = score["true"] == score["pred"] if score.get("true") != "" else None
    return GalleryItem(index=int(score["index"]), loss=float(score["loss"]), figures=figures, fields=fields,
                       correct=correct)


Drawer = Callable[[dict[str, Any], dict[str, Any], "DataInfo"], GalleryItem]

#: dataset kind -> drawer
DRAWERS: dict[str, Drawer] = {
    "series": _draw_series, "frames": _draw_frames, "images": _draw_images, "text_image": _draw_text_image,
    "vqa": _draw_vqa, "captions": _draw_captions, "forecast": _draw_forecast,
}


def register_drawer(kind: str) -> Callable[[Drawer], Drawer]:
    """Register the gallery drawer of a dataset kind (replacing the one it had).

    Example:
        >>> @register_drawer("audio")  # doctest: +SKIP
        ... def draw_audio(sample, score, info): ...
    """

    def decorator(fn: Drawer) -> Drawer:
        DRAWERS[kind] = fn
        return fn

    return decorator


def draw_sample(kind: str, sample: dict[str, Any], score: dict[str, Any], info: DataInfo) -> GalleryItem:
    """Draw one test sample for its dataset ``kind``; a kind without a drawer gets its text fields only.

    Args:
        kind: the dataset kind (``series``, ``frames``, ...).
        sample: the raw sample from the test split.
        score: its :data:`~cnnlstm.report.per_sample.SampleScore` (``index``, ``loss``, ``true``, ``pred``).
        info: the dataset's ``info`` (its ``extras`` ``vocab``, ``references``, ...).

    Example:
        >>> item = draw_sample("series", test_set[3], score, bundle.info)  # doctest: +SKIP
    """
    drawer = DRAWERS.get(kind)
    if drawer is None:
        return _item(score, [], _class_fields(score))
    return drawer(sample, score, info)
