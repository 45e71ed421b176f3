"""Lazy names of a package (PEP 562): a submodule, or a name defined in one, imported on
first use, so that importing the package does not import what only some users need."""
from __future__ import annotations

import importlib
import sys


def attach(package: str, lazy: dict):
    """The ``(__getattr__, __dir__)`` of package ``package`` for its lazy names.

    Args:
      package: the package's ``__name__``.
      lazy: {name: (submodule, attribute)}: ``package.name`` is ``package.submodule`` when
        ``attribute`` is None, else ``package.submodule.attribute``; imported on first use,
        then stored in the package, so later lookups do not come back here.
    """

    def __getattr__(name):
        if name not in lazy:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        submodule, attribute = lazy[name]
        value = importlib.import_module(f".{submodule}", package)
        if attribute is not None:
            value = getattr(value, attribute)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(lazy))

    return __getattr__, __dir__
