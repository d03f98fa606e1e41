"""The model library documents itself: every public class and function of layers, encoders and models has a
docstring; functions with arguments say what they are (``Args``); modules say what shapes they take (``Shape``)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from torch import nn

PACKAGES = ("cnnlstm.layers", "cnnlstm.models", "cnnlstm.encoders")


def _public_objects() -> list[tuple[str, object]]:
    found = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        modules = [package] + [
            importlib.import_module(m.name) for m in pkgutil.walk_packages(package.__path__, package_name + ".")
        ]
        for module in modules:
            assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
            for name in module.__all__:
                obj = getattr(module, name)
                if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__:
                    found.append((f"{module.__name__}.{name}", obj))
    return found


OBJECTS = _public_objects()


def test_there_is_a_public_api_to_check() -> None:
    assert len(OBJECTS) > 40


@pytest.mark.parametrize("qualname,obj", OBJECTS, ids=[q for q, _ in OBJECTS])
def test_public_object_is_documented(qualname: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{qualname} has no docstring"
    if inspect.isfunction(obj) and inspect.signature(obj).parameters:
        assert "Args" in doc, f"{qualname} does not document its arguments (Args)"
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        init_doc = inspect.getdoc(obj.__init__) or ""
        assert "Args" in doc + init_doc, f"{qualname} does not document its constructor arguments (Args)"
        assert "Shape" in doc + (inspect.getdoc(obj.forward) or ""), f"{qualname} has no Shape section"
