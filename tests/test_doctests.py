"""The docstring examples run and print what they show: one test per module of the library.

The examples are documentation, so they must stay correct, fast (tiny sizes) and deterministic (the conftest seeds
torch before each module). Examples that write files or download weights are marked ``# doctest: +SKIP``; every
other one runs here, with plain ``pytest`` (no ``--doctest-modules`` needed). ``cnnlstm.__main__`` is left out: it
would start the CLI on import. The ``benchmarks`` package (outside the library) is left to its own tests: its
examples run whole benchmark suites.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import cnnlstm

SKIPPED_PACKAGES = ("cnnlstm.__main__",)
# The packages whose examples the issue asks to be checked; each must keep at least one running example.
MUST_HAVE_EXAMPLES = ("cnnlstm.layers", "cnnlstm.encoders", "cnnlstm.models")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = ["cnnlstm"] + [m.name for m in pkgutil.walk_packages(cnnlstm.__path__, "cnnlstm.")]
    return sorted(n for n in names if not n.startswith(SKIPPED_PACKAGES))


MODULES = _module_names()


def _run_examples(name: str) -> tuple[doctest.TestResults, str]:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    return runner.summarize(verbose=False), "".join(report)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run_as_shown(name: str) -> None:
    results, report = _run_examples(name)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples in {name} failed:\n{report}"


@pytest.mark.parametrize("package", MUST_HAVE_EXAMPLES)
def test_model_library_packages_have_running_examples(package: str) -> None:
    names = [n for n in MODULES if n == package or n.startswith(package + ".")]
    assert len(names) > 3, names  # the walk found the package's modules
    runnable = [example for n in names for test in doctest.DocTestFinder().find(importlib.import_module(n), n)
                for example in test.examples if not example.options.get(doctest.SKIP)]
    assert len(runnable) >= 10, f"{package}: {len(runnable)} runnable examples, fewer than 10"
