"""Shared test setup: deterministic, CPU only, small."""

import os

import pytest
import torch

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests are CPU only, even on a GPU machine


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
