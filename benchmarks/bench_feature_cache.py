"""Epoch time of frame_lstm with a frozen pretrained CNN: cached features vs recomputing the CNN every epoch.

Both paths train the same model (LSTM + head; the encoder ``timm:tf_efficientnet_lite0`` with its packaged
ImageNet weights is frozen) on the same clips with the same optimiser, in one run, and report the median epoch
time of each and their ratio. The clips are real photographs (scikit-learn's sample images) panned across
``T`` frames and held in memory, so the uncached path pays only the CNN, not decoding: the measured speedup is
a lower bound for clips read from disk.

Run:
    python -m benchmarks.bench_feature_cache                 # 64 clips x 8 frames x 112x112, 3 epochs each, 1 thread
    python -m benchmarks.bench_feature_cache --clips 16 --epochs 3 --size 64   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.machine import machine_info
from cnnlstm.data import DataInfo, DatasetBundle, pad_collate
from cnnlstm.engine.feature_cache import use_feature_cache
from cnnlstm.models import create_model

__all__ = ["PanningClips", "run_epoch", "main"]


class PanningClips(Dataset):
    """Clips that pan a window across a real photograph; the class is the pan direction (left or right).

    Args:
        n: number of clips.
        num_frames: frames per clip, T.
        size: frame height and width.
        mean: per-channel normalisation mean (the encoder's ``pretrained_config``).
        std: per-channel normalisation std.
        seed: seed of the crops.

    Shape:
        - sample ``x``: (T, 3, size, size) float32; ``y``: int64 scalar.
    """

    def __init__(self, n: int, num_frames: int, size: int, mean: tuple, std: tuple, seed: int = 0) -> None:
        from sklearn.datasets import load_sample_images

        images = [torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255.0 for im in load_sample_images().images]
        rng = np.random.default_rng(seed)
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        clips, labels = [], []
        for i in range(n):
            image = images[i % len(images)]  # (3, 427, 640)
            _, height, width = image.shape
            y = int(rng.integers(2))
            top = int(rng.integers(0, height - size))
            step = int(rng.integers(4, 12)) * (1 if y else -1)
            left0 = int(rng.integers(0, width - size - 12 * num_frames)) + (0 if y else 12 * num_frames)
            frames = [image[:, top : top + size, left0 + t * step : left0 + t * step + size] for t in range(num_frames)]
            clips.append((torch.stack(frames) - m) / s)  # (T, 3, size, size)
            labels.append(y)
        self.clips, self.labels = clips, torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.clips[i], "y": self.labels[i]}


def run_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """One training epoch (forward, cross-entropy, backward, step); returns its wall time in seconds."""
    model.train()  # the frozen encoder stays in eval mode (FrameEncoder.train keeps frozen modules eval)
    start = time.perf_counter()
    for batch in loader:
        logits = model(batch["x"], batch.get("lengths"))  # (B, K)
        loss = F.cross_entropy(logits, batch["y"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def _machine() -> dict:
    return machine_info()


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per path (median reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--encoder", default="timm:tf_efficientnet_lite0")
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both paths; on a shared, oversubscribed CPU, 2+ threads make the "
                             "small LSTM steps spin-wait (measured 20x slower under load 8 on 2 cores)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = _machine()
    model = create_model("frame_lstm", num_classes=2, in_channels=3, encoder=args.encoder, pretrained=True,
                         freeze="all", hidden_size=128, image_size=args.size)
    cfg = model.encoder.pretrained_config
    train = PanningClips(args.clips, args.frames, args.size, cfg["mean"], cfg["std"], seed=0)
    test = PanningClips(max(2, args.clips // 8), args.frames, args.size, cfg["mean"], cfg["std"], seed=1)
    bundle = DatasetBundle(name="bench:panning_clips", kind="frames", train=train, test=test,
                           info=DataInfo(model_kwargs={"num_classes": 2}), collate_fn=pad_collate)
    identity = {"spec": bundle.name, "options": vars(args), "seed": 0}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.cache_dir or tmp)
        start = time.perf_counter()
        cached_bundle, fast = use_feature_cache(bundle, model, mode=True, identity=identity, root=root)
        build_s = time.perf_counter() - start
        cache_mb = _dir_bytes(Path(cached_bundle.train.path)) / 2**20

        def loader(ds: Dataset) -> DataLoader:
            g = torch.Generator().manual_seed(0)
            return DataLoader(ds, batch_size=args.batch_size, shuffle=True, collate_fn=pad_collate, generator=g)

        params = [p for p in model.parameters() if p.requires_grad]  # LSTM + head, shared by both paths
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        run_epoch(fast, loader(cached_bundle.train), optimizer)  # warm-up: first-touch page faults, allocator
        full_times = [run_epoch(model, loader(train), optimizer) for _ in range(args.epochs)]
        cached_times = [run_epoch(fast, loader(cached_bundle.train), optimizer) for _ in range(max(3, args.epochs))]

    full, cached = statistics.median(full_times), statistics.median(cached_times)
    result = {"full_s": full, "cached_s": cached, "speedup": full / cached, "build_s": build_s,
              "cache_mb": cache_mb, "full_times": full_times, "cached_times": cached_times, "machine": info}
    load = info.get("load_average")
    print(f"## Feature cache: frame_lstm + frozen {args.encoder} (pretrained), {args.clips} clips x "
          f"{args.frames} frames x {args.size}x{args.size}, batch {args.batch_size}\n")
    print(f"- machine: {info.get('cpu')} ({info.get('usable_cores', info.get('cpu_count'))} usable cores, "
          f"torch {info.get('torch')}, {info.get('torch_threads')} threads); load average before: {load}")
    print(f"- date: {info.get('date')}")
    command = sys.orig_argv if argv is None else ["python", "-m", "benchmarks.bench_feature_cache", *argv]
    print(f"- command: `{' '.join(command)}`\n")
    print("| path | median epoch (s) | epochs timed | speedup |")
    print("|---|---:|---:|---:|")
    print(f"| recompute CNN every epoch | {full:.3f} | {len(full_times)} | 1.0x |")
    print(f"| cached features (mmap shards) | {cached:.4f} | {len(cached_times)} | {full / cached:.0f}x |")
    print(f"\nOne-off cache build (train + test splits): {build_s:.2f} s; train cache on disk {cache_mb:.1f} MiB; "
          f"load average after: {_machine().get('load_average')}")
    return result


if __name__ == "__main__":
    main()
