"""Data augmentation for series, frame clips and images: random, seeded, padding-aware, off in evaluation.

CNN-LSTMs overfit small data sets quickly; augmentation is the cheapest regulariser. Every transform here is an
``nn.Module`` with the usual ``training`` switch: in training mode it draws new random parameters per sample, in
evaluation mode (``.eval()``) it returns its input object unchanged. Each transform fires per sample with
probability ``p`` and draws from its own ``torch.Generator`` when one is given, so a seed reproduces a run.

Series (Um et al. 2017; Le Guennec et al. 2016), ``(B, T, F)`` or one sample ``(T, F)``, with optional
``lengths``: :class:`Jitter`, :class:`Scaling`, :class:`MagnitudeWarp`, :class:`TimeWarp`, :class:`WindowSlice`.
Padded steps (``t >= lengths[b]``) are never changed, and warping and slicing act on each series' valid steps
only, so ``lengths`` stay true.

Images ``(B, C, H, W)`` / ``(C, H, W)`` and frame clips ``(B, T, C, H, W)`` / ``(T, C, H, W)``:
:class:`RandomResizedCrop`, :class:`RandomShift`, :class:`HorizontalFlip` (opt-in: a flip can change the label
of digits, text or left/right relations), :class:`ColorJitter` (brightness, contrast). A clip's frames share one
draw, so motion stays coherent, and padded frames stay as they are.

:func:`build_augmentation` builds an :class:`Augmentation` pipeline from a recipe section::

    augment: {jitter: 0.03, scaling: 0.1, time_warp: 0.2, p: 0.5, seed: 0}

Apply it to training data only: wrap the training split (after carving validation from it) in
:class:`AugmentedDataset`, or call the pipeline on training batches.

Image + question batches (VQA) also take :class:`QuestionFlip` (``augment: {question_flip: [[left, right]]}``,
:func:`build_question_flip`): a whole batch transform that mirrors an image and swaps the named words in every
question about it, and in the answers, so left/right questions stay true.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, get_worker_info

from cnnlstm.errors import ConfigError, ShapeError, UnknownNameError, did_you_mean
from cnnlstm.layers.masking import check_lengths, lengths_to_mask

__all__ = [
    "RandomTransform",
    "Jitter",
    "Scaling",
    "MagnitudeWarp",
    "TimeWarp",
    "WindowSlice",
    "RandomResizedCrop",
    "RandomShift",
    "HorizontalFlip",
    "ColorJitter",
    "Augmentation",
    "AugmentedDataset",
    "build_augmentation",
    "AUGMENTATIONS",
    "QuestionFlip",
    "build_question_flip",
]

# Rank of one batched input per kind; a single sample has one dimension less.
_BATCH_RANK = {"series": 3, "frames": 5, "images": 4}
_LAYOUT = {"series": "(B, T, F) or (T, F)", "frames": "(B, T, C, H, W) or (T, C, H, W)",
           "images": "(B, C, H, W) or (C, H, W)"}


class RandomTransform(nn.Module):
    """Base of every transform: training switch, per-sample probability, seeding, padding and layout handling.

    Subclasses implement :meth:`transform` on a batch; this class draws which samples it applies to and keeps
    the other samples, and every padded step, exactly as they were.

    Args:
        kind: ``"series"``, ``"frames"`` or ``"images"``: the layout of inputs (see module docs).
        p: probability that a sample is transformed.
        generator: random source for every draw; the global RNG when ``None``.
    """

    kinds: tuple[str, ...] = ("series", "frames", "images")

    def __init__(self, kind: str, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if kind not in self.kinds:
            raise ConfigError(f"{type(self).__name__} works on {' or '.join(self.kinds)} inputs, not {kind!r}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{type(self).__name__}: p is a probability in [0, 1], got {p}")
        self.kind = kind
        self.p = p
        self.generator = generator

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, p={self.p}"

    def rand(self, *shape: int, like: Tensor) -> Tensor:
        """Uniform [0, 1) draws from the transform's generator, on ``like``'s device and dtype."""
        return torch.rand(shape, generator=self.generator).to(like.device, like.dtype)

    def randn(self, *shape: int, like: Tensor) -> Tensor:
        """Standard normal draws from the transform's generator, on ``like``'s device and dtype."""
        return torch.randn(shape, generator=self.generator).to(like.device, like.dtype)

    def transform(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """Transform every sample of a batch (selection and padding are handled by :meth:`forward`).

        Shape:
            - x: the batched layout of ``kind``; lengths: ``(B,)`` or ``None``; output: like ``x``.
        """
        raise NotImplementedError

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Augment in training mode; return ``x`` itself in evaluation mode.

        Args:
            x: a batch or a single sample in the layout of ``kind``.
            lengths: valid steps (series) or frames (clips) per sample; ``None`` when none are padded.

        Shape:
            - x: ``(B, T, F)`` / ``(T, F)``, ``(B, T, C, H, W)`` / ``(T, C, H, W)`` or ``(B, C, H, W)`` /
              ``(C, H, W)``; lengths: ``(B,)``; output: like ``x``.
        """
        if not self.training or self.p == 0.0:
            return x
        rank = _BATCH_RANK[self.kind]
        if x.dim() not in (rank, rank - 1) or not x.is_floating_point():
            raise ShapeError(f"{type(self).__name__} expects floating {self.kind} {_LAYOUT[self.kind]}, got "
                             f"{tuple(x.shape)} {x.dtype}")
        single = x.dim() == rank - 1
        batch = x.unsqueeze(0) if single else x  # (B, ...)
        B = batch.shape[0]
        timed = self.kind != "images"
        if timed and single and lengths is not None:
            lengths = lengths.reshape(1)
        lengths = check_lengths(lengths, B, batch.shape[1], owner=type(self).__name__) if timed else None
        chosen = self.rand(B, like=batch) < self.p  # (B,): drawn for every sample, so draws stay in step
        out = self.transform(batch, lengths)
        keep = chosen.view(B, *[1] * (batch.dim() - 1))  # (B, 1, ...)
        if lengths is not None:
            valid = lengths_to_mask(lengths.to(batch.device), batch.shape[1])  # (B, T)
            keep = keep & valid.view(B, batch.shape[1], *[1] * (batch.dim() - 2))  # (B, T, 1, ...)
        out = torch.where(keep, out, batch)  # unchosen samples and padded steps exactly as they were
        return out.squeeze(0) if single else out


# ---------------------------------------------------------------------------------------------------------------
# Series
# ---------------------------------------------------------------------------------------------------------------


def _valid_positions(lengths: Tensor | None, B: int, T: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Each step's place in its series, ``u = t / (L - 1)`` in [0, 1], and ``L - 1``; both ``(B, T)``/``(B, 1)``."""
    L = torch.full((B,), T, device=like.device) if lengths is None else lengths.to(like.device)
    last = (L - 1).clamp(min=1).to(like.dtype).unsqueeze(1)  # (B, 1)
    t = torch.arange(T, device=like.device, dtype=like.dtype).unsqueeze(0)  # (1, T)
    return (t / last).clamp(max=1.0), last  # (B, T), (B, 1)


def _lookup(curve: Tensor, u: Tensor) -> Tensor:
    """Read a curve sampled on a uniform grid over [0, 1] at positions ``u``, linearly between grid points.

    Shape:
        - curve: ``(B, G, C)``; u: ``(B, T)`` in [0, 1]; output: ``(B, T, C)``.
    """
    G = curve.shape[1]
    index = u * (G - 1)  # (B, T)
    i0 = index.floor().long().clamp(0, G - 1)
    i1 = (i0 + 1).clamp(max=G - 1)
    frac = (index - i0.to(index.dtype)).unsqueeze(2)  # (B, T, 1)
    C = curve.shape[2]
    c0 = curve.gather(1, i0.unsqueeze(2).expand(-1, -1, C))  # (B, T, C)
    c1 = curve.gather(1, i1.unsqueeze(2).expand(-1, -1, C))
    return c0 + (c1 - c0) * frac  # exactly c0 where frac == 0 (grid ends included)


def _smooth_curve(knots: Tensor, size: int = 64) -> Tensor:
    """A smooth curve through random knot values: bicubic interpolation over a uniform grid.

    Shape:
        - knots: ``(B, K, C)``; output: ``(B, size, C)``.
    """
    grid = knots.transpose(1, 2).unsqueeze(3)  # (B, C, K, 1): interpolate wants spatial dims
    curve = F.interpolate(grid, size=(size, 1), mode="bicubic", align_corners=True)  # (B, C, size, 1)
    return curve.squeeze(3).transpose(1, 2)  # (B, size, C)


def _resample(x: Tensor, pos: Tensor, lengths: Tensor | None) -> Tensor:
    """Read each series at fractional step positions, linearly between steps, never past its last valid step.

    Shape:
        - x: ``(B, T, F)``; pos: ``(B, T)`` in ``[0, L_b - 1]``; output: ``(B, T, F)``.
    """
    B, T, Fdim = x.shape
    last = (torch.full((B,), T, device=x.device) if lengths is None else lengths.to(x.device)) - 1  # (B,)
    i0 = pos.floor().long().clamp(min=0)
    i0 = torch.minimum(i0, last.unsqueeze(1))  # (B, T)
    i1 = torch.minimum(i0 + 1, last.unsqueeze(1))
    frac = (pos - i0.to(pos.dtype)).unsqueeze(2)  # (B, T, 1)
    x0 = x.gather(1, i0.unsqueeze(2).expand(-1, -1, Fdim))  # (B, T, F)
    x1 = x.gather(1, i1.unsqueeze(2).expand(-1, -1, Fdim))
    return x0 + (x1 - x0) * frac


class _SeriesTransform(RandomTransform):
    kinds = ("series",)

    def __init__(self, strength: float, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__("series", p, generator)
        if strength < 0:
            raise ConfigError(f"{type(self).__name__}: strength must be >= 0, got {strength}")
        self.strength = strength

    def extra_repr(self) -> str:
        return f"strength={self.strength}, p={self.p}"




class Jitter(_SeriesTransform):
    """Add Gaussian noise to every valid step (sensor noise).

    Args:
        strength: noise standard deviation, in the units of the (normalised) series.
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: ``(B, T, F)`` or ``(T, F)``; lengths: ``(B,)``, optional; output: like ``x``.

    Example:
        >>> jitter = Jitter(0.03, p=1.0, generator=torch.Generator().manual_seed(0))
        >>> jitter(torch.zeros(2, 5, 3)).abs().max() > 0
        tensor(True)
    """

    def transform(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        return x + self.strength * self.randn(*x.shape, like=x)


class Scaling(_SeriesTransform):
    """Multiply each variable of a series by a random factor ``~ N(1, strength^2)`` (gain changes).

    Args:
        strength: standard deviation of the factor.
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: ``(B, T, F)`` or ``(T, F)``; lengths: ``(B,)``, optional; output: like ``x``.

    Example:
        >>> Scaling(0.1, p=1.0)(torch.ones(2, 4, 3)).shape
        torch.Size([2, 4, 3])
    """

    def transform(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        B, _, Fdim = x.shape
        return x * (1.0 + self.strength * self.randn(B, 1, Fdim, like=x))  # (B, 1, F) factor per variable


class MagnitudeWarp(_SeriesTransform):
    """Multiply each variable by a smooth random curve through ``knots`` values ``~ N(1, strength^2)``.

    The knots are spread evenly over each series' valid steps, so a short padded series gets the whole curve.

    Args:
        strength: standard deviation of the curve around 1.
        knots: number of interior knots (the curve has ``knots + 2`` control points).
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: ``(B, T, F)`` or ``(T, F)``; lengths: ``(B,)``, optional; output: like ``x``.

    Example:
        >>> MagnitudeWarp(0.2, p=1.0)(torch.ones(8, 3)).shape
        torch.Size([8, 3])
    """

    def __init__(self, strength: float, knots: int = 4, p: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(strength, p, generator)
        self.knots = knots

    def transform(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        B, T, Fdim = x.shape
        values = 1.0 + self.strength * self.randn(B, self.knots + 2, Fdim, like=x)  # (B, K, F)
        u, _ = _valid_positions(lengths, B, T, x)  # (B, T)
        return x * _lookup(_smooth_curve(values), u)  # (B, T, F)


class TimeWarp(_SeriesTransform):
    """Smoothly speed up and slow down time within each series, keeping its first and last step in place.

    A random speed curve (knot values ``~ N(1, strength^2)``, kept positive) is integrated into a monotone
    warp from ``[0, L - 1]`` onto itself; the series is read at the warped positions, linearly between steps.
    The warp maps 0 to 0 and ``L - 1`` to ``L - 1`` exactly, so the endpoints are the input's endpoints.

    Args:
        strength: standard deviation of the speed around 1.
        knots: number of interior knots of the speed curve.
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: ``(B, T, F)`` or ``(T, F)``; lengths: ``(B,)``, optional; output: like ``x``.

    Example:
        >>> x = torch.arange(10.0).view(10, 1)
        >>> y = TimeWarp(0.3, p=1.0)(x)
        >>> (y[0].item(), y[-1].item())
        (0.0, 9.0)
    """

    def __init__(self, strength: float, knots: int = 4, p: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(strength, p, generator)
        self.knots = knots

    def transform(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        speed = (1.0 + self.strength * self.randn(B, self.knots + 2, 1, like=x)).clamp(min=0.05)  # (B, K, 1)
        speed = _smooth_curve(speed).clamp(min=0.05)  # (B, G, 1): bicubic may overshoot below zero
        warp = F.pad(speed.squeeze(2).cumsum(1), (1, 0))  # (B, G + 1): time elapsed, 0 at the start
        warp = (warp / warp[:, -1:]).unsqueeze(2)  # (B, G + 1, 1): monotone, exactly 0 ... 1
        u, last = _valid_positions(lengths, B, T, x)  # (B, T), (B, 1)
        pos = _lookup(warp, u).squeeze(2) * last  # (B, T) in [0, L - 1]
        return _resample(x, pos, lengths)


class WindowSlice(_SeriesTransform):
    """Crop a random window of each series' valid steps and stretch it back to the series' length.

    Args:
        strength: fraction of the valid steps cut away (``0.1`` keeps a random 90 % window).
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: ``(B, T, F)`` or ``(T, F)``; lengths: ``(B,)``, optional; output: like ``x``.

    Example:
        >>> WindowSlice(0.2, p=1.0)(torch.randn(2, 10, 3)).shape
        torch.Size([2, 10, 3])
    """

    def __init__(self, strength: float, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(strength, p, generator)
        if strength >= 1:
            raise ConfigError(f"WindowSlice: strength is the fraction cut away, in [0, 1), got {strength}")

    def transform(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        u, last = _valid_positions(lengths, B, T, x)  # (B, T), (B, 1)
        span = last * (1.0 - self.strength)  # (B, 1): window length in steps (between first and last read)
        start = (last - span) * self.rand(B, 1, like=x)  # (B, 1)
        return _resample(x, start + u * span, lengths)


# ---------------------------------------------------------------------------------------------------------------
# Images and frame clips
# ---------------------------------------------------------------------------------------------------------------


class _ImageTransform(RandomTransform):
    kinds = ("images", "frames")

    def per_image(self, params: Tensor, x: Tensor) -> Tensor:
        """Repeat per-sample parameters for each frame of a clip, so a clip's frames share one draw.

        Shape:
            - params: ``(B, ...)``; output: ``(B * T, ...)`` for frames, ``params`` for images.
        """
        return params.repeat_interleave(x.shape[1], dim=0) if self.kind == "frames" else params

    def transform(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        images = x.flatten(0, 1) if self.kind == "frames" else x  # (N, C, H, W), N = B*T for clips
        return self.transform_images(images, x).view_as(x)

    def transform_images(self, images: Tensor, x: Tensor) -> Tensor:
        """Transform ``(N, C, H, W)`` images; ``x`` is the batch they came from (for :meth:`per_image`)."""
        raise NotImplementedError


class RandomResizedCrop(_ImageTransform):
    """Crop a random region (area fraction in ``[1 - strength, 1]``, aspect ratio in ``ratio``) and resize it to
    the input's size.

    Args:
        kind: ``"images"`` or ``"frames"`` (one crop per clip).
        strength: largest fraction of the area cut away.
        ratio: range of crop aspect ratios (width / height), sampled log-uniformly.
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: ``(B, C, H, W)``, ``(C, H, W)``, ``(B, T, C, H, W)`` or ``(T, C, H, W)``; lengths: ``(B,)`` for
          clips, optional; output: like ``x``.

    Example:
        >>> RandomResizedCrop("images", 0.3, p=1.0)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, kind: str, strength: float = 0.3, ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(kind, p, generator)
        if not 0.0 <= strength < 1.0:
            raise ConfigError(f"RandomResizedCrop: strength is the area fraction cut away, in [0, 1), got {strength}")
        self.strength = strength
        self.ratio = ratio

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, strength={self.strength}, ratio={self.ratio}, p={self.p}"

    def transform_images(self, images: Tensor, x: Tensor) -> Tensor:
        B = x.shape[0]
        area = 1.0 - self.strength * self.rand(B, like=x)  # (B,)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * self.rand(B, like=x))  # (B,)
        w = (area * aspect).sqrt().clamp(max=1.0)  # (B,) crop width as a fraction of the image
        h = (area / aspect).sqrt().clamp(max=1.0)
        cx = (1.0 - w) * (2.0 * self.rand(B, like=x) - 1.0)  # (B,) crop centre in [-1, 1] coordinates
        cy = (1.0 - h) * (2.0 * self.rand(B, like=x) - 1.0)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)  # (B, 2, 3)
        theta = self.per_image(theta, x)  # (N, 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (N, H, W, 2)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class RandomShift(_ImageTransform):
    """Translate by a whole number of pixels, at most ``strength`` of the side each way; the edge pixels fill in.

    A shift keeps sizes, shapes and colours, and moves positions by at most a few pixels, so it suits images
    whose labels name where things are only coarsely (a scene's left half). Unlike a crop it never rescales.

    Args:
        kind: ``"images"`` or ``"frames"`` (one shift per clip).
        strength: largest shift as a fraction of the width (height), e.g. 0.05 is 3 pixels at 64.
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: images or clips (see :class:`RandomResizedCrop`); output: like ``x``.

    Example:
        >>> RandomShift("images", 0.25, p=1.0, generator=torch.Generator().manual_seed(0))(
        ...     torch.arange(4.0).view(1, 1, 1, 4))
        tensor([[[[0., 0., 1., 2.]]]])
    """

    def __init__(self, kind: str, strength: float = 0.05, p: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(kind, p, generator)
        if not 0.0 <= strength < 0.5:
            raise ConfigError(f"RandomShift: strength is the largest shift as a fraction of the side, in [0, 0.5), "
                              f"got {strength}")
        self.strength = strength

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, strength={self.strength}, p={self.p}"

    def transform_images(self, images: Tensor, x: Tensor) -> Tensor:
        B, (H, W) = x.shape[0], images.shape[-2:]
        most = torch.tensor([W, H], dtype=x.dtype, device=x.device) * self.strength  # (2,) pixels
        most = most.floor()
        pixels = torch.round((2.0 * self.rand(B, 2, like=x) - 1.0) * most)  # (B, 2): whole pixels in [-most, most]
        theta = torch.zeros(B, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = -2.0 * pixels[:, 0] / W  # sampling at x - dx moves the content by +dx pixels
        theta[:, 1, 2] = -2.0 * pixels[:, 1] / H
        grid = F.affine_grid(self.per_image(theta, x), list(images.shape), align_corners=False)  # (N, H, W, 2)
        return F.grid_sample(images, grid, mode="nearest", padding_mode="border", align_corners=False)


class HorizontalFlip(_ImageTransform):
    """Mirror images left to right. Opt-in only: flips change digits, text and left/right relations.

    Args:
        kind: ``"images"`` or ``"frames"`` (a clip flips as a whole).
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: images or clips (see :class:`RandomResizedCrop`); output: like ``x``.

    Example:
        >>> HorizontalFlip("images", p=1.0)(torch.arange(4.0).view(1, 1, 1, 4))
        tensor([[[[3., 2., 1., 0.]]]])
    """

    def transform_images(self, images: Tensor, x: Tensor) -> Tensor:
        return images.flip(-1)


class ColorJitter(_ImageTransform):
    """Random brightness (``x * b``) and contrast (``(x - mean) * c + mean``), factors in ``[1 - s, 1 + s]``.

    No clamping: inputs may be normalised rather than in [0, 1]. The contrast mean is each image's (frame's).

    Args:
        kind: ``"images"`` or ``"frames"`` (one draw per clip).
        brightness: strength ``s`` of the brightness factor.
        contrast: strength ``s`` of the contrast factor.
        p: probability per sample.
        generator: random source; the global RNG when ``None``.

    Shape:
        - x: images or clips (see :class:`RandomResizedCrop`); output: like ``x``.

    Example:
        >>> ColorJitter("images", brightness=0.2, contrast=0.2, p=1.0)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """

    def __init__(self, kind: str, brightness: float = 0.0, contrast: float = 0.0, p: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(kind, p, generator)
        if not (0.0 <= brightness < 1.0 and 0.0 <= contrast < 1.0):
            raise ConfigError(f"ColorJitter: brightness and contrast in [0, 1), got {brightness}, {contrast}")
        self.brightness = brightness
        self.contrast = contrast

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, brightness={self.brightness}, contrast={self.contrast}, p={self.p}"

    def transform_images(self, images: Tensor, x: Tensor) -> Tensor:
        B = x.shape[0]
        b = 1.0 + self.brightness * (2.0 * self.rand(B, like=x) - 1.0)  # (B,)
        c = 1.0 + self.contrast * (2.0 * self.rand(B, like=x) - 1.0)
        b, c = (self.per_image(v, x).view(-1, 1, 1, 1) for v in (b, c))  # (N, 1, 1, 1)
        images = images * b
        mean = images.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        return (images - mean) * c + mean


# ---------------------------------------------------------------------------------------------------------------
# Pipeline, dataset wrapper and recipe builder
# ---------------------------------------------------------------------------------------------------------------


class Augmentation(nn.Sequential):
    """Transforms applied in order, each with its own probability; the identity in evaluation mode.

    Args:
        kind: ``"series"``, ``"frames"`` or ``"images"``.
        *transforms: :class:`RandomTransform` modules of that kind.

    Shape:
        - x: the layout of ``kind``, batched or single; lengths: ``(B,)`` or ``None``; output: like ``x``.

    Example:
        >>> aug = Augmentation("series", Jitter(0.03), TimeWarp(0.2))
        >>> aug(torch.randn(2, 10, 3), torch.tensor([10, 7])).shape
        torch.Size([2, 10, 3])
    """

    def __init__(self, kind: str, *transforms: RandomTransform) -> None:
        super().__init__(*transforms)
        for t in transforms:
            if t.kind != kind:
                raise ConfigError(f"Augmentation for {kind} got a {t.kind} transform ({type(t).__name__})")
        self.kind = kind

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # type: ignore[override]
        for transform in self:
            x = transform(x, lengths)
        return x

    def reseed(self, seed: int) -> None:
        """Reseed every generator the transforms hold (each DataLoader worker needs its own stream)."""
        for generator in {id(t.generator): t.generator for t in self if t.generator is not None}.values():
            generator.manual_seed(seed)


class AugmentedDataset(Dataset):
    """A dataset whose samples pass through an augmentation (training data only).

    Wrap the training split after validation has been carved from it: the validation and test splits must see
    the data as it is. In DataLoader workers the augmentation is reseeded from the worker's seed, so workers
    draw different streams and each epoch differs, yet a run with a fixed ``torch.manual_seed`` repeats.

    Args:
        dataset: yields sample dicts (``x`` (T, F), (T, C, H, W) or (C, H, W), ...).
        augmentation: the pipeline, in training mode.
        key: the sample key to augment (``"x"``, ``"image"`` or ``"images"``).

    Example:
        >>> data = [{"x": torch.randn(10, 3), "y": torch.tensor(0)}]
        >>> AugmentedDataset(data, build_augmentation("series", {"jitter": 0.05}))[0]["x"].shape
        torch.Size([10, 3])
    """

    def __init__(self, dataset: Dataset, augmentation: Augmentation, key: str = "x") -> None:
        self.dataset = dataset
        self.augmentation = augmentation
        self.key = key
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        worker = get_worker_info()
        if worker is not None and self._worker_seed != worker.seed:
            self._worker_seed = worker.seed
            self.augmentation.reseed(worker.seed % 2**63)
        sample = dict(self.dataset[index])
        sample[self.key] = self.augmentation(sample[self.key])
        return sample


_SERIES: dict[str, type[_SeriesTransform]] = {
    "jitter": Jitter, "scaling": Scaling, "magnitude_warp": MagnitudeWarp, "time_warp": TimeWarp,
    "window_slice": WindowSlice,
}
#: Recipe keys per kind; each value is a strength (for ``hflip`` the probability).
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "series": ("jitter", "scaling", "magnitude_warp", "time_warp", "window_slice"),
    "frames": ("random_resized_crop", "shift", "hflip", "brightness", "contrast"),
    "images": ("random_resized_crop", "shift", "hflip", "brightness", "contrast"),
}
_OPTIONS = ("p", "seed")


def _entry(name: str, value: Any, default_p: float) -> tuple[float, float]:
    """A recipe value -> (strength, p): a number, or ``{strength: s, p: q}``; ``hflip``'s number is its p."""
    if name == "hflip":
        p = value.get("p", default_p) if isinstance(value, Mapping) else value
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"augment.hflip takes the flip probability in [0, 1], got {value!r}")
        return 0.0, float(p)
    if isinstance(value, Mapping):
        unknown = set(value) - {"strength", "p"}
        if unknown:
            raise ConfigError(f"augment.{name}: unknown keys {sorted(unknown)}; valid keys are 'strength' and 'p'")
        strength, p = value.get("strength"), value.get("p", default_p)
        if strength is None:
            raise ConfigError(f"augment.{name} needs a strength, e.g. {{strength: 0.1, p: 0.5}}")
        return float(strength), float(p)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"augment.{name} takes a number or {{strength, p}}, got {value!r}")
    return float(value), default_p


def build_augmentation(kind: str, spec: Mapping[str, Any] | None, *, seed: int | None = None) -> Augmentation:
    """Build the augmentation pipeline a recipe's ``augment`` section describes.

    Keys for series: ``jitter``, ``scaling``, ``magnitude_warp``, ``time_warp``, ``window_slice``; for frames and
    images: ``random_resized_crop``, ``shift``, ``hflip`` (its value is the flip probability), ``brightness``,
    ``contrast``. Each value is a strength or ``{strength: s, p: q}``; ``p`` (default 0.5) sets the probability
    of the others; ``seed`` seeds one generator shared by the pipeline. Transforms run in the order of the keys
    above, whatever the recipe's order.

    Args:
        kind: ``"series"``, ``"frames"`` or ``"images"``.
        spec: the recipe section; ``None`` or ``{}`` builds an empty pipeline (the identity).
        seed: seed when the spec has none; the global RNG when neither gives one.

    Returns:
        An :class:`Augmentation` in training mode.

    Raises:
        ConfigError: unknown keys (the message lists the valid ones) or bad values.

    Example:
        >>> build_augmentation("series", {"jitter": 0.03, "scaling": 0.1, "time_warp": 0.2, "seed": 0})
        Augmentation(
          (0): Jitter(strength=0.03, p=0.5)
          (1): Scaling(strength=0.1, p=0.5)
          (2): TimeWarp(strength=0.2, p=0.5)
        )
    """
    if kind not in AUGMENTATIONS:
        raise UnknownNameError(f"unknown augmentation kind {kind!r}{did_you_mean(kind, AUGMENTATIONS)}; "
                               f"valid kinds are {', '.join(AUGMENTATIONS)}")
    spec = dict(spec or {})
    valid = AUGMENTATIONS[kind]
    for key in spec:
        if key not in valid and key not in _OPTIONS:
            raise UnknownNameError(f"unknown {kind} augmentation {key!r}{did_you_mean(key, valid)}; valid keys "
                                   f"are {', '.join(valid + _OPTIONS)}")
    default_p = float(spec.pop("p", 0.5))
    seed = spec.pop("seed", seed)
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    entries = {name: _entry(name, spec[name], default_p) for name in valid if name in spec}
    transforms: list[RandomTransform] = []
    if kind == "series":
        transforms = [_SERIES[name](s, p=p, generator=generator) for name, (s, p) in entries.items()]
    else:
        if "random_resized_crop" in entries:
            s, p = entries["random_resized_crop"]
            transforms.append(RandomResizedCrop(kind, s, p=p, generator=generator))
        if "shift" in entries:
            s, p = entries["shift"]
            transforms.append(RandomShift(kind, s, p=p, generator=generator))
        if "hflip" in entries:
            transforms.append(HorizontalFlip(kind, p=entries["hflip"][1], generator=generator))
        if "brightness" in entries:
            s, p = entries["brightness"]
            transforms.append(ColorJitter(kind, brightness=s, p=p, generator=generator))
        if "contrast" in entries:
            s, p = entries["contrast"]
            transforms.append(ColorJitter(kind, contrast=s, p=p, generator=generator))
    return Augmentation(kind, *transforms)


class QuestionFlip(nn.Module):
    """Mirror image + question samples left to right and swap left/right words, so the answers stay true.

    A flip is drawn once per image (``image_id``; each row its own image without one). A flipped row's image is
    mirrored, every question token in ``token_swaps`` is replaced by its partner, and so is the answer (class) in
    ``answer_swaps``. A row that holds a word or answer of ``keep_tokens`` / ``keep_answers`` (one side of a pair
    whose other side the vocabulary lacks: "is it in the left half?" where no question says "right") could not be
    written flipped and stays as it is, while other questions about its image flip. The mirrored copy of an
    image gets its own id (``-1 - image_id``), so a model that encodes each ``image_id`` of a batch once (a batch
    of whole images) encodes both copies.

    Args:
        token_swaps: token id -> partner id (both directions).
        answer_swaps: class id -> partner class id (both directions).
        keep_tokens: token ids whose rows are not flipped.
        keep_answers: class ids whose rows are not flipped.
        p: flip probability per image.
        generator: random source; the global RNG when ``None``.

    Shape:
        - batch: ``image`` ``(B, C, H, W)``, ``sequence`` ``(B, L)`` token ids, ``y`` ``(B,)`` class ids,
          optional ``image_id`` ``(B,)`` int64 >= 0; output: a new batch dict (``image_id`` of flipped rows
          ``-1 - id``), the other entries as they were.

    Example:
        >>> flip = QuestionFlip({3: 4, 4: 3}, {0: 1, 1: 0}, p=1.0)
        >>> out = flip({"image": torch.arange(4.0).view(1, 1, 1, 4), "sequence": torch.tensor([[2, 3, 0]]),
        ...             "y": torch.tensor([1])})
        >>> out["image"].flatten().tolist(), out["sequence"].tolist(), out["y"].tolist()
        ([3.0, 2.0, 1.0, 0.0], [[2, 4, 0]], [0])
    """

    def __init__(self, token_swaps: Mapping[int, int], answer_swaps: Mapping[int, int] | None = None, *,
                 keep_tokens: tuple[int, ...] = (), keep_answers: tuple[int, ...] = (), p: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"augment.question_flip takes a flip probability p in [0, 1], got {p!r}")
        self.token_swaps = dict(token_swaps)
        self.answer_swaps = dict(answer_swaps or {})
        self.keep_tokens = tuple(keep_tokens)
        self.keep_answers = tuple(keep_answers)
        self.p = float(p)
        self.generator = generator
        # Buffers: they move with the task to its device once, not per batch.
        self.register_buffer("_token_table", self._table(self.token_swaps), persistent=False)
        self.register_buffer("_answer_table", self._table(self.answer_swaps), persistent=False)

    def extra_repr(self) -> str:
        return f"token_swaps={self.token_swaps}, answer_swaps={self.answer_swaps}, p={self.p}"

    @staticmethod
    def _table(swaps: Mapping[int, int]) -> Tensor:
        """id -> swapped id for ids up to the largest swapped one (the identity elsewhere)."""
        table = torch.arange(max(swaps, default=-1) + 1)  # (n,)
        for a, b in swaps.items():
            table[a] = b
        return table

    @staticmethod
    def _swap(ids: Tensor, table: Tensor) -> Tensor:
        """``ids`` through ``table``; ids past its end are unchanged."""
        if len(table) == 0:
            return ids
        table = table.to(ids.device)  # a no-op once the module sits on the batch's device
        return torch.where(ids < len(table), table[ids.clamp(max=len(table) - 1)], ids)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if not self.training or self.p == 0:
            return batch
        image, sequence, y = batch["image"], batch["sequence"], batch["y"]
        B = image.shape[0]
        image_id = batch.get("image_id")
        if image_id is None:
            image_id = torch.arange(B, device=image.device)
        _, inverse = torch.unique(image_id, return_inverse=True)  # (B,): each row's image among the batch's
        images = int(inverse.max()) + 1
        draws = torch.rand(images, generator=self.generator)  # (U,) one draw per image
        flip = (draws.to(image.device) < self.p)[inverse]  # (B,)
        if self.keep_tokens:  # rows whose flipped question could not be written
            flip &= ~torch.isin(sequence, torch.tensor(self.keep_tokens, device=sequence.device)).any(dim=1)
        if self.keep_answers:
            flip &= ~torch.isin(y, torch.tensor(self.keep_answers, device=y.device))
        if not bool(flip.any()):
            return batch
        words, classes = self._swap(sequence, self._token_table), self._swap(y, self._answer_table)  # (B, L), (B,)
        rows = flip.view(B, *([1] * (image.dim() - 1)))
        out = {**batch, "image": torch.where(rows, image.flip(-1), image),
               "sequence": torch.where(flip[:, None], words, sequence), "y": torch.where(flip, classes, y)}
        if "image_id" in batch:  # the mirrored copy is another image: a model that encodes each id once keeps both
            out["image_id"] = torch.where(flip, -1 - image_id, image_id)
        return out


def build_question_flip(spec: Any, vocab: list[str], answers: list[str]) -> QuestionFlip:
    """The :class:`QuestionFlip` a recipe's ``augment.question_flip`` asks for, against a dataset's words.

    Args:
        spec: word pairs ``[[left, right], ...]``, or ``{swap: [[left, right], ...], p: 0.5}``.
        vocab: the question vocabulary (``info.extras["vocab"]``, index = token id).
        answers: the answer classes (``info.extras["answers"]``).

    Pairs whose words the data never uses are skipped; a word whose partner the vocabulary (or the answer set)
    lacks keeps its rows unflipped.

    Raises:
        ConfigError: a malformed spec.

    Example:
        >>> build_question_flip([["left", "right"]], ["<pad>", "<unk>", "is", "left", "right"], ["no", "yes"])
        QuestionFlip(token_swaps={3: 4, 4: 3}, answer_swaps={}, p=0.5)
    """
    p = 0.5
    pairs = spec
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"swap", "p"}
        if unknown:
            raise ConfigError(f"augment.question_flip: unknown keys {sorted(unknown)}; valid keys are 'swap' and 'p'")
        pairs, p = spec.get("swap"), spec.get("p", 0.5)
    ok = isinstance(pairs, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(w, str) and w for w in pair)
        for pair in pairs)
    if not ok:
        raise ConfigError(f"augment.question_flip takes word pairs to swap when an image is mirrored, e.g. "
                          f"[[left, right]] or {{swap: [[left, right]], p: 0.5}}; got {spec!r}")

    def swaps(names: list[str]) -> tuple[dict[int, int], tuple[int, ...]]:
        index = {w: i for i, w in enumerate(names)}
        table: dict[int, int] = {}
        keep: list[int] = []
        for a, b in pairs:
            a, b = a.lower(), b.lower()
            if a in index and b in index:
                table[index[a]], table[index[b]] = index[b], index[a]
            else:
                keep += [index[w] for w in (a, b) if w in index]
        return table, tuple(keep)

    token_swaps, keep_tokens = swaps(list(vocab))
    answer_swaps, keep_answers = swaps([a.lower() for a in answers])
    return QuestionFlip(token_swaps, answer_swaps, keep_tokens=keep_tokens, keep_answers=keep_answers, p=p)
