"""cnnlstm's benchmarks: accuracy against MiniRocket and published numbers, task suites, speed ratios.

This package sits beside the library in the repository and is not installed with it: run it from a checkout,
``python -m benchmarks SUITE ...`` for the suites of :mod:`benchmarks.cli` (records in ``benchmarks/results``), or
``python -m benchmarks.NAME`` for the single-purpose measurements (``bench_lengths``, ``bench_latency``,
``bench_feature_cache``, ``bench_cost_memory``, ``soak``, ``heldout_user_data``, ``heldout_vqa``,
``make_motion_clips``). The Keras speed comparison needs ``pip install -e ".[bench]"``.

Every figure states the machine, the load, the command and the date; timings are medians; ratios are measured
side by side in one process. Nothing chooses a model, an epoch or a hyperparameter on a test split.
"""

from benchmarks.cli import build_parser, main

__all__ = ["main", "build_parser"]
