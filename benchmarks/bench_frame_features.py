"""Inference cost of frame_lstm's frame-feature modes with the packaged pretrained EfficientNet-Lite0.

For each mode (the settings docs/benchmarks.md section 2f trains): clips per second from frames and from cached
frame features (the frozen-encoder feature cache path), and the cached bytes per clip (float32). The modes
alternate repeat by repeat in one process, so load bursts from other processes hit them alike; the median is kept.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_frame_features  # 16 clips x 8 frames x 3x64x64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnlstm.models import create_model

__all__ = ["MODES", "measure"]

#: mode -> frame_lstm settings beside the encoder (as the 2f table's rows train them)
MODES = {
    "pooled": {"frame_features": "pooled", "hidden_size": 64},
    "grid": {"frame_features": "grid", "feature_stage": 3, "grid_size": 4, "hidden_size": 64,
             "frame_difference": True},
    "conv_lstm": {"frame_features": "conv_lstm", "feature_stage": 2, "grid_size": 8, "hidden_size": 64,
                  "frame_difference": True},
    "attention": {"frame_features": "attention", "feature_stage": 2, "grid_size": 8, "hidden_size": 64,
                  "frame_difference": True},
}


def measure(batch: int = 16, frames: int = 8, size: int = 64, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median clips/s from frames and from cached features, and cached float32 bytes per clip, per mode."""
    models = {name: create_model("frame_lstm", num_classes=4, encoder="timm:tf_efficientnet_lite0", pretrained=True,
                                 freeze="all", **kwargs).eval() for name, kwargs in MODES.items()}
    x = torch.rand(batch, frames, 3, size, size)  # (B, T, C, H, W)
    with torch.no_grad():
        feats = {name: m.forward_sequence_features(x) for name, m in models.items()}  # (B, T, D_frame)
        for name, m in models.items():  # warm-up
            m(x)
            m.forward_from_features(feats[name])
        times: dict[str, dict[str, list[float]]] = {n: {"frames": [], "cache": []} for n in models}
        for _ in range(repeats):
            for name, m in models.items():
                start = time.perf_counter()
                m(x)
                times[name]["frames"].append(batch / (time.perf_counter() - start))
                start = time.perf_counter()
                for _ in range(10):
                    m.forward_from_features(feats[name])
                times[name]["cache"].append(10 * batch / (time.perf_counter() - start))
    return {name: {"clips_per_s_frames": statistics.median(times[name]["frames"]),
                   "clips_per_s_cache": statistics.median(times[name]["cache"]),
                   "cached_bytes_per_clip": frames * models[name].frame_dim * 4} for name in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        before = f.read().split()[:3]
    results = measure(repeats=args.repeats)
    with open("/proc/loadavg") as f:
        after = f.read().split()[:3]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average before {before}, "
          f"after {after}")
    print("| mode | clips/s from frames | clips/s from cache | cached bytes / clip (float32) |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['clips_per_s_frames']:.1f} | {r['clips_per_s_cache']:,.0f} | "
              f"{r['cached_bytes_per_clip']:,} |")


if __name__ == "__main__":
    main()
