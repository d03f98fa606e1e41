"""npz: source: both file layouts, the seeded stratified test split, and every check in validate.py."""

import numpy as np
import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.errors import ConfigError, DataError


def save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def series(n, t=4, f=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, t, f)).astype(np.float32)


def test_train_test_layout_round_trips(tmp_path):
    x_train, x_test = series(4), series(2, seed=1)
    spec = save(tmp_path, X_train=x_train, y_train=["b", "a", "b", "a"], X_test=x_test, y_test=["a", "b"])
    bundle = load_dataset(spec)
    assert bundle.info.class_names == ["a", "b"]
    assert bundle.info.model_kwargs == {"num_classes": 2, "in_channels": 2}
    assert bundle.info.targets == [1, 0, 1, 0]
    torch.testing.assert_close(bundle.train[2]["x"], torch.from_numpy(x_train[2]))
    assert [int(bundle.test[i]["y"]) for i in range(2)] == [0, 1]


def test_univariate_2d_arrays_get_one_channel(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    bundle = load_dataset(save(tmp_path, X_train=x, y_train=[0, 1, 0], X_test=x, y_test=[1, 0, 1]))
    assert bundle.train[1]["x"].tolist() == [[4.0], [5.0], [6.0], [7.0]]
    assert bundle.info.model_kwargs["in_channels"] == 1


def test_x_y_split_is_stratified_seeded_and_complete(tmp_path):
    n = 30
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 3, 1)).copy()  # x value = file index
    y = np.array([0] * 10 + [1] * 20)
    spec = save(tmp_path, X=x, y=y)
    a = load_dataset(spec, test_fraction=0.2, seed=3)
    ids = {name: sorted(int(s["x"][0, 0]) for s in getattr(a, name)) for name in ("train", "test")}
    assert sorted(ids["train"] + ids["test"]) == list(range(n))
    assert sum(y[ids["test"]] == 0) == 2 and sum(y[ids["test"]] == 1) == 4  # 20% of each class
    again = load_dataset(spec, test_fraction=0.2, seed=3)
    assert sorted(int(s["x"][0, 0]) for s in again.test) == ids["test"]
    other = load_dataset(spec, test_fraction=0.2, seed=4)
    assert sorted(int(s["x"][0, 0]) for s in other.test) != ids["test"]


def test_lengths_keep_each_series_own_length(tmp_path):
    x = series(3, t=5)
    spec = save(tmp_path, X_train=x, y_train=[0, 1, 0], lengths_train=[5, 2, 3], X_test=x, y_test=[0, 1, 1])
    bundle = load_dataset(spec)
    assert [bundle.train[i]["x"].shape[0] for i in range(3)] == [5, 2, 3]
    torch.testing.assert_close(bundle.train[1]["x"], torch.from_numpy(x[1, :2]))


def test_nan_and_inf_are_counted_and_located(tmp_path):
    x = series(4)
    x[2, 3, 1] = np.nan
    x[3, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"2 NaN/inf values in 2 sample\(s\), the first at sample 2, step 3, channel 1"):
        load_dataset(save(tmp_path, X=x, y=[0, 1, 0, 1]), test_fraction=0.5)


@pytest.mark.parametrize(
    ("arrays", "error", "message"),
    [
        ({"X_train": series(5), "y_train": [0, 1, 0, 1], "X_test": series(2), "y_test": [0, 1]},
         DataError, "5 samples but 4 labels"),
        ({"X_train": series(4), "y_train": [0, 1, 0, 1], "X_test": series(2), "y_test": [0, 7]},
         DataError, "test labels 7 never occur in training"),
        ({"X_train": series(4), "y_train": [1, 1, 1, 1], "X_test": series(2), "y_test": [1, 1]},
         DataError, "only class 1"),
        ({"X_train": series(4), "y_train": [0, 1, 0, 1], "X_test": series(0), "y_test": np.zeros(0, int)},
         DataError, r"\(test\) has no samples"),
        ({"X_train": series(4, t=0), "y_train": [0, 1, 0, 1], "X_test": series(2), "y_test": [0, 1]},
         DataError, "4 series have zero length"),
        ({"X_train": series(4), "y_train": [0.5, 1, 0, 1], "X_test": series(2), "y_test": [0, 1]},
         DataError, "non-integer floats"),
        ({"X_train": series(4), "y_train": [0, 1, 0, 1], "X_test": series(2, f=3), "y_test": [0, 1]},
         DataError, "different channel counts"),
        ({"X": series(4), "labels": [0, 1, 0, 1]}, DataError, "expected X_train, y_train, X_test, y_test"),
        ({"X": np.array([np.zeros(3), np.zeros(4)], dtype=object), "y": [0, 1]}, DataError, "Python objects"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, arrays, error, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(error, match=message):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_float_ids_are_accepted_as_classes(tmp_path):
    bundle = load_dataset(save(tmp_path, X_train=series(4), y_train=np.array([0.0, 1.0, 0.0, 1.0]),
                               X_test=series(2), y_test=np.array([1.0, 0.0])))
    assert bundle.info.class_names == ["0", "1"]


def test_option_conflicts_and_missing_file(tmp_path):
    spec = save(tmp_path, X_train=series(4), y_train=[0, 1, 0, 1], X_test=series(2), y_test=[0, 1])
    with pytest.raises(ConfigError, match="drop test_fraction"):
        load_dataset(spec, test_fraction=0.3)
    with pytest.raises(ConfigError, match="normalize must be one of"):
        load_dataset(spec, normalize="global")
    with pytest.raises(DataError, match="file not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(f"npz:{tmp_path / 'text.npz'}")


def test_channel_normalization_is_fitted_on_train(tmp_path):
    x_train, x_test = series(6, seed=2) * 3 + 5, series(3, seed=3)
    spec = save(tmp_path, X_train=x_train, y_train=[0, 1] * 3, X_test=x_test, y_test=[0, 1, 0])
    bundle = load_dataset(spec, normalize="channel")
    flat = x_train.reshape(-1, 2).astype(np.float64)
    expected = (x_test[1] - flat.mean(0)) / flat.std(0)
    np.testing.assert_allclose(bundle.test[1]["x"].numpy(), expected, rtol=1e-5, atol=1e-6)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _zip_members(path, **members: bytes) -> str:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:  # stored, so a member's bytes sit in the file as written
        for name, raw in members.items():
            archive.writestr(f"{name}.npy", raw)
    return f"npz:{path}"


def test_an_array_cut_short_inside_a_valid_zip_is_unreadable_not_python_objects(tmp_path):
    whole = {"X_train": _npy_bytes(series(4)), "y_train": _npy_bytes(np.array([0, 1, 0, 1])),
             "X_test": _npy_bytes(series(2)), "y_test": _npy_bytes(np.array([0, 1]))}
    spec = _zip_members(tmp_path / "cut.npz", **{**whole, "X_train": whole["X_train"][:-10]})  # CRC matches the cut
    with pytest.raises(DataError, match=r"array X_train is unreadable \(truncated or corrupt") as info:
        load_dataset(spec)
    assert "Python objects" not in str(info.value)
    header = _zip_members(tmp_path / "head.npz", **{**whole, "y_test": whole["y_test"][:12]})  # cut in the header
    with pytest.raises(DataError, match="array y_test is unreadable"):
        load_dataset(header)


def test_a_member_with_a_bad_crc_is_unreadable(tmp_path):
    path = tmp_path / "crc.npz"
    np.savez(path, X_train=series(4), y_train=[0, 1, 0, 1], X_test=series(2), y_test=[0, 1])
    raw = bytearray(path.read_bytes())
    marker = raw.index(series(4).tobytes()[:16])  # X_train's data, stored uncompressed by savez
    raw[marker] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"array X_train is unreadable .*CRC"):
        load_dataset(f"npz:{path}")


def test_only_object_dtype_is_called_python_objects(tmp_path):
    ragged = np.array([np.zeros(3), np.zeros(4)], dtype=object)
    import io

    buf = io.BytesIO()
    np.save(buf, ragged, allow_pickle=True)
    spec = _zip_members(tmp_path / "obj.npz", X=buf.getvalue(), y=_npy_bytes(np.array([0, 1])))
    with pytest.raises(DataError, match="X holds Python objects"):
        load_dataset(spec)
