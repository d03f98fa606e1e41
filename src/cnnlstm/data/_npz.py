"""Reading user ``.npz`` files safely (no pickle) with errors that say what to change."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from cnnlstm.errors import DataError

__all__ = ["open_npz", "npz_array"]


def open_npz(path: str, where: str) -> Any:
    """Open ``path`` with ``numpy.load(allow_pickle=False)``: a file of arrays can then never run code.

    Args:
        path: the ``.npz`` file.
        where: the spec, for messages (``"npz:data.npz"``).

    Example:
        >>> with open_npz("data.npz", "npz:data.npz") as data:  # doctest: +SKIP
        ...     data.files
    """
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{where}: file not found; check the path") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{where} is not a readable .npz file ({err}); save it with numpy.savez") from None


def npz_array(data: Any, key: str, where: str) -> np.ndarray:
    """Read one array, turning numpy's refusal of object arrays into advice.

    Args:
        data: an open ``NpzFile``.
        key: the array name.
        where: the spec, for messages.

    Example:
        >>> x = npz_array(data, "X_train", "npz:data.npz")  # doctest: +SKIP
    """
    try:
        return data[key]
    except ValueError:  # numpy refuses object arrays without pickle; ragged lists saved with savez end up so
        raise DataError(
            f"{where}: {key} holds Python objects (ragged lists?); store zero-padded numeric arrays "
            "(series sources take the true lengths in lengths_train / lengths_test / lengths)"
        ) from None
