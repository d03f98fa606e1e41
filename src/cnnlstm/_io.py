"""Durable file writes: a reader never sees half a file, and a power cut cannot leave a truncated one.

The ground floor of the package (it imports nothing from cnnlstm), so every layer that writes a file can use it:
run directories, checkpoints, plots, prediction outputs, tuning reports.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "replace_durably", "write_through_temp"]


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file.

    The temporary file is fsynced before the rename and the directory after it: without the first, a power
    loss can leave the new name pointing at a file whose blocks never reached the disk (empty or truncated);
    without the second, the rename itself may be lost. Self-contained (``os``, ``tempfile``, ``pathlib``) on
    purpose: the kill test runs this function's source in a bare process.

    Args:
        path: the final file name.
        data: the whole content (``str`` is written as UTF-8).

    Example:
        >>> atomic_write("/tmp/cnnlstm-doctest.txt", "ok").read_text()
        'ok'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # name the file the caller asked for, not the hidden temporary one
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before any name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable; directories cannot be opened on Windows, where rename is journalled anyway
        dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:  # some file systems (and macOS for directories) refuse fsync on a directory: best effort
        pass
    finally:
        os.close(dir_fd)
    return path


def replace_durably(tmp: str | Path, path: str | Path) -> Path:
    """Move a finished temporary file onto ``path`` the way :func:`atomic_write` does: fsync, rename, fsync dir.

    For writers that take a file name instead of bytes (safetensors, ``torch.save``).

    Args:
        tmp: the complete temporary file, in the same directory as ``path``.
        path: the final file name.

    Example:
        >>> replace_durably(".best.safetensors.tmp", "best.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def write_through_temp(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, then move it into place with :func:`replace_durably`.

    For writers that take a file name instead of bytes (``safetensors.torch.save_model``, ``torch.save``). If
    ``write`` or the move fails, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the final file name (its folder is created).
        write: called with the temporary file's name; writes the whole content there.

    Example:
        >>> write_through_temp("/tmp/cnnlstm-doctest.bin", lambda tmp: Path(tmp).write_bytes(b"ok")).read_bytes()
        b'ok'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        return replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
