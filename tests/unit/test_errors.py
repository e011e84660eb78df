"""The Python error tree is the C++ core's, class for class: read from the header the package
ships (xshm.get_include()), so a class added or moved on one side only fails here."""

from __future__ import annotations

import os
import re

import pytest
import xshm
from xshm import errors

_CLASS = re.compile(r"^class\s+(\w+)\s*:\s*public\s+(?:std::)?(\w+)", re.MULTILINE)


def _cpp_tree() -> dict[str, str]:
    with open(os.path.join(xshm.get_include(), "xshm", "errors.hpp"), encoding="utf-8") as f:
        source = f.read()
    return dict(_CLASS.findall(source))


def test_the_cpp_header_declares_the_tree() -> None:
    tree = _cpp_tree()
    assert tree.get("Error") == "runtime_error", tree
    assert len(tree) >= 9, tree


def test_every_cpp_error_has_the_python_class_of_the_same_name_and_parent() -> None:
    tree = _cpp_tree()
    for name, parent in tree.items():
        py_name = "XshmError" if name == "Error" else name
        cls = getattr(errors, py_name, None)
        assert cls is not None, f"C++ xshm::{name} has no Python xshm.errors.{py_name}"
        if name == "Error":
            continue
        py_parent = getattr(errors, "XshmError" if parent == "Error" else parent)
        assert py_parent in cls.__bases__, f"{py_name} should derive from {py_parent.__name__}"


def test_every_python_error_has_its_cpp_class() -> None:
    tree = _cpp_tree()
    for py_name in errors.__all__:
        name = "Error" if py_name == "XshmError" else py_name
        assert name in tree, f"xshm.errors.{py_name} has no C++ xshm::{name}"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.LayoutError, ValueError),
        (errors.ArgumentError, ValueError),
        (errors.DtypeError, TypeError),
        (errors.MessageTooLongError, ValueError),
        (errors.ReadOnlyError, PermissionError),
        (errors.MessageDecodeError, ValueError),
        (errors.TornRecordError, RuntimeError),
        (errors.WaitTimeoutError, TimeoutError),
        (errors.ClosedError, ValueError),
    ],
)
def test_each_error_is_also_the_builtin_a_caller_expects(
    cls: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(cls, errors.XshmError)
    assert issubclass(cls, builtin)
