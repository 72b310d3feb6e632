"""The dashboard's pages, one module each; ``create_app`` registers them on every app."""

from __future__ import annotations

import importlib
from types import ModuleType

#: page modules, in the order Dash considers their paths
NAMES = ("evaluation", "experiments", "jobs", "preview", "run", "sweep")


def modules() -> list[ModuleType]:
    """The page modules (imported once per process; their callbacks declared on import)."""
    return [importlib.import_module(f"{__name__}.{name}") for name in NAMES]
