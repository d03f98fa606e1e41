"""cnnlstm.tune: hyperparameter and architecture search with Optuna.

``tune(recipe, trials=N)`` searches a recipe's space (the shipped space of its model family, overridable
in the recipe's ``search:`` section) with a seeded TPE sampler and epoch-level pruning, in a study stored in
a database (SQLite by default) that several processes can share and a killed run can resume. Trials are
scored on validation only; the best is tested once at the end and written as ``best.yaml``, a recipe that
``cnnlstm fit`` trains to the same score.

Names load on first use, so ``cnnlstm.tune.cli.add_arguments`` (for the ``cnnlstm`` parser) does not import
Optuna, Lightning or torch.

Example:
    >>> from cnnlstm.tune import tune
    >>> result = tune("basic_motions", trials=20)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "tune": "api", "TuneResult": "api", "write_outputs": "api",
    "main": "cli", "run": "cli", "add_arguments": "cli",
    "resolve_search": "search", "SearchPlan": "search",
    "PruningCallback": "pruning",
    "FAMILIES": "families", "Family": "families", "default_specs": "families",
    "parse_space": "space", "sample_space": "space",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnlstm.tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cnnlstm.tune.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value
