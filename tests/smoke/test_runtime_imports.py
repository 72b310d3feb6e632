"""Every module that VoxelBoard's code imports is installed by ``requirements.txt`` alone.

The fresh-install smoke test (``fresh_install.py``, run by ``.ci/run``) proves this for the
paths it exercises; this test reads the source of every module in ``app/``, ``trainer/``,
``run.py`` and ``examples/``, lazy imports inside functions included, so a branch the smoke
test does not reach (Slurm, tracing, the training shell) cannot import a package that only the
test requirements bring. An import inside ``try: ... except ImportError`` is optional and left out.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCAL_PACKAGES = {"app", "trainer"}
SOURCES = sorted(
    [REPO / "run.py"]
    + [p for folder in ("app", "trainer") for p in (REPO / folder).rglob("*.py")]
    + list((REPO / "examples").glob("*.py"))
)


def required_imports(path: Path) -> dict[str, int]:
    """Top-level third-party module names ``path`` imports unconditionally, with a line each."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    optional = {id(node) for node in _optional_imports(tree)}
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in LOCAL_PACKAGES | {"__future__"}:
                found.setdefault(top, node.lineno)
    return found


def _optional_imports(tree: ast.AST) -> list[ast.AST]:
    """Import statements in the body of a ``try`` that catches ``ImportError``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for stmt in node.body:
                out += [n for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom)]
    return out


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return any(
        isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names
    )


def requirement_lines(path: Path) -> list[Requirement]:
    """The requirements of a pip requirements file (comments and options left out)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line and not line.startswith("-"):
            out.append(Requirement(line))
    return out


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Canonical names of the distributions pip installs for ``requirements``.

    Read from the installed metadata of this environment, with each dependency's markers (its
    extras included) evaluated, as pip does.
    """
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        key = (canonicalize_name(req.name), extras)
        if key in done:
            continue
        done.add(key)
        seen.add(key[0])
        try:
            dependencies = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # reported by the test as a module that no distribution provides
        for text in dependencies:
            dep = Requirement(text)
            wanted = dep.marker is None or any(
                dep.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            )
            if wanted:
                todo.append((dep, frozenset(dep.extras)))
    return seen


def test_sources_are_found():
    assert REPO / "run.py" in SOURCES and REPO / "app" / "server.py" in SOURCES
    assert REPO / "trainer" / "trainer.py" in SOURCES and len(SOURCES) > 30


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy as np\nfrom scipy import ndimage", {"numpy": 1, "scipy": 2}),
        ("def f():\n    import waitress", {"waitress": 2}),
        ("import os, json\nfrom trainer import runs\nfrom . import x", {}),
        ("try:\n    import IPython\nexcept ImportError:\n    pass", {}),
        ("try:\n    import IPython\nexcept (OSError, ModuleNotFoundError):\n    pass", {}),
        ("try:\n    import IPython\nexcept OSError:\n    pass", {"IPython": 2}),
    ],
)
def test_required_imports(tmp_path, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert required_imports(path) == expected


def test_every_runtime_import_is_installed_by_requirements_txt():
    modules = importlib.metadata.packages_distributions()
    installed = installed_closure(requirement_lines(REPO / "requirements.txt"))
    problems = []
    for path in SOURCES:
        for module, line in sorted(required_imports(path).items()):
            where = f"{path.relative_to(REPO)}:{line}: import {module}"
            providers = {canonicalize_name(d) for d in modules.get(module, [])}
            if not providers:
                problems.append(f"{where}: no installed distribution provides it")
            elif not providers & installed:
                problems.append(
                    f"{where}: provided by {', '.join(sorted(providers))}, which "
                    "requirements.txt does not install; add it there (pinned), or import it "
                    "inside try/except ImportError if it is optional"
                )
    assert not problems, "\n".join(problems)
