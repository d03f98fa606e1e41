"""aeon's MiniRocket on a cnnlstm series bundle: the strong, fast baseline every accuracy table runs beside us.

MiniRocket trains on the full UCR/UEA training split (its ridge classifier picks its own regularisation by
internal cross-validation, so it needs no held-out validation) and is scored once on the test split, the same
test split our models see. Variable-length sets (JapaneseVowels) are zero-padded at the end to the longest
series of either split, as the published MiniRocket runs on unequal-length data do.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from cnnlstm.data import DatasetBundle

__all__ = ["to_aeon_array", "minirocket_runs"]


def _series(dataset: Dataset) -> tuple[list[np.ndarray], np.ndarray]:
    samples = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    return [np.asarray(s["x"], dtype=np.float32) for s in samples], np.array([int(s["y"]) for s in samples])


def to_aeon_array(series: list[np.ndarray], length: int) -> np.ndarray:
    """Stack (T_i, F) series into aeon's (N, F, length) layout, zero-padding each at its end.

    Args:
        series: one (T_i, F) array per sample, ``T_i <= length``.
        length: the padded length.

    Shape:
        - output: ``(N, F, length)``.

    Example:
        >>> to_aeon_array([np.ones((2, 3)), np.ones((4, 3))], 4)[0, 0].tolist()
        [1.0, 1.0, 0.0, 0.0]
    """
    out = np.zeros((len(series), series[0].shape[1], length), dtype=np.float32)  # (N, F, length)
    for i, s in enumerate(series):
        out[i, :, : s.shape[0]] = s.T  # (F, T_i): aeon puts channels first
    return out


def minirocket_runs(bundle: DatasetBundle, seeds: list[int], *, n_jobs: int = 1) -> list[dict[str, Any]]:
    """Fit ``MiniRocketClassifier`` once per seed on the bundle's training split, score it on test.

    Args:
        bundle: a ``kind="series"`` bundle (``ucr:``, ``ts:`` or ``npz:``).
        seeds: one fit per seed (``random_state``).
        n_jobs: aeon worker threads.

    Returns:
        one ``{"seed", "test_acc", "fit_seconds"}`` record per seed.

    Example:
        >>> runs = minirocket_runs(load_dataset("ucr:GunPoint"), [0, 1, 2])  # doctest: +SKIP
    """
    from aeon.classification.convolution_based import MiniRocketClassifier

    x_train, y_train = _series(bundle.train)
    x_test, y_test = _series(bundle.test)
    length = max(s.shape[0] for s in x_train + x_test)
    a_train, a_test = to_aeon_array(x_train, length), to_aeon_array(x_test, length)
    # The first fit in a process compiles aeon's numba kernels (about a minute on 2 cores); it is not the
    # method's cost, so one untimed fit comes first.
    MiniRocketClassifier(random_state=0, n_jobs=n_jobs).fit(a_train, y_train)
    runs = []
    for seed in seeds:
        clf = MiniRocketClassifier(random_state=seed, n_jobs=n_jobs)
        start = time.perf_counter()
        clf.fit(a_train, y_train)
        fit_seconds = time.perf_counter() - start
        accuracy = float(np.mean(clf.predict(a_test) == y_test))
        runs.append({"seed": seed, "test_acc": accuracy, "fit_seconds": round(fit_seconds, 3)})
    return runs
