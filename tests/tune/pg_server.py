"""A throwaway PostgreSQL server for the tune tests: ``initdb`` + ``pg_ctl`` on a temporary directory.

The server listens on a Unix socket in that directory only (no TCP port), runs as the ``postgres`` system user
when the tests run as root (PostgreSQL refuses to run as root), and is stopped and removed at the end, whatever
happens in between.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["find_pg_bin", "postgres_server"]


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's versioned folders), or ``None``."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[3]))
    return Path(versions[-1]).parent if versions else None


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Start a server; yield its ``postgresql://`` URL (database ``postgres``); stop it and delete its files.

    Example:
        >>> with postgres_server(find_pg_bin()) as url:  # doctest: +SKIP
        ...     optuna.create_study(storage=url)
    """
    base = Path(tempfile.mkdtemp(prefix="cnnlstm-pg-"))
    data, log = base / "data", base / "server.log"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    started = False
    try:
        subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                        "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        options = f"-k {base} -c listen_addresses='' -c fsync=off -c max_connections=50"
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                                        "-o", options, "start"]),
                       check=True, capture_output=True, timeout=90)
        started = True
        yield f"postgresql://postgres@/postgres?host={base}"
    finally:
        if started:
            subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                            "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
