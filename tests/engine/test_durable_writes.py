"""Durable writes: the bytes are fsynced before the rename publishes them, and the directory after it.

The order is what matters for power loss (a rename that reaches the disk before the data leaves a truncated
file under the final name), so the tests record every ``os.fsync`` / ``os.replace`` call and check it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cnnlstm._io import atomic_write, replace_durably


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """``("fsync", "file"|"dir")`` and ``("replace", final name)`` in the order they happen."""
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        log.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        log.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_directory_after(
        tmp_path: Path, calls: list[tuple[str, str]]) -> None:
    atomic_write(tmp_path / "metrics.json", '{"a": 1}\n')
    assert (tmp_path / "metrics.json").read_text() == '{"a": 1}\n'
    expected = [("fsync", "file"), ("replace", "metrics.json")]
    if os.name == "posix":
        expected.append(("fsync", "dir"))
    assert calls == expected


def test_replace_durably_moves_a_named_file_the_same_way(tmp_path: Path, calls: list[tuple[str, str]]) -> None:
    tmp = tmp_path / ".best.safetensors.123.tmp"
    tmp.write_bytes(b"weights")
    replace_durably(tmp, tmp_path / "best.safetensors")
    assert (tmp_path / "best.safetensors").read_bytes() == b"weights"
    assert not tmp.exists()
    assert calls[:2] == [("fsync", "file"), ("replace", "best.safetensors")]
    if os.name == "posix":
        assert calls[2:] == [("fsync", "dir")]


def test_a_directory_that_refuses_fsync_still_gets_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # some file systems answer EINVAL for directories
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert atomic_write(tmp_path / "a.txt", "ok").read_text() == "ok"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
