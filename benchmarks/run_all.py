"""Regenerate every table and chart in docs/benchmarks.md: accuracy, digit sequences, speed (last), charts.

Usage:
    python benchmarks/run_all.py                 # same as `cnnlstm bench all`
    python benchmarks/run_all.py --seeds 1       # any `cnnlstm bench all` option

Records go to benchmarks/results/*.json|md, charts to docs/img/bench_*.png. Run it on a quiet machine: the
speed suite runs last and records the load average next to its figures.
"""

from __future__ import annotations

import sys

from cnnlstm.bench import main

if __name__ == "__main__":
    sys.exit(main(["all", *sys.argv[1:]]))
