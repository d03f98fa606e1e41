"""The ``.ts`` reader and the ``ts:`` source on random bytes and on mutated real ``.ts`` files.

Seeds are the heads of files aeon ships (BasicMotions: multivariate; GunPoint: univariate; JapaneseVowels:
unequal lengths) and a tiny hand-written file. Mutations: byte flips (including non-UTF-8 bytes and the
format's own separators), truncation anywhere, and random text after ``@data``. Only ``CnnLstmError`` may
escape; a file that still loads must give finite series and one label per series.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_helpers import FUZZ

from cnnlstm.data import load_dataset, read_ts
from cnnlstm.errors import CnnLstmError

TINY = b"@problemName T\n@classLabel true a b\n@data\n1,2,3:a\n4,5,6:b\n"


def _aeon_head(name: str, rows: int = 4) -> bytes:
    spec = importlib.util.find_spec("aeon")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    lines = (root / name / f"{name}_TRAIN.ts").read_bytes().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip().lower() == b"@data")
    return b"".join(lines[: start + 1 + rows])


SEEDS = [_aeon_head("BasicMotions"), _aeon_head("GunPoint"), _aeon_head("JapaneseVowels"), TINY]
SPECIAL = list(b":,.\n\r-?e0123456789@ #") + [0x00, 0x80, 0xC3, 0xFF]


def _read(path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # aeon warns on some odd headers; only exceptions matter here
            x, y = read_ts(path)
    except CnnLstmError:
        return
    assert len(x) == len(y) > 0  # missing values ('?') may still be NaN here: the source's checks refuse them
    assert all(np.asarray(s).ndim == 2 for s in x)  # (T, F) each: time first


def test_seeds_read() -> None:
    for seed in SEEDS:
        assert seed.count(b"\n") > 3


@settings(FUZZ, max_examples=120)
@given(raw=st.binary(max_size=200))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("ts") / "x_TRAIN.ts"
    path.write_bytes(raw)
    _read(path)


@settings(FUZZ, max_examples=120)
@given(body=st.text(alphabet="@data\n:,.0123456789-e?abtruelcsL #", max_size=150))
def test_random_rows_after_a_valid_header(tmp_path_factory: pytest.TempPathFactory, body: str) -> None:
    path = tmp_path_factory.mktemp("ts") / "x_TRAIN.ts"
    path.write_bytes(b"@classLabel true a b\n@data\n" + body.encode())
    _read(path)


@settings(FUZZ, max_examples=250)
@given(index=st.integers(0, len(SEEDS) - 1),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(SPECIAL)), max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_mutated_real_files_through_the_ts_source(tmp_path_factory: pytest.TempPathFactory, index: int,
                                                  flips: list[tuple[int, int]], cut: int | None) -> None:
    raw = bytearray(SEEDS[index])
    for pos, value in flips:
        raw[pos % len(raw)] = value
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    folder = tmp_path_factory.mktemp("ts")
    (folder / "x_TRAIN.ts").write_bytes(bytes(raw))
    (folder / "x_TEST.ts").write_bytes(SEEDS[index])  # the untouched file: the mutation is the only fault
    _read(folder / "x_TRAIN.ts")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle = load_dataset(f"ts:{folder / 'x_TRAIN.ts'}")
    except CnnLstmError:
        return
    assert len(bundle.train) > 0 and bundle.info.model_kwargs["num_classes"] >= 2
    sample = bundle.train[0]
    assert sample["x"].dim() == 2 and sample["x"].isfinite().all()
