"""Shared test setup: deterministic, CPU only, small."""

import os

import lightning.pytorch  # noqa: F401  (see below)
import pytest
import torch

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU only, even on a GPU machine

# Lightning adds a stream handler to its logger on first import, bound to the sys.stderr of that moment. Imported
# here, at collection, that is the session's stream; imported first inside a test that captures output (capsys,
# redirect_stderr), the handler would keep that test's stream, and every later Trainer would print a "Logging
# error" traceback into whichever test runs next, once the stream is closed.


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
