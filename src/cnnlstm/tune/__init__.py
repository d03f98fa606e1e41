"""cnnlstm.tune: hyperparameter and architecture search with Optuna.

``tune(recipe, trials=N)`` searches a recipe's space (the shipped space of its model family, overridable
in the recipe's ``search:`` section) with a seeded TPE sampler and epoch-level pruning, in a study stored in
a database (SQLite by default) that several processes can share and a killed run can resume. Trials are
scored on validation only; the best is tested once at the end and written as ``best.yaml``, a recipe that
``cnnlstm fit`` trains to the same score.

Example:
    >>> from cnnlstm.tune import tune
    >>> result = tune("basic_motions", trials=20)  # doctest: +SKIP
"""

from cnnlstm.tune.api import TuneResult, tune, write_outputs
from cnnlstm.tune.cli import add_arguments, main, run
from cnnlstm.tune.families import FAMILIES, Family, default_specs
from cnnlstm.tune.pruning import PruningCallback
from cnnlstm.tune.search import SearchPlan, resolve_search
from cnnlstm.tune.space import parse_space, sample_space

__all__ = [
    "tune",
    "TuneResult",
    "write_outputs",
    "main",
    "run",
    "add_arguments",
    "resolve_search",
    "SearchPlan",
    "PruningCallback",
    "FAMILIES",
    "Family",
    "default_specs",
    "parse_space",
    "sample_space",
]
