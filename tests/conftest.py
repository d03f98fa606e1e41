"""Shared test setup: deterministic, CPU only unless the GPU tests are asked for, small."""

import os

import lightning.pytorch  # noqa: F401  (see below)
import pytest
import torch

# The suite runs on the CPU, even on a GPU machine, so a run's numbers do not depend on where it ran. The tests
# marked `gpu` check the CUDA code paths; they need the device left visible, which `CNNLSTM_TEST_GPU=1` asks for:
#     CNNLSTM_TEST_GPU=1 pytest -m gpu
# Without it (CI) they skip and say so; with it and no CUDA device they fail, so a GPU run cannot pass by skipping.
GPU_SWITCH = "CNNLSTM_TEST_GPU"
GPU_REQUESTED = os.environ.get(GPU_SWITCH) == "1"
if not GPU_REQUESTED:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# Lightning adds a stream handler to its logger on first import, bound to the sys.stderr of that moment. Imported
# here, at collection, that is the session's stream; imported first inside a test that captures output (capsys,
# redirect_stderr), the handler would keep that test's stream, and every later Trainer would print a "Logging
# error" traceback into whichever test runs next, once the stream is closed.


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    if not GPU_REQUESTED:
        skip = pytest.mark.skip(reason=f"CUDA test: run `{GPU_SWITCH}=1 pytest -m gpu` on a machine with a GPU")
        for item in gpu_items:
            item.add_marker(skip)
    elif not torch.cuda.is_available():
        raise pytest.UsageError(f"{GPU_SWITCH}=1 asks for the CUDA tests, but torch sees no CUDA device "
                                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}, "
                                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
