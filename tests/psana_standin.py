"""A stand-in psana for the tests that drive ``DataSource``'s factory or ``convert()`` without the real one.

:func:`install` puts a ``psana`` package into ``sys.modules`` for one test
(``mocker.patch.dict``, undone after it), with the submodules the package
imports from psana: ``psana.psexp.ds_base``, whose ``requests`` convert's
logbook lookup (``write.convert._OfflineLookup``) swaps while an
``exp=``/``run=`` run opens. The stand-in's ``DataSource`` never asks the
logbook, so that ``requests`` is a placeholder; what matters is that a test
behaves the same whether the real psana is absent, installed, or was
imported by an earlier test (its submodules then sit in ``sys.modules`` and
would otherwise be found under the stand-in's name).
"""

from __future__ import annotations

import sys
import types

#: The modules of psana the package imports (besides ``psana`` itself), parents first.
SUBMODULES = ("psana.psexp", "psana.psexp.ds_base")


def install(mocker, data_source) -> types.ModuleType:
    """Make ``import psana`` give a stand-in whose ``DataSource`` is ``data_source``; return it."""
    psana = types.ModuleType("psana")
    psana.__path__ = []  # a package: its submodules are the ones below, never psana's real ones
    psana.DataSource = data_source
    modules = {"psana": psana}
    for name in SUBMODULES:
        parent, _, child = name.rpartition(".")
        module = types.ModuleType(name)
        module.__path__ = []
        setattr(modules[parent], child, module)
        modules[name] = module
    modules["psana.psexp.ds_base"].requests = types.ModuleType("requests")  # never asked (see the module doc)
    mocker.patch.dict(sys.modules, modules)
    return psana
