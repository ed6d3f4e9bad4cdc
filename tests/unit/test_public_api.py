"""Every package's ``__all__`` names what it defines publicly, and only what exists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import audience_manager

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(audience_manager.__path__, "audience_manager.")
)


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_the_public_definitions(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol}"
    defined = {
        symbol
        for symbol, value in vars(module).items()
        if not symbol.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == name
    }
    assert defined <= set(exported), f"{name} defines but does not export {defined - set(exported)}"
