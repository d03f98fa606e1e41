"""The recipe loader on random bytes, byte-mutated shipped recipes and structurally mutated ones.

Whatever the file holds, ``resolve_config`` (load + overrides + schema check) either returns a recipe or
raises a ``CnnLstmError`` (``ConfigError``): never ``UnicodeDecodeError``, ``AttributeError``, ``TypeError``.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_helpers import FUZZ, assert_usage_error, run_cli

from cnnlstm.engine import resolve_config
from cnnlstm.errors import CnnLstmError, ConfigError

SHIPPED = sorted(Path(str(resources.files("cnnlstm") / "recipes")).glob("*.yaml"))
TEXTS = [p.read_bytes() for p in SHIPPED]
TREES = [yaml.safe_load(t) for t in TEXTS]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6),
                   st.lists(st.integers(-2, 2), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                          max_size=2))


def _resolve(path: Path, overrides: list[str] = ()) -> None:
    try:
        resolve_config(str(path), overrides=list(overrides))
    except CnnLstmError:
        pass


def test_shipped_recipes_resolve() -> None:
    assert len(SHIPPED) >= 5
    for path in SHIPPED:
        assert resolve_config(str(path))["model"]["name"]


@settings(FUZZ, max_examples=150)
@given(raw=st.binary(max_size=300))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    path.write_bytes(raw)
    _resolve(path)


@settings(FUZZ, max_examples=200)
@given(index=st.integers(0, len(TEXTS) - 1),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_byte_mutated_shipped_recipes(tmp_path_factory: pytest.TempPathFactory, index: int,
                                      flips: list[tuple[int, int]], cut: int | None) -> None:
    raw = bytearray(TEXTS[index])
    for pos, value in flips:
        raw[pos % len(raw)] = value
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    path.write_bytes(bytes(raw))
    _resolve(path)


def _key_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _key_paths(value, (*prefix, key))
    return out


@settings(FUZZ, max_examples=250)
@given(index=st.integers(0, len(TREES) - 1), data=st.data())
@pytest.mark.slow
def test_structurally_mutated_recipes_and_overrides(tmp_path_factory: pytest.TempPathFactory, index: int,
                                                    data: st.DataObject) -> None:
    """Replace or delete 1-3 keys anywhere (a section may become a number), add random ``--set`` strings."""
    tree = copy.deepcopy(TREES[index])
    paths = _key_paths(tree)
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, leaf = data.draw(st.sampled_from(paths))
        node = tree
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if data.draw(st.booleans()):
                node[leaf] = data.draw(VALUES)
            else:
                node.pop(leaf, None)
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree))
    _resolve(path, data.draw(st.lists(st.text(max_size=12), max_size=2)))


def test_non_utf8_recipe_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes('description: "caf\u00e9"\n'.encode("latin-1") + TEXTS[0])
    with pytest.raises(ConfigError, match="UTF-8"):
        resolve_config(str(path))
    assert_usage_error(run_cli(["fit", "--recipe", str(path)]), "UTF-8")


@pytest.mark.parametrize("value", [1.5, "text", [1, 2]])
def test_a_pretrain_section_that_is_not_a_mapping_is_a_config_error(tmp_path: Path, value: Any) -> None:
    tree = copy.deepcopy(next(t for t in TREES if "pretrain" in t))
    tree["pretrain"] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="pretrain"):
        resolve_config(str(path))
