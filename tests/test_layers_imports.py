"""No upward imports: every ``cnnlstm`` import in ``src/cnnlstm`` points to a lower layer (or its own package).

The table below is the one ``docs/architecture.md`` shows (a test here checks the two agree). A package may
import itself and any package of a *lower* layer, never one of its own layer or above: models and data stay
independent of each other, export and tune of each other. Imports inside functions and ``TYPE_CHECKING`` blocks
count too, since a lazy upward import is still a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnlstm"
DOC = ROOT / "docs" / "architecture.md"

#: layer of each top-level package or module of cnnlstm; ``cnnlstm`` is the package root (``create_model``,
#: ``__version__``)
LAYERS: dict[str, int] = {
    "errors": 0,
    "_io": 0,
    "config": 1,
    "layers": 1,
    "encoders": 2,
    "models": 3,
    "data": 3,
    "cnnlstm": 4,
    "tasks": 5,
    "profile": 5,
    "report": 6,
    "engine": 7,
    "export": 8,
    "tune": 8,
    "cli": 9,
    "__main__": 10,
}


def unit_of(path: Path) -> str:
    """The top-level package (or root module) a source file belongs to."""
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        return "cnnlstm" if rel.stem == "__init__" else rel.stem
    return rel.parts[0]


def _target(module: str, names: list[str]) -> list[str]:
    # "cnnlstm.engine.rundir" -> engine; "from cnnlstm import errors, create_model" -> errors, cnnlstm.
    parts = module.split(".")
    if parts[0] != "cnnlstm":
        return []
    if len(parts) > 1:
        return [parts[1]]
    return [n if n in LAYERS else "cnnlstm" for n in names]


def imports_of(source: str, path: Path) -> list[tuple[int, str]]:
    """``(line, target package)`` of every cnnlstm import in ``source`` (relative imports resolved)."""
    package = ["cnnlstm", *path.relative_to(PACKAGE).parent.parts]  # what "." means here (an __init__ too)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += [(node.lineno, t) for t in _target(alias.name, [])]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(node.lineno, t) for t in _target(module, [a.name for a in node.names])]
    return found


def violations(path: Path, source: str) -> list[str]:
    """One line per import of ``source`` (the text of ``path``) that reaches its own layer or above."""
    unit = unit_of(path)
    out = []
    for line, target in imports_of(source, path):
        if target == unit:
            continue
        if target not in LAYERS:
            out.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports cnnlstm.{target}, which has no layer")
        elif LAYERS[target] >= LAYERS[unit]:
            out.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {unit} (layer {LAYERS[unit]}) imports "
                       f"{target} (layer {LAYERS[target]})")
    return out


def test_every_package_has_a_layer() -> None:
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")}
    assert units - set(LAYERS) == set(), "add the new package to LAYERS here and in docs/architecture.md"


def test_no_module_imports_its_own_layer_or_above() -> None:
    found = [v for p in sorted(PACKAGE.rglob("*.py")) for v in violations(p, p.read_text(encoding="utf-8"))]
    assert found == [], "upward imports:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("where", "source", "bad"),
    [
        ("report/plots.py", "from cnnlstm.engine.rundir import atomic_write\n", True),
        ("engine/predict.py", "def f():\n    from cnnlstm.export import OnnxPredictor\n", True),  # lazy counts
        ("models/x.py", "from cnnlstm.data import load_dataset\n", True),  # a peer of the same layer
        ("data/x.py", "from ..models import create_model\n", True),  # relative
        ("layers/x.py", "import cnnlstm.tasks.ctc\n", True),
        ("report/html.py", "from cnnlstm import __version__, errors\n", False),
        ("engine/x.py", "from cnnlstm.report import format_summary\nfrom . import rundir\n", False),
        ("_io.py", "import os\nfrom pathlib import Path\n", False),
    ],
)
def test_the_check_catches_upward_imports(where: str, source: str, bad: bool) -> None:
    assert bool(violations(PACKAGE / where, source)) is bad


def test_docs_show_the_same_table() -> None:
    # docs/architecture.md: "| layer | packages |" rows, packages as `name` and the root as `cnnlstm`.
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("<!-- layers:start -->") : text.index("<!-- layers:end -->")]
    documented = {}
    for layer, cells in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, flags=re.M):
        for name in re.findall(r"`([\w.]+)`", cells):
            documented[name.removeprefix("cnnlstm.").removesuffix(".py").removesuffix("/")] = int(layer)
    assert documented == LAYERS
