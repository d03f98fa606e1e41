"""Benchmarks behind ``cnnlstm bench``: accuracy against MiniRocket and published numbers, speed ratios.

Every figure states the machine, the load, the command and the date; timings are medians; ratios are measured
side by side in one process. Nothing chooses a model, an epoch or a hyperparameter on a test split.
"""

from cnnlstm.bench.cli import build_parser, main

__all__ = ["main", "build_parser"]
