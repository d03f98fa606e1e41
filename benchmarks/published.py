"""Published test accuracies on the UCR/UEA default train/test splits, to print beside our own runs.

Only numbers from papers or the authors' released result files. A dagger (``optimistic``) marks results whose
code chose checkpoints on the test set. Sources:

- LSTM-FCN / MLSTM-FCN: Karim et al. 2018 (IEEE Access 6:1662) and the authors' training-loss re-run
  (titu1994/LSTM-FCN ``Results/train_loss_old_datasets.csv``).
- FCN, ResNet: Ismail Fawaz et al. 2019 (DMKD), mean of 10 runs (hfawaz/dl-4-tsc).
- InceptionTime: hfawaz/InceptionTime results. ROCKET: angus924/rocket, mean of 10. HC2: tsml-eval, fold 0.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Published", "PUBLISHED", "METHODS", "published_for", "best_published"]

#: column order of the published methods
METHODS = ("LSTM-FCN", "FCN", "ResNet", "InceptionTime", "ROCKET", "HC2")


@dataclass(frozen=True)
class Published:
    """One published accuracy.

    Attributes:
        accuracy: test accuracy in [0, 1].
        optimistic: the original code chose its checkpoint on the test set.
        note: what the figure is, when it is not the plain method (e.g. ``"MLSTM-FCN 1.00"``).
    """

    accuracy: float
    optimistic: bool = False
    note: str = ""


def _row(methods: tuple[str, ...], accuracies: tuple[float, ...]) -> dict[str, Published]:
    return {m: Published(a) for m, a in zip(methods, accuracies, strict=True)}


PUBLISHED: dict[str, dict[str, Published]] = {
    "GunPoint": _row(METHODS, (1.000, 1.000, 0.991, 1.000, 1.000, 1.000)),
    "ItalyPowerDemand": _row(METHODS, (0.962, 0.961, 0.963, 0.965, 0.970, 0.970)),
    "BasicMotions": _row(METHODS[2:], (1.000, 1.000, 1.000, 1.000)),
    "JapaneseVowels": {
        "LSTM-FCN": Published(0.99, optimistic=True, note="MLSTM-FCN 1.00, also chosen on test"),
        "FCN": Published(0.993),
        "ResNet": Published(0.992),
        "InceptionTime": Published(0.992),
    },
}


def published_for(dataset: str) -> dict[str, Published]:
    """Published accuracies for a dataset (``{}`` when none are on file).

    Example:
        >>> published_for("GunPoint")["ROCKET"].accuracy
        1.0
    """
    return PUBLISHED.get(dataset, {})


def best_published(dataset: str, *, include_optimistic: bool = False) -> float | None:
    """The best published accuracy, leaving out test-chosen results unless asked.

    Example:
        >>> best_published("ItalyPowerDemand")
        0.97
    """
    values = [p.accuracy for p in published_for(dataset).values() if include_optimistic or not p.optimistic]
    return max(values) if values else None
