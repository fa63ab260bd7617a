"""Package exports that load on first use (PEP 562), so importing a package's schema module
(``layers.dynamics.config``, ``agents.config``) does not load torch through the package's ``__init__``."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable


class _LazyPackage(types.ModuleType):
    """A package whose exported names win over same-named submodules (``layers.circuits.consensus`` is the
    function, as with an eager ``from .consensus import consensus``): the import system's binding of a
    submodule to the package is ignored for an exported name, which ``__getattr__`` then resolves."""

    def __setattr__(self, name: str, value: object) -> None:
        exports = self.__dict__.get("_EXPORTS", {})
        if isinstance(value, types.ModuleType) and exports.get(name) == value.__name__:
            return
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the module that
    defines it. A name is imported on first access and then cached in the package's namespace."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    sys.modules[package].__class__ = _LazyPackage
    return __getattr__, __dir__
