"""The training engine: recipes, run directories, and fit / test / predict on Lightning.

Example:
    >>> from cnnlstm.engine import fit, evaluate_run
    >>> run = fit("basic_motions", overrides=["trainer.max_epochs=1"], out="runs/demo")  # doctest: +SKIP
    >>> evaluate_run(run.run_dir).metrics["test/acc"] == run.metrics["test/acc"]  # doctest: +SKIP
    True
"""

from cnnlstm.engine.fit import RunResult, evaluate_run, fit, resume
from cnnlstm.engine.recipe import (
    apply_overrides,
    check_key,
    has_key,
    list_recipes,
    load_recipe,
    resolve_config,
    validate_recipe,
)
from cnnlstm.engine.rundir import load_weights, save_weights

__all__ = [
    "RunResult",
    "fit",
    "evaluate_run",
    "resolve_config",
    "resume",
    "list_recipes",
    "load_recipe",
    "apply_overrides",
    "validate_recipe",
    "check_key",
    "has_key",
    "save_weights",
    "load_weights",
]
