"""Write a benchmark's record: JSON with the machine block, and a Markdown file that states machine and command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["machine_markdown", "write_record"]


def machine_markdown(machine: dict[str, Any]) -> str:
    """One Markdown line naming the machine, load, software, date and command of a run.

    Example:
        >>> machine_markdown({"cpu": "X", "usable_cores": 2, "torch_threads": 2, "load_average": (1.0, 1.0, 1.0),
        ...                   "torch": "2", "python": "3", "date": "d", "command": "c"})[:20]
        'Machine: X, 2 usable'
    """
    load = machine.get("load_average")
    load_text = "n/a" if not load else "/".join(f"{v:.1f}" for v in load)
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return (f"Machine: {machine['cpu']}, {machine['usable_cores']} usable cores ({machine['torch_threads']} torch "
            f"threads){gpu}; load average (1/5/15 min) at start {load_text}; torch {machine['torch']}, Python "
            f"{machine['python']}; {machine['date']}. Command: `{machine['command']}`")


def write_record(out_dir: Path, name: str, record: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``out_dir/name.json`` (the full record) and ``out_dir/name.md`` (machine line + tables).

    Example:
        >>> write_record(Path("benchmarks/results"), "accuracy", record, table)  # doctest: +SKIP
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    md_path = out_dir / f"{name}.md"
    json_path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    md_path.write_text(machine_markdown(record["machine"]) + "\n\n" + markdown + "\n")
    return json_path, md_path
