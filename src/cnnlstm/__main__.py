"""``python -m cnnlstm``: the same as the ``cnnlstm`` command (handy where the script is not on PATH)."""

from cnnlstm.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
