"""``python -m benchmarks SUITE ...`` from a checkout of the repository: see :mod:`benchmarks.cli`."""

import sys

from benchmarks.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
