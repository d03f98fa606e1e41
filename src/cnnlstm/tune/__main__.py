"""``python -m cnnlstm.tune ARGS`` is ``cnnlstm tune ARGS``."""

import sys

from cnnlstm.tune.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
