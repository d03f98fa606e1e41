"""Property tests per probe class of issue 15: output paths, ``.npz`` shapes and dtypes, sizes too large to allocate.

Each checks the contract, not just "no crash": a bad input gets exit status 2 (or the library's own error) and
one line; a valid one succeeds with the right number of answers; no input file and no run changes (hashes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_helpers import FUZZ, assert_usage_error, run_cli, tree_hashes

from cnnlstm.errors import CnnLstmError

# -- predict --csv: where the output may go -------------------------------------------------------------------------
#: (kind, whether cnnlstm must refuse it)
PLACES = {"input": True, "run file": True, "new file in run": True, "run folder": True, "existing folder": True,
          "under a file": True, "new nested file": False, "earlier output": False}
NAMES = st.text(alphabet="abcxyz019_-. ", min_size=1, max_size=8).filter(lambda s: s.strip(" .") == s and s != "")


@settings(FUZZ, max_examples=25)
@given(kind=st.sampled_from(sorted(PLACES)), name=NAMES, depth=st.integers(0, 2))
def test_predict_csv_paths(tiny_run: Path, tiny_npz: Path, kind: str, name: str, depth: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a_file").write_text("x")
        (root / "earlier.csv").write_text("old\n")
        nested = Path(*[name] * depth) / f"{name}.csv" if depth else Path(f"{name}.csv")
        csv = {"input": tiny_npz, "run file": tiny_run / "config.yaml", "new file in run": tiny_run / nested,
               "run folder": tiny_run, "existing folder": root, "under a file": root / "a_file" / nested,
               "new nested file": root / nested, "earlier output": root / "earlier.csv"}[kind]
        before = tree_hashes(tiny_run, tiny_npz)
        result = run_cli(["predict", "--run", str(tiny_run), str(tiny_npz), "--csv", str(csv)])
        assert tree_hashes(tiny_run, tiny_npz) == before
        if PLACES[kind]:
            assert_usage_error(result, f"--csv {csv}")
        else:
            assert result.code == 0, result.err[-1000:]
            assert len(csv.read_text().splitlines()) == 1 + 6  # header + the 6 test series of tiny_npz


# -- .npz inputs: shapes, dtypes, empty and zero-length arrays ------------------------------------------------------
DTYPES = ["float32", "float64", "float16", "int64", "uint8", "bool", "complex64", "<U2"]


@st.composite
def npz_inputs(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], bool, int]:
    """Arrays for ``predict`` on a run trained on (N, T, 2) series, whether they are valid, and N."""
    n, t = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    f = draw(st.sampled_from([2, 2, 1, 0, 3, None]))  # None: a rank-2 array (N, T), read as (N, T, 1)
    rank = draw(st.sampled_from([3, 3, 3, 1, 4]))
    dtype = draw(st.sampled_from(DTYPES))
    shape = {1: (n,), 3: (n, t) if f is None else (n, t, f), 4: (n, t, 2, 1)}[rank]
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 7
    poisoned = draw(st.booleans()) and x.size > 0 and dtype.startswith("float")
    if poisoned:
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    arrays = {draw(st.sampled_from(["X", "x", "X_test", "series"])): x.astype(dtype)}
    lengths_ok = True
    if draw(st.booleans()) and rank == 3:
        lengths = draw(st.lists(st.integers(-1, t + 1), min_size=max(n - 1, 0), max_size=n + 1))
        arrays["lengths"] = np.asarray(lengths, dtype=np.int64)
        lengths_ok = len(lengths) == n and all(1 <= v <= t for v in lengths)
        if arrays.keys() == {"series", "lengths"}:  # two arrays and none named X: refused as ambiguous
            lengths_ok = False
    valid = (rank == 3 and f == 2 and n >= 1 and t >= 1 and dtype not in ("complex64", "<U2") and not poisoned
             and lengths_ok)
    return arrays, valid, n


@settings(FUZZ, max_examples=60)
@given(case=npz_inputs())
@pytest.mark.slow
def test_predict_npz_shapes_and_dtypes(tiny_run: Path, case: tuple[dict[str, np.ndarray], bool, int]) -> None:
    arrays, valid, n = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.npz"
        np.savez(path, **arrays)
        before = tree_hashes(tiny_run, path)
        result = run_cli(["predict", "--run", str(tiny_run), str(path)])
        assert tree_hashes(tiny_run, path) == before
    if valid:
        assert result.code == 0, f"{ {k: (v.shape, v.dtype) for k, v in arrays.items()} }: {result.err[-800:]}"
        assert len(result.out.splitlines()) == n
    else:
        assert_usage_error(result)


@settings(FUZZ, max_examples=80)
@given(train=npz_inputs(), test=npz_inputs(), labels=st.lists(st.integers(-1, 2), max_size=4),
       layout=st.sampled_from(["train/test", "X/y"]))
def test_npz_source_shapes_and_dtypes(train: tuple, test: tuple, labels: list[int], layout: str) -> None:
    """The ``npz:`` source over the same arrays: a bundle or the library's own error, and the file is unchanged."""
    from cnnlstm.data import load_dataset

    (xa,), (xb,) = [[v for k, v in case[0].items() if k != "lengths"] for case in (train, test)]
    y = np.asarray(labels, dtype=np.int64)
    arrays = {"X": xa, "y": y} if layout == "X/y" else {"X_train": xa, "y_train": y, "X_test": xb, "y_test": y}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, **arrays)
        before = tree_hashes(path)
        try:
            bundle = load_dataset(f"npz:{path}")
        except CnnLstmError as exc:
            assert "\n" not in str(exc).strip()
        else:
            assert len(bundle.train) >= 1 and len(bundle.test) >= 1
        assert tree_hashes(path) == before


# -- sizes that pass every range check but cannot be allocated -------------------------------------------------------
TINY_CNN = {"widths": (4, 8)}
#: registered models with an LSTM of ``hidden_size``: tiny otherwise, with what the data would fill in
MODELS = {"lstm_fcn": {"filters": [4, 4, 4], "num_classes": 2, "in_channels": 2},
          "deep_conv_lstm": {"filters": 4, "num_classes": 2, "in_channels": 2},
          "frame_lstm": {"encoder_kwargs": TINY_CNN, "num_classes": 2, "in_channels": 3},
          "multi_input": {"encoder_kwargs": TINY_CNN, "vocab_size": 12, "image_size": 8, "num_classes": 2,
                          "in_channels": 3},
          "captioner": {"encoder_kwargs": TINY_CNN, "vocab_size": 12, "in_channels": 3}}


@settings(FUZZ, max_examples=20)
@given(model=st.sampled_from(sorted(MODELS)), exponent=st.integers(11, 70), key=st.sampled_from(["hidden_size"]))
def test_sizes_that_cannot_be_allocated(model: str, exponent: int, key: str) -> None:
    """From 1e11 up (every tensor that grows with the size is then larger than any machine's memory, so nothing is
    touched before the allocator refuses) to beyond int64: always the same one-line ConfigError naming the key."""
    from cnnlstm.engine.build import build_model

    value = 10**exponent if exponent < 20 else 2**exponent
    with pytest.raises(CnnLstmError, match=f"too large to build.*model.{key}={value}"):
        build_model({"name": model, key: value, **MODELS[model]}, {})
