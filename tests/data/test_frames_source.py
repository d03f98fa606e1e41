"""frames: source: PNG clips of mixed sizes and modes built here; each frame's grey level encodes its index."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlstm.data import load_dataset, sample_frame_indices, split_train_val
from cnnlstm.errors import ConfigError, DataError

LEVEL = 20  # frame k is filled with grey level LEVEL * k, so a sample tells which frames it holds
MODES = ["RGB", "L", "RGBA", "P"]
SIZES = [(40, 30), (24, 20)]  # PIL (W, H)


def frame(k: int) -> Image.Image:
    v = LEVEL * k
    image = Image.new("RGB", SIZES[k % 2], (v, v, v))
    mode = MODES[k % 4]
    return image.convert(mode) if mode != "P" else image.quantize(colors=2)


def make_clips(root, clips_per_class=3, n_frames=(12, 3, 5)):
    for cls in ("cat", "dog"):
        for c in range(clips_per_class):
            clip = root / cls / f"clip{c}"
            clip.mkdir(parents=True)
            for k in range(1, n_frames[c] + 1):  # unpadded names: frame10 must follow frame9
                frame(k).save(clip / f"frame{k}.png")
    return root


def levels(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0] * 255 / LEVEL).round().long().tolist()  # frame index of each time step


def test_uniform_frames_mixed_sizes_and_modes(tmp_path):
    make_clips(tmp_path)
    bundle = load_dataset(f"frames:{tmp_path}", num_frames=4, size=(32, 32), test_fraction=1 / 3, seed=0)
    assert bundle.kind == "frames"
    assert (len(bundle.train), len(bundle.test)) == (4, 2)  # one clip of each class held out
    assert bundle.info.model_kwargs == {"num_classes": 2, "in_channels": 3}
    assert bundle.info.class_names == ["cat", "dog"]
    by_length = {}
    for split in (bundle.train, bundle.test):
        for i in range(len(split)):
            sample = split[i]
            assert sample["x"].shape == (4, 3, 32, 32) and sample["x"].dtype == torch.float32
            assert torch.allclose(sample["x"], sample["x"][:, :1, :1, :1].expand_as(sample["x"]), atol=1 / 255)
            by_length[len(split.clips[i].frames)] = levels(sample["x"])
    # segment middles, by hand: 12 frames -> (i + .5) * 3 -> 1, 4, 7, 10; 3 frames -> (i + .5) * .75 -> 0, 1, 1, 2
    # (indices are 0-based, frame names 1-based)
    assert by_length[12] == [2, 5, 8, 11]
    assert by_length[3] == [1, 2, 2, 3]
    assert by_length[5] == [1, 2, 4, 5]  # (i + .5) * 1.25 -> 0, 1, 3, 4


def test_grayscale_normalisation_and_default_size(tmp_path):
    make_clips(tmp_path)
    bundle = load_dataset(f"frames:{tmp_path}", num_frames=2, in_channels=1, mean=0.5, std=0.25, test_fraction=0.34)
    x = bundle.train[0]["x"]
    assert x.shape == (2, 1, 20, 24)  # default size: the first training clip's frame1, 24x20 (W x H)
    raw = x * 0.25 + 0.5  # undo the normalisation by hand: grey levels of whole frames
    expected = torch.tensor(levels(raw), dtype=torch.float32).mul(LEVEL / 255).view(-1, 1, 1, 1)
    torch.testing.assert_close(raw, expected.expand_as(raw), atol=1 / 255, rtol=0)
    assert bundle.info.model_kwargs["in_channels"] == 1


def test_random_sampling_for_training_only(tmp_path):
    make_clips(tmp_path, n_frames=(12, 12, 12))
    bundle = load_dataset(f"frames:{tmp_path}", num_frames=4, size=16, sampling="random", test_fraction=0.34)
    torch.manual_seed(0)
    draws = {tuple(levels(bundle.train[0]["x"])) for _ in range(10)}
    assert len(draws) > 1
    for d in draws:  # one frame from each third-length segment [0,3), [3,6), [6,9), [9,12)
        assert all(3 * i + 1 <= f <= 3 * i + 3 for i, f in enumerate(d))
    assert {tuple(levels(bundle.test[0]["x"])) for _ in range(3)} == {(2, 5, 8, 11)}
    _, val = split_train_val(bundle.train, 0.5, seed=0, stratify=bundle.info.targets)
    assert {tuple(levels(val[0]["x"])) for _ in range(3)} == {(2, 5, 8, 11)}  # validation is not augmented


def test_test_dir_and_batching(tmp_path):
    make_clips(tmp_path / "train", clips_per_class=2)
    make_clips(tmp_path / "test", clips_per_class=1)
    bundle = load_dataset(f"frames:{tmp_path / 'train'}", num_frames=3, size=(8, 8), test_dir=str(tmp_path / "test"))
    assert (len(bundle.train), len(bundle.test)) == (4, 2)
    batch = bundle.collate_fn([bundle.train[0], bundle.train[3]])
    assert batch["x"].shape == (2, 3, 3, 8, 8) and batch["y"].tolist() == [0, 1]
    with pytest.raises(ConfigError, match="not both"):
        load_dataset(f"frames:{tmp_path / 'train'}", test_dir=str(tmp_path / "test"), test_fraction=0.5)


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(f"frames:{tmp_path}")
    (tmp_path / "cat").mkdir()
    frame(1).save(tmp_path / "cat" / "loose.png")
    with pytest.raises(DataError, match="put each clip's frames in a folder of its own"):
        load_dataset(f"frames:{tmp_path}")
    (tmp_path / "cat" / "loose.png").unlink()
    (tmp_path / "cat" / "clip0").mkdir()
    (tmp_path / "cat" / "clip0" / "notes.txt").write_text("no frames here")
    with pytest.raises(DataError, match="has no image frames"):
        load_dataset(f"frames:{tmp_path}")


def test_corrupt_frame_is_a_data_error(tmp_path):
    make_clips(tmp_path, n_frames=(2, 2, 2))
    frame = tmp_path / "cat" / "clip0" / "frame1.png"
    intact = frame.read_bytes()
    frame.write_bytes(b"not a png")  # no image header: named when the data loads, before any training
    with pytest.raises(DataError, match="cannot read frame .*frame1.png"):
        load_dataset(f"frames:{tmp_path}", num_frames=2, size=8, test_fraction=0.34, seed=0)
    frame.write_bytes(intact[: intact.index(b"IDAT") + 6])  # header intact, pixels cut off: found when decoded
    bundle = load_dataset(f"frames:{tmp_path}", num_frames=2, size=8, test_fraction=0.34, seed=0)
    broken = tmp_path / "cat" / "clip0"
    for split in (bundle.train, bundle.test):
        for i, clip in enumerate(split.clips):
            if clip.path == broken:
                with pytest.raises(DataError, match="cannot read frame .*frame1.png"):
                    split[i]
            else:
                assert split[i]["x"].shape == (2, 3, 8, 8)


def test_missing_pyav_says_how_to_install(tmp_path, monkeypatch):
    make_clips(tmp_path, clips_per_class=2)
    (tmp_path / "dog" / "clip9.mp4").write_bytes(b"\x00")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(DataError, match=r'pip install "cnnlstm\[video\]"'):
        load_dataset(f"frames:{tmp_path}", size=8)


def test_sample_frame_indices_edges():
    assert sample_frame_indices(1, 3) == [0, 0, 0]
    assert sample_frame_indices(8, 8) == list(range(8))
    with pytest.raises(DataError):
        sample_frame_indices(0, 2)


def test_video_clips_decode_the_chosen_frames(tmp_path):
    av = pytest.importorskip("av")
    for cls, shift in (("a", 0), ("b", 1)):
        for c in range(2):
            (tmp_path / cls).mkdir(exist_ok=True)
            with av.open(str(tmp_path / cls / f"clip{c}.mp4"), mode="w") as out:
                stream = out.add_stream("mpeg4", rate=10)
                stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
                for k in range(10):
                    v = 20 * (k + shift)
                    image = np.full((32, 32, 3), v, dtype=np.uint8)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
    bundle = load_dataset(f"frames:{tmp_path}", num_frames=5, test_fraction=0.5, seed=0)
    x = bundle.train[0]["x"]
    assert x.shape == (5, 3, 32, 32)
    shift = bundle.train.labels[0].item()
    expected = [20 * (k + shift) for k in (1, 3, 5, 7, 9)]  # middles of 5 segments of 10 frames
    np.testing.assert_allclose(x.mean(dim=(1, 2, 3)).numpy() * 255, expected, atol=4)
