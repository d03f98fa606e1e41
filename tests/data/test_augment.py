"""Augmentation: changes data in training, exact identity in evaluation, padding and endpoints kept, seeded."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from cnnlstm.data.augment import (
    AugmentedDataset,
    ColorJitter,
    HorizontalFlip,
    Jitter,
    MagnitudeWarp,
    RandomResizedCrop,
    RandomShift,
    Scaling,
    TimeWarp,
    WindowSlice,
    build_augmentation,
)
from cnnlstm.errors import ConfigError, ShapeError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SERIES = {
    "jitter": lambda g: Jitter(0.1, p=1.0, generator=g),
    "scaling": lambda g: Scaling(0.2, p=1.0, generator=g),
    "magnitude_warp": lambda g: MagnitudeWarp(0.3, p=1.0, generator=g),
    "time_warp": lambda g: TimeWarp(0.4, p=1.0, generator=g),
    "window_slice": lambda g: WindowSlice(0.3, p=1.0, generator=g),
}
IMAGES = {
    "crop": lambda kind, g: RandomResizedCrop(kind, 0.5, p=1.0, generator=g),
    "hflip": lambda kind, g: HorizontalFlip(kind, p=1.0, generator=g),
    "shift": lambda kind, g: RandomShift(kind, 0.3, p=1.0, generator=g),
    "color": lambda kind, g: ColorJitter(kind, brightness=0.3, contrast=0.3, p=1.0, generator=g),
}


def _series_batch() -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.linspace(0, 6.28, 12)
    x = torch.stack([torch.stack([t.sin(), t.cos(), t / 6], 1), torch.stack([t.cos(), t.sin(), 1 - t / 6], 1)])
    return x + 0.1, torch.tensor([12, 7])  # (2, 12, 3); the second series has 5 padded steps of real-looking data


@pytest.mark.parametrize("name", SERIES)
def test_series_change_in_training_identity_in_eval_padding_untouched(name: str) -> None:
    x, lengths = _series_batch()
    aug = SERIES[name](_gen())
    out = aug(x, lengths)
    assert out.shape == x.shape
    assert not torch.allclose(out[0], x[0]) and not torch.allclose(out[1, :7], x[1, :7])
    assert torch.equal(out[1, 7:], x[1, 7:])  # padded steps exactly as they were
    aug.eval()
    assert aug(x, lengths) is x


@pytest.mark.parametrize("name", SERIES)
def test_series_single_sample_and_seeded(name: str) -> None:
    x, _ = _series_batch()
    single = SERIES[name](_gen(1))(x[0])
    assert single.shape == (12, 3) and not torch.allclose(single, x[0])
    a, b, c = SERIES[name](_gen(1)), SERIES[name](_gen(1)), SERIES[name](_gen(2))
    first_a, first_b = a(x), b(x)
    assert torch.equal(first_a, first_b) and not torch.equal(first_b, c(x))
    assert not torch.equal(a(x), first_a)  # the stream moves on: the next call draws anew


def test_time_warp_keeps_endpoints_of_each_valid_length() -> None:
    x, lengths = _series_batch()
    out = TimeWarp(0.5, p=1.0, generator=_gen())(x, lengths)
    for b, L in enumerate(lengths.tolist()):
        assert torch.equal(out[b, 0], x[b, 0]) and torch.equal(out[b, L - 1], x[b, L - 1])


def test_time_warp_of_a_ramp_is_a_monotone_reparametrisation() -> None:
    # On a ramp x[t] = t the output is the warp itself: increasing, 0 -> L-1, and not the identity.
    ramp = torch.arange(20.0).view(1, 20, 1)
    out = TimeWarp(0.5, p=1.0, generator=_gen())(ramp).flatten()
    assert (out[0], out[-1]) == (0.0, 19.0)
    assert bool((out.diff() > 0).all()) and not torch.allclose(out, ramp.flatten())


def test_window_slice_reads_a_stretched_window_of_a_ramp() -> None:
    ramp = torch.arange(11.0).view(1, 11, 1)
    out = WindowSlice(0.4, p=1.0, generator=_gen())(ramp).flatten()
    steps = out.diff()
    assert torch.allclose(steps, torch.full_like(steps, 0.6), atol=1e-5)  # 60 % of the span over the full span
    assert 0.0 <= out[0] <= 4.0 + 1e-5 and torch.isclose(out[-1] - out[0], torch.tensor(6.0))


def test_scaling_is_one_factor_per_sample_and_variable() -> None:
    x = torch.ones(3, 5, 2)
    out = Scaling(0.2, p=1.0, generator=_gen())(x)
    assert torch.equal(out, out[:, :1].expand_as(out))  # constant over time
    assert not torch.allclose(out[:, 0, 0], out[:, 0, 1])


def test_probability_picks_samples() -> None:
    x = torch.randn(200, 4, 2)
    out = Jitter(0.1, p=0.3, generator=_gen())(x)
    changed = (out != x).flatten(1).any(1).float().mean()
    assert 0.2 < changed < 0.4
    assert torch.equal(Jitter(0.1, p=0.0)(x), x)


@pytest.mark.parametrize("kind", ["images", "frames"])
@pytest.mark.parametrize("name", IMAGES)
def test_image_transforms_train_and_eval(kind: str, name: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 3, 8, 8) if kind == "frames" else torch.rand(2, 3, 8, 8)
    aug = IMAGES[name](kind, _gen())
    out = aug(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert torch.equal(IMAGES[name](kind, _gen(5))(x), IMAGES[name](kind, _gen(5))(x))
    assert IMAGES[name](kind, _gen())(x[0]).shape == x[0].shape
    aug.eval()
    assert aug(x) is x


def test_clip_frames_share_one_draw_and_padded_frames_stay() -> None:
    frame = torch.rand(3, 8, 8)
    clip = frame.expand(4, 3, 8, 8).clone()  # four identical frames
    x = torch.stack([clip, clip])  # (2, 4, 3, 8, 8)
    for aug in (RandomResizedCrop("frames", 0.5, p=1.0, generator=_gen()),
                ColorJitter("frames", brightness=0.3, contrast=0.3, p=1.0, generator=_gen())):
        out = aug(x, torch.tensor([4, 2]))
        assert torch.allclose(out[0], out[0, :1].expand_as(out[0]))  # every frame got the same crop/colour
        assert torch.equal(out[1, 2:], x[1, 2:])  # padded frames untouched
        assert not torch.allclose(out[1, :2], x[1, :2])


def test_flip_and_full_crop_are_exact() -> None:
    x = torch.rand(2, 3, 5, 7)
    assert torch.equal(HorizontalFlip("images", p=1.0)(x), x.flip(-1))
    full = RandomResizedCrop("images", 0.0, ratio=(1.0, 1.0), p=1.0)(x)  # the whole image: resampled in place
    assert torch.allclose(full, x, atol=1e-5)


def _shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Reference: pad each side by its edge pixels, then cut the window that moves the content by (dx, dy)."""
    H, W = image.shape[-2:]
    m = max(abs(dx), abs(dy))
    padded = torch.nn.functional.pad(image[None], (m, m, m, m), mode="replicate")[0]
    return padded[..., m - dy:m - dy + H, m - dx:m - dx + W]


def test_shift_moves_whole_pixels_within_strength_and_fills_with_the_edge() -> None:
    x = torch.rand(64, 3, 10, 20)
    out = RandomShift("images", 0.2, p=1.0, generator=_gen())(x)  # at most 2 rows and 4 columns
    seen = set()
    for image, moved in zip(x, out, strict=True):
        matches = [(dx, dy) for dx in range(-4, 5) for dy in range(-2, 3)
                   if torch.equal(moved, _shifted(image, dx, dy))]
        assert len(matches) == 1, "every image is an exact whole-pixel shift of itself"
        seen.add(matches[0])
    assert len(seen) > 15 and {dx for dx, _ in seen} == set(range(-4, 5))  # the whole range is drawn
    assert torch.equal(RandomShift("images", 0.0, p=1.0)(x), x)
    with pytest.raises(ConfigError, match="fraction of the side"):
        RandomShift("images", 0.5)


def test_brightness_only_scales() -> None:
    x = torch.rand(4, 3, 6, 6) + 0.1
    out = ColorJitter("images", brightness=0.5, p=1.0, generator=_gen())(x)
    ratio = out / x
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-5)  # one factor per image


def test_builder_from_recipe_section() -> None:
    aug = build_augmentation("series", {"time_warp": 0.2, "jitter": 0.03, "scaling": {"strength": 0.1, "p": 0.9},
                                        "p": 0.4, "seed": 3})
    assert [type(t).__name__ for t in aug] == ["Jitter", "Scaling", "TimeWarp"]
    assert [t.p for t in aug] == [0.4, 0.9, 0.4]
    x, lengths = _series_batch()
    again = build_augmentation("series", {"time_warp": 0.2, "jitter": 0.03, "scaling": {"strength": 0.1, "p": 0.9},
                                          "p": 0.4, "seed": 3})
    assert torch.equal(aug(x, lengths), again(x, lengths))
    images = build_augmentation("images", {"hflip": 0.5, "brightness": 0.2, "contrast": 0.1,
                                           "random_resized_crop": 0.3})
    assert [type(t).__name__ for t in images] == ["RandomResizedCrop", "HorizontalFlip", "ColorJitter", "ColorJitter"]
    assert images[1].p == 0.5
    assert len(build_augmentation("frames", None)) == 0


def test_builder_rejects_unknown_keys_naming_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'time_wrap'.*did you mean 'time_warp'.*valid keys are jitter"):
        build_augmentation("series", {"time_wrap": 0.2})
    with pytest.raises(ConfigError, match="valid keys are random_resized_crop, shift, hflip"):
        build_augmentation("images", {"jitter": 0.1})  # a series augmentation for images
    with pytest.raises(ConfigError, match="kind"):
        build_augmentation("audio", {})
    with pytest.raises(ConfigError, match="strength"):
        build_augmentation("series", {"jitter": {"p": 0.5}})
    with pytest.raises(ConfigError, match="fraction cut away"):
        build_augmentation("series", {"window_slice": 1.5})


def test_wrong_layout_raises_shape_error() -> None:
    with pytest.raises(ShapeError, match=r"\(B, T, F\)"):
        Jitter(0.1, p=1.0)(torch.randn(2, 3, 4, 5))
    with pytest.raises(ShapeError, match="lengths"):
        Jitter(0.1, p=1.0)(torch.randn(2, 3, 4), torch.tensor([4, 1]))


def test_augmented_dataset_varies_per_worker_and_repeats_per_seed() -> None:
    data = [{"x": torch.zeros(6, 2), "y": torch.tensor(i)} for i in range(4)]

    def run() -> torch.Tensor:
        torch.manual_seed(0)
        ds = AugmentedDataset(data, build_augmentation("series", {"jitter": {"strength": 0.1, "p": 1.0}, "seed": 1}))
        loader = DataLoader(ds, batch_size=1, num_workers=2)
        return torch.cat([b["x"] for b in loader])

    first, second = run(), run()
    assert torch.equal(first, second)
    # Workers 0 and 1 serve samples 0, 2 and 1, 3: their first draws differ (not the same copied generator).
    assert not torch.equal(first[0], first[1])
    assert torch.equal(data[0]["x"], torch.zeros(6, 2))  # the source samples are not modified
