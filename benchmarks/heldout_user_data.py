"""Held-out sets for the generic ``text_lines`` and ``forecast`` recipes, written in the user layouts, then fitted.

No set is a builtin: text lines are lowercase words and digits of 3-8 characters drawn in several fonts
(the ``captcha`` package's DroidSansMono, Pillow's default font, DejaVu/Liberation where installed) at several
sizes, clean (no captcha noise); the forecasting set is bouncing geometric shapes (discs, squares, triangles),
not digits; a second forecasting set is soft Gaussian blobs drifting over a static grey gradient (40 x 40,
18 frames), where the background is not black. Each set is written to disk (``text:DIR`` and
``forecast:PATH``) and the shipped recipe is run on it with only ``--data`` changed.

Usage:
    python -m benchmarks.heldout_user_data OUT [--only text|forecast|blobs] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["write_text_lines", "write_bouncing_shapes", "write_drifting_blobs", "main"]

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _fonts() -> list[tuple[str, object]]:
    import captcha

    paths = [Path(captcha.__file__).parent / "data" / "DroidSansMono.ttf"]
    for extra in ("dejavu/DejaVuSerif.ttf", "liberation/LiberationSans-Regular.ttf", "dejavu/DejaVuSans-Bold.ttf"):
        path = Path("/usr/share/fonts/truetype") / extra
        if path.is_file():
            paths.append(path)
    fonts = [(p.stem, lambda size, p=p: ImageFont.truetype(str(p), size)) for p in paths]
    fonts.append(("pillow-default", lambda size: ImageFont.load_default(size)))
    return fonts


def write_text_lines(out: Path, n_train: int = 3000, n_test: int = 500, seed: int = 0) -> Path:
    """Text lines of variable length and font at height 32, in the ``text:DIR`` layout."""
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    for split, n in (("train", n_train), ("test", n_test)):
        (out / split).mkdir(parents=True, exist_ok=True)
        rows = ["image,text,font"]
        for i in range(n):
            text = "".join(rng.choice(list(CHARS), size=int(rng.integers(3, 9))))
            name, make = fonts[int(rng.integers(len(fonts)))]
            font = make(int(rng.integers(18, 25)))
            left, top, right, bottom = font.getbbox(text)
            width = right - left + int(rng.integers(4, 16))
            ink, paper = int(rng.integers(0, 80)), int(rng.integers(180, 256))
            image = Image.new("L", (width, 32), paper)
            ImageDraw.Draw(image).text((int(rng.integers(2, 6)) - left, (32 - (bottom - top)) // 2 - top), text,
                                       fill=ink, font=font)
            pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, size=(32, width))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out / split / f"{i:05d}.png")
            rows.append(f"{split}/{i:05d}.png,{text},{name}")
        (out / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def _shape_mask(kind: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] + 0.5
    c = size / 2
    if kind == 0:  # disc
        return (xx - c) ** 2 + (yy - c) ** 2 <= c**2
    if kind == 1:  # square
        return np.ones((size, size), dtype=bool)
    return (yy >= size - 2 * np.abs(xx - c) - 0.5) & (yy <= size)  # triangle pointing up


def write_bouncing_shapes(path: Path, n_train: int = 600, n_test: int = 100, steps: int = 15, canvas: int = 32,
                          seed: int = 0) -> Path:
    """Two shapes of random kind, size, brightness and velocity bouncing in a box: uint8 ``train``/``test``
    arrays ``(N, steps, canvas, canvas)`` in one ``.npz``."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        frames = np.zeros((n, steps, canvas, canvas), dtype=np.uint8)
        for k in range(n):
            for _ in range(2):
                size = int(rng.integers(6, 11))
                mask = _shape_mask(int(rng.integers(3)), size)
                value = int(rng.integers(120, 256))
                room = canvas - size
                pos = rng.uniform(0, room, size=2)
                angle = rng.uniform(0, 2 * np.pi)
                vel = rng.uniform(1.0, 2.5) * np.array([np.cos(angle), np.sin(angle)])
                for t in range(steps):
                    x, y = np.rint(pos).astype(int)
                    patch = frames[k, t, y : y + size, x : x + size]
                    patch[mask] = np.maximum(patch[mask], value)
                    pos = pos + vel
                    for d in range(2):  # reflect off the walls
                        if pos[d] < 0 or pos[d] > room:
                            pos[d] = -pos[d] if pos[d] < 0 else 2 * room - pos[d]
                            vel[d] = -vel[d]
        arrays[split] = frames
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_drifting_blobs(path: Path, n_train: int = 400, n_test: int = 100, steps: int = 18, canvas: int = 40,
                         seed: int = 1) -> Path:
    """Two or three soft Gaussian blobs (sigma 2-5 px, peak 100-200 above the background) drifting at 0.5-2 px per
    frame and bouncing off the walls, added over a static per-clip grey gradient (levels 10-70) with faint
    sensor noise (sigma 2): uint8 ``train``/``test`` arrays ``(N, steps, canvas, canvas)`` in one ``.npz``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:canvas, :canvas].astype(np.float64)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        frames = np.zeros((n, steps, canvas, canvas), dtype=np.uint8)
        for k in range(n):
            angle = rng.uniform(0, 2 * np.pi)
            ramp = (np.cos(angle) * (xx - canvas / 2) + np.sin(angle) * (yy - canvas / 2)) / canvas + 0.5
            low, high = rng.uniform(10, 70, size=2)
            clip = np.repeat((low + (high - low) * ramp)[None], steps, axis=0)  # (steps, H, W) static background
            for _ in range(int(rng.integers(2, 4))):
                sigma, peak = rng.uniform(2, 5), rng.uniform(100, 200)
                pos = rng.uniform(sigma, canvas - sigma, size=2)
                heading = rng.uniform(0, 2 * np.pi)
                vel = rng.uniform(0.5, 2.0) * np.array([np.cos(heading), np.sin(heading)])
                for t in range(steps):
                    clip[t] += peak * np.exp(-((xx - pos[0]) ** 2 + (yy - pos[1]) ** 2) / (2 * sigma**2))
                    pos = pos + vel
                    for d in range(2):  # reflect off the walls
                        if pos[d] < 0 or pos[d] > canvas - 1:
                            pos[d] = -pos[d] if pos[d] < 0 else 2 * (canvas - 1) - pos[d]
                            vel[d] = -vel[d]
            frames[k] = (clip + rng.normal(0, 2, size=clip.shape)).clip(0, 255).round().astype(np.uint8)
        arrays[split] = frames
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _fit(recipe: str, spec: str, run: Path, overrides: list[str]) -> dict:
    from cnnlstm.cli import main as cli

    args = ["fit", "--recipe", recipe, "--data", spec, "--out", str(run)]
    if overrides:
        args += ["--set", *overrides]
    if cli(args) != 0:
        raise SystemExit(f"fit {recipe} failed")
    return json.loads((run / "metrics.json").read_text())


def copy_last_ssim(spec: str, seed: int = 0) -> float:
    """SSIM of the copy-last-frame forecast on the test split, with the forecasting task's SSIM settings."""
    import torch

    from cnnlstm.data import load_dataset
    from cnnlstm.tasks.forecasting import frame_ssim

    test = load_dataset(spec, seed=seed).test
    x = torch.stack([test[i]["x"] for i in range(len(test))])  # (N, T, C, H, W)
    y = torch.stack([test[i]["y"] for i in range(len(test))])  # (N, K, C, H, W)
    return float(frame_ssim(x[:, -1:].expand_as(y).flatten(0, 1), y.flatten(0, 1)).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", choices=("text", "forecast", "blobs"))
    parser.add_argument("--set", nargs="+", action="extend", default=[], dest="overrides")
    args = parser.parse_args(argv)
    results = {}
    if args.only in (None, "text"):
        data = args.out / "lines"
        if not data.exists():
            write_text_lines(data)
        results["text_lines"] = _fit("text_lines", f"text:{data}", args.out / "run_text", args.overrides)
    forecasting = {"forecast": ("shapes.npz", write_bouncing_shapes, "run_forecast"),
                   "blobs": ("blobs.npz", write_drifting_blobs, "run_blobs")}
    for key, (file, write, run) in forecasting.items():
        if args.only in (None, key):
            data = args.out / file
            if not data.exists():
                write(data)
            results[key] = _fit("forecast", f"forecast:{data}", args.out / run, args.overrides)
            results[key]["test/baseline_ssim"] = copy_last_ssim(f"forecast:{data}")
    print(json.dumps({"cpu_threads": os.cpu_count(), **results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
