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
    except EOFError:  # numpy's answer to a zero-byte file
        raise DataError(f"{where} is empty (0 bytes); save the arrays with numpy.savez") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{where} is not a readable .npz file ({err}); save it with numpy.savez") from None


def _holds_objects(data: Any, key: str) -> bool:
    """Whether member ``key``'s header declares an object dtype (read without loading the array)."""
    name = f"{key}.npy" if f"{key}.npy" in data.zip.namelist() else key  # numpy drops the suffix from keys
    try:
        with data.zip.open(name) as member:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read(member)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    return bool(dtype.hasobject)


def npz_array(data: Any, key: str, where: str) -> np.ndarray:
    """Read one array; object arrays and damaged members become a ``DataError`` that says which and what to do.

    Args:
        data: an open ``NpzFile``.
        key: the array name.
        where: the spec, for messages.

    Raises:
        DataError: the array holds Python objects (numpy refuses them without pickle), or its bytes are
            damaged: cut short, a bad CRC, an unreadable header.

    Example:
        >>> x = npz_array(data, "X_train", "npz:data.npz")  # doctest: +SKIP
    """
    try:
        return data[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        # numpy raises ValueError both for object arrays and for truncated data: the header tells them apart.
        if isinstance(err, ValueError) and _holds_objects(data, key):
            raise DataError(
                f"{where}: {key} holds Python objects (ragged lists?); store zero-padded numeric arrays "
                "(series sources take the true lengths in lengths_train / lengths_test / lengths)"
            ) from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{where}: array {key} is unreadable (truncated or corrupt: {reason}); "
                        "save the file again with numpy.savez") from None
