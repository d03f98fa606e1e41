"""Fixtures of the tune tests (helpers in tune_toys.py)."""

from pathlib import Path

import pytest
import yaml
from tune_toys import toy_recipe


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(tmp_path), sort_keys=False))
    return path
