"""What every benchmark figure must state: the machine, the load on it, the software, the date and the command."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any

__all__ = ["cpu_model", "load_average", "machine_info"]


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`.

    Example:
        >>> isinstance(cpu_model(), str)
        True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or ``None`` where the OS has none.

    Timings taken while other processes load the CPU are slower; a benchmark records the load next to them.

    Example:
        >>> load = load_average()
        >>> load is None or len(load) == 3
        True
    """
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return None
    return round(one, 2), round(five, 2), round(fifteen, 2)


def machine_info(argv: list[str] | None = None) -> dict[str, Any]:
    """Machine, software and date of a benchmark run, for the JSON record and the Markdown header.

    Args:
        argv: the command that produced the figures (default ``sys.orig_argv``, e.g. ``python -m benchmarks.soak``).

    Example:
        >>> sorted(machine_info(["python", "-m", "benchmarks"]))[:3]
        ['command', 'cpu', 'cpu_count']
    """
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(argv if argv is not None else sys.orig_argv),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
