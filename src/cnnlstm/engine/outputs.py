"""Where a command may write: the one rule every output path is checked against before any work starts.

No command writes over a file it was given as input, over anything inside a run directory it did not create,
or over an existing run directory unless the user says so (``--overwrite``). Each check raises a
:class:`~cnnlstm.errors.ConfigError` whose message names the flag, the path and what to change, so the CLI
prints one line and exits 2 before data is read or a model is built. The functions only look (and probe a
folder's writability with a temporary file they remove at once); they create nothing.

* :func:`check_output_file`: a file a command writes (``predict --csv``, ``summary --plot``, a SQLite study).
* :func:`check_output_dir`: a folder a command fills with files of its own (``export --out``, a benchmark's ``--out``).
* :func:`check_new_run` / :func:`clear_run`: the run directory of a ``fit``.
* :func:`run_lock` / :func:`refuse_if_locked`: one writer per run directory at a time (released when the process
  ends, even by SIGKILL).

Data sources and predict paths call these with their own flag names, e.g.
``check_output_file(args.csv, flag="--csv", inputs=args.inputs)``.

Example:
    >>> check_output_file("/tmp/predictions.csv", flag="--csv", inputs=["walk.npz"])
    PosixPath('/tmp/predictions.csv')
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from cnnlstm.errors import ConfigError

__all__ = ["LOCK_NAME", "RUN_ENTRIES", "is_run_dir", "enclosing_run", "check_output_file", "check_output_dir",
           "check_new_run", "clear_run", "refuse_if_locked", "run_lock"]

#: the lock file a process writing a run directory holds (``fcntl.flock``; the kernel drops it when the process dies)
LOCK_NAME = ".cnnlstm.lock"
#: what ``fit`` writes into a run directory; ``--overwrite`` removes exactly these and nothing else
RUN_ENTRIES = ("config.yaml", "checkpoints", "logs", "pretrain", "export", "metrics.json", "history.json",
               "data_info.json", "learning_curves.png", "confusion_matrix.png", "members", "ensemble_weights.json")


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run directory written by ``fit`` (its ``config.yaml`` and ``checkpoints/``).

    Example:
        >>> is_run_dir("/tmp")
        False
    """
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory ``path`` is in (or is), or ``None``.

    Example:
        >>> enclosing_run("/tmp/predictions.csv") is None
        True
    """
    for folder in [Path(path).absolute(), *Path(path).absolute().parents]:
        if folder.is_dir() and is_run_dir(folder):
            return folder
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_place(path: Path, flag: str) -> None:
    """Every existing ancestor of ``path`` is a folder, and the nearest one accepts new files."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: {folder} is a file, not a folder; choose a path whose folders are folders")
    try:  # os.access says yes to root on a read-only mount; creating a file is the only sure test
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".cnnlstm-probe-")
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot create files in {folder} ({err.strerror}); choose a writable "
                          "location") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path, *, flag: str, inputs: Iterable[str | Path] = (),
                      allowed_in: str | Path | None = None, example: str = "predictions.csv") -> Path:
    """Check a file a command is about to write; return it as a :class:`~pathlib.Path`.

    An existing ordinary file is replaced (the output of an earlier call); everything else is refused.

    Args:
        path: the file to write.
        flag: the option that named it, for messages (``"--csv"``).
        inputs: the files and folders the command reads; the output may not be one of them.
        allowed_in: a folder inside a run directory that the command itself owns (``RUN/export``).
        example: a file name suggested when ``path`` is a folder.

    Raises:
        ConfigError: ``path`` is an input, is or lies inside a run directory, is a folder, lies under a file,
            or its folder does not accept new files.

    Example:
        >>> check_output_file("runs/x/config.yaml", flag="--csv")  # doctest: +SKIP
        ConfigError: --csv runs/x/config.yaml is inside run directory runs/x, ...
    """
    path = Path(path)
    _check_not_input_or_run(path, flag, inputs, allowed_in, ("name a new file so the input is not overwritten",
                                                             "write it outside the run directory"))
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; name a file, e.g. {path / example}")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{flag} {path} exists and is not a regular file; name a new file")
    _check_place(path, flag)
    return path


def _check_not_input_or_run(path: Path, flag: str, inputs: Iterable[str | Path], allowed_in: str | Path | None,
                            hints: tuple[str, str]) -> None:
    """Refuse an output that is one of ``inputs`` or lies in a run directory (outside ``allowed_in``).

    ``hints`` says what to do instead in each case: (is an input, is in a run directory).
    """
    for item in inputs:
        if _same_file(path, Path(item)):
            raise ConfigError(f"{flag} {path} is also an input; {hints[0]}")
    run = enclosing_run(path)
    if run is not None and not (allowed_in is not None and path.absolute().is_relative_to(Path(allowed_in).absolute())):
        raise ConfigError(f"{flag} {path} is inside run directory {run}, whose files belong to the run; {hints[1]}")


def check_output_dir(path: str | Path, *, flag: str, inputs: Iterable[str | Path] = (),
                     allowed_in: str | Path | None = None) -> Path:
    """Check a folder a command fills with files of its own (created if missing); return it as a Path.

    Args:
        path: the folder.
        flag: the option that named it.
        inputs: files and folders the command reads; the folder may not be one of them.
        allowed_in: a folder inside a run directory that the command owns (``RUN/export``).

    Raises:
        ConfigError: ``path`` is an input, a run directory or inside one, a file, lies under a file, or
            does not accept new files.

    Example:
        >>> check_output_dir("/tmp/export", flag="--out")
        PosixPath('/tmp/export')
    """
    path = Path(path)
    _check_not_input_or_run(path, flag, inputs, allowed_in, ("name another folder", "choose a folder outside it"))
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder; name a folder")
    _check_place(path / "x", flag)
    return path


def check_new_run(run_dir: str | Path, *, overwrite: bool = False, flag: str = "--out") -> Path:
    """Check the run directory of a new ``fit``: missing, empty, or (with ``overwrite``) replaceable.

    Args:
        run_dir: the run directory.
        overwrite: the user asked to replace an existing run (``--overwrite``).
        flag: the option that named it.

    Raises:
        ConfigError: ``run_dir`` is a file, lies under a file or inside another run, holds a run (finished or
            not) or other files and ``overwrite`` is off, or does not accept new files.

    Example:
        >>> check_new_run("/tmp/cnnlstm-new-run")
        PosixPath('/tmp/cnnlstm-new-run')
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{flag} {run_dir} is a file, not a folder; name a new run directory")
    outer = enclosing_run(run_dir.absolute().parent)
    if outer is not None:
        raise ConfigError(f"{flag} {run_dir} is inside run directory {outer}; choose a folder outside it")
    if not overwrite and run_dir.is_dir():
        entries = [p.name for p in run_dir.iterdir() if p.name != LOCK_NAME]
        if (run_dir / "config.yaml").is_file():
            state = "a finished run" if (run_dir / "metrics.json").is_file() else "an unfinished run"
            raise ConfigError(f"{flag} {run_dir} already holds {state}; continue it with `cnnlstm fit --resume "
                              f"{run_dir}`, replace it with --overwrite, or choose another {flag}")
        if entries:
            raise ConfigError(f"{flag} {run_dir} is a folder that already holds files ({', '.join(sorted(entries)[:3])}"
                              f"{', ...' if len(entries) > 3 else ''}); choose a new or empty folder, or pass "
                              "--overwrite to write into it anyway")
    _check_place(run_dir / "x", flag)
    return run_dir


def clear_run(run_dir: str | Path) -> None:
    """Remove what an earlier ``fit`` wrote into ``run_dir`` (:data:`RUN_ENTRIES`), for ``--overwrite``.

    Other files the user keeps there are left alone, and a folder without a run's ``config.yaml`` is not
    touched at all (its ``logs/`` or ``export/`` are the user's own).

    Example:
        >>> clear_run("/tmp/cnnlstm-no-such-run")
    """
    if not (Path(run_dir) / "config.yaml").is_file():
        return
    for name in RUN_ENTRIES:
        entry = Path(run_dir) / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def _flock() -> object | None:
    try:
        import fcntl
    except ImportError:  # Windows: no lock is taken
        return None
    return fcntl


def refuse_if_locked(run_dir: str | Path, *, flag: str = "--out") -> None:
    """Raise when a process holds ``run_dir``'s lock; checked first, so a run being written is reported as such.

    Looks without creating anything; within the process holding the lock it refuses too (``flock`` locks
    belong to an open file, not a process), so call it before :func:`run_lock`, not inside.

    Raises:
        ConfigError: the lock is held.

    Example:
        >>> refuse_if_locked("/tmp/cnnlstm-no-such-run")
    """
    fcntl = _flock()
    run_dir = Path(run_dir)
    lock = run_dir / LOCK_NAME
    if fcntl is None or not lock.is_file():
        return
    with open(lock) as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _locked(run_dir, flag, handle) from None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _locked(run_dir: Path, flag: str, handle: IO[str]) -> ConfigError:
    """The error for a run directory whose lock another process holds; its pid is read from the lock file."""
    holder = handle.read().strip() or "?"
    return ConfigError(f"{flag} {run_dir} is being written by another cnnlstm process (pid {holder}); wait for it "
                       f"to finish or choose another {flag}")


@contextlib.contextmanager
def run_lock(run_dir: str | Path, *, flag: str = "--out") -> Iterator[Path]:
    """Hold ``RUN/.cnnlstm.lock`` while writing a run directory: a second writer is refused, not interleaved.

    The folder (and missing parents) is created if missing, and removed again on exit when created here and still
    empty (a run refused or failed before it wrote anything leaves no folder). ``fcntl.flock`` locks are dropped by
    the kernel when the process ends, even by SIGKILL, so a killed run never blocks its own ``--resume``.
    Where ``fcntl`` is missing (Windows) no lock is taken.

    Args:
        run_dir: the run directory.
        flag: the option that named it.

    Raises:
        ConfigError: another process holds the lock.

    Example:
        >>> with run_lock("/tmp/cnnlstm-lock-demo") as run:
        ...     _ = (run / "config.yaml").write_text("x")
    """
    run_dir = Path(run_dir)
    created = [folder for folder in [run_dir, *run_dir.parents] if not folder.exists()]  # deepest first
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    fcntl = _flock()
    handle = open(lock, "a+")  # noqa: SIM115 - held for the whole with-block
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                raise _locked(run_dir, flag, handle) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield run_dir
        finally:
            lock.unlink(missing_ok=True)  # while still held, so no second process can take the old file
    finally:
        handle.close()
        for folder in created:  # folders made here and still empty (runs/ of a refused first run, too)
            if not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
