"""The examples in the public modules' docstrings run as tests, so they cannot drift from the
code they show."""

from __future__ import annotations

import doctest
import types

import pytest
import xshm
import xshm.errors
import xshm_text


@pytest.mark.parametrize("module", [xshm, xshm.errors, xshm_text], ids=lambda m: m.__name__)
def test_docstring_examples(module: types.ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module.__name__} failed"
    if module is not xshm.errors:
        assert result.attempted > 0, f"{module.__name__} has no docstring example to run"
