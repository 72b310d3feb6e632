"""Architecture checks anyone can run: an AST walk and an import graph of the project's modules.

Each check is one test whose failure lists every offender as ``file:line: what``:

* run-directory file names are spelt only inside ``trainer/runs/`` (string literals and path
  joins, docstrings left out: prose may name files);
* no import circle among the project's modules (imports anywhere in a file count: module level,
  inside functions, under ``TYPE_CHECKING``);
* no private name of Dash (``dash._callback``, ``from dash.x import _y``, Dash's global callback
  list);
* the trainer reads config keys as attributes: defaults are written in ``trainer/config.py`` only;
* no ``backend ==`` branch in ``app/launcher.py`` (backends are classes behind one interface).

Each check's helper is tested on a small offending source as well, so a check that could no
longer see its offence fails too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the project's modules: the two packages and the command line
SOURCES = ("app", "trainer", "run.py")
RUNS_PACKAGE = ROOT / "trainer" / "runs"


def _files() -> list[Path]:
    out = []
    for entry in SOURCES:
        path = ROOT / entry
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# run-directory file names

#: names and name patterns of run-directory files and folders (docs/run-directory.md); an f-string
#: is matched with ``{}`` where its fields are
RUN_FILE_PATTERNS = [
    r"(^|/)(status|launch|launcher|config|threshold|trial|sweep|trials)\.json$",
    r"(^|/)study\.journal$",
    r"(^|/)\.sweeps$",
    r"(^|/)(train|console)\.log$",
    r"(^|/)slurm-job\.sh$",
    r"_prob\.h5$",
    r"(^|/)(LAST|FINAL|step-.*|\*)\.pt$",
    r"(^|/)preview-",
    r"(^|/)0-(\*|\{\}|history)",
]
_RUN_FILE = re.compile("|".join(f"(?:{p})" for p in RUN_FILE_PATTERNS))
#: folders of a run directory: offending when joined onto a path (``run_dir / "snapshots"``)
RUN_FOLDERS = frozenset({"history", "snapshots", "previews", "eval"})


def _docstring_ids(tree: ast.AST) -> set[int]:
    """ids of string constants that stand alone as statements (docstrings, prose)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _is_path_join(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return True
    return isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.path.join", "Path")


def run_file_names(source: str, filename: str = "<source>") -> list[str]:
    """``line: literal`` for every run-directory file name or folder join in ``source``."""
    tree = ast.parse(source, filename=filename)
    prose = _docstring_ids(tree)
    inside_fstring = {
        id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in prose or id(node) in inside_fstring:
            continue
        text = _literal(node)
        if text is not None and _RUN_FILE.search(text):
            found.append(f"{node.lineno}: {text!r}")
        if _is_path_join(node):
            operands = [node.right] if isinstance(node, ast.BinOp) else node.args
            for arg in operands:
                if _literal(arg) in RUN_FOLDERS:
                    found.append(f"{node.lineno}: path joined with {_literal(arg)!r}")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def test_run_file_names_are_spelt_only_in_the_run_directory_package():
    offenders = [
        f"{_rel(path)}:{hit}"
        for path in _files()
        if RUNS_PACKAGE not in path.parents
        for hit in run_file_names(path.read_text(), str(path))
    ]
    assert not offenders, (
        "run-directory file names outside trainer/runs/ (ask trainer.runs for the path):\n  "
        + "\n  ".join(offenders)
    )


@pytest.mark.parametrize(
    ("source", "hit"),
    [
        ("p = run_dir / 'status.json'", "'status.json'"),
        ("n = f'{name}_prob.h5'", "'{}_prob.h5'"),
        ("s = d / f'step-{n:08d}.pt'", "'step-{}.pt'"),
        ("g = sorted(d.glob('0-*.py'))", "'0-*.py'"),
        ("p = os.path.join(run, 'snapshots', x)", "path joined with 'snapshots'"),
        ("p = Path(run) / 'history'", "path joined with 'history'"),
        ("f = 'preview-%08d.h5' % step", "'preview-%08d.h5'"),
    ],
)
def test_run_file_name_check_sees_each_kind_of_spelling(source, hit):
    assert [h.split(": ", 1)[1] for h in run_file_names(source)] == [hit]


def test_run_file_name_check_ignores_prose_and_table_names():
    source = (
        '"""Writes snapshots/LAST.pt."""\ndef f():\n    """See status.json."""\n    t = "history"\n'
    )
    assert run_file_names(source) == []


# ---------------------------------------------------------------------------------------------
# import circles


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _target(name: str, modules: set[str]) -> str | None:
    """The project module ``name`` names, or its nearest enclosing one; ``None`` if foreign."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line}, from ``{module: (source, is_package)}``.

    ``from package import name`` is an edge to ``package.name`` when that is a module, else to
    the package.
    """
    modules = set(sources)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, (source, is_package) in sources.items():
        for node in ast.walk(ast.parse(source)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [_target(a.name, modules) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _target(base, modules)
                    for a in node.names
                ]
            for t in targets:
                if t is not None and t != module:
                    graph[module].setdefault(t, node.lineno)
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def _project_sources() -> dict[str, tuple[str, bool]]:
    return {_module_name(p): (p.read_text(), p.name == "__init__.py") for p in _files()}


def test_no_import_circle_among_project_modules():
    graph = import_graph(_project_sources())
    lines = []
    for group in import_cycles(graph):
        lines.append(" <-> ".join(group))
        members = set(group)
        for m in group:
            lines += [f"    {m}:{line} imports {t}" for t, line in graph[m].items() if t in members]
    assert not lines, "import circles (break each by moving the shared part down):\n  " + (
        "\n  ".join(lines)
    )


def test_import_circle_check_sees_function_level_and_relative_imports():
    sources = {
        "pkg": ("from pkg.a import x\n", True),
        "pkg.a": ("def f():\n    from . import b\n", False),
        "pkg.b": ("import pkg.c\n", False),
        "pkg.c": ("from pkg import a\n", False),
        "pkg.d": ("from pkg import a\n", False),
    }
    assert import_cycles(import_graph(sources)) == [["pkg.a", "pkg.b", "pkg.c"]]
    # a submodule importing its package, which imports the submodule back, is a circle
    sources["pkg.d"] = ("from pkg import a\nfrom pkg import thing\n", False)
    sources["pkg"] = ("from pkg.d import y\n", True)
    assert ["pkg", "pkg.d"] in import_cycles(import_graph(sources))


# ---------------------------------------------------------------------------------------------
# Dash's private API


def dash_private_names(source: str) -> list[str]:
    """``line: name`` for every private Dash name ``source`` uses."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute):
            names = [ast.unparse(node)]
            if node.attr.startswith("GLOBAL_CALLBACK"):
                found.append(f"{node.lineno}: {names[0]}")
        elif isinstance(node, ast.Name) and node.id.startswith("GLOBAL_CALLBACK"):
            found.append(f"{node.lineno}: {node.id}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if node.value.startswith("dash.") else []
        for name in names:
            parts = name.split(".")
            private = [p for p in parts[1:] if p.startswith("_") and not p.startswith("__")]
            if parts[0] in ("dash", "dash_table") and private:
                found.append(f"{node.lineno}: {name}")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def test_no_dash_private_name():
    offenders = [
        f"{_rel(path)}:{hit}" for path in _files() for hit in dash_private_names(path.read_text())
    ]
    assert not offenders, "private Dash names (use the public API):\n  " + "\n  ".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        "import dash._callback",
        "from dash._callback import GLOBAL_CALLBACK_MAP",
        "from dash.long_callback import _make_job_fn",
        "import dash\ndash._callback.GLOBAL_CALLBACK_LIST.clear()",
        "importlib.import_module('dash._pages')",
    ],
)
def test_dash_private_name_check_sees_each_kind_of_use(source):
    assert dash_private_names(source)
    assert not dash_private_names("import dash\nfrom dash import Input, callback\ndash.__version__")


# ---------------------------------------------------------------------------------------------
# config defaults


def restated_defaults(source: str, keys: set[str]) -> list[str]:
    """``line: call`` for ``getattr(<a config>, '<key>', default)``: a default said twice."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) == 3
            and _literal(node.args[1]) in keys
            and re.search(r"(^|[._])(cfg|config|exp_config)$", ast.unparse(node.args[0]))
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _config_keys() -> set[str]:
    from trainer.config import DEFAULTS, EXPERIMENT_DEFAULTS

    return {*DEFAULTS, *EXPERIMENT_DEFAULTS}


def test_config_defaults_are_written_only_in_the_config_module():
    keys = _config_keys()
    offenders = [
        f"{_rel(path)}:{hit}"
        for path in _files()
        if path != ROOT / "trainer" / "config.py"
        for hit in restated_defaults(path.read_text(), keys)
    ]
    assert not offenders, (
        "config defaults restated outside trainer/config.py (read cfg.<key>):\n  "
        + "\n  ".join(offenders)
    )


def test_restated_default_check_sees_getattr_with_a_fallback():
    keys = _config_keys()
    assert restated_defaults("x = getattr(self.exp_config, 'plot_on', True)", keys)
    assert restated_defaults("x = getattr(cfg, 'heartbeat_s', 2.0)", keys)
    assert not restated_defaults("x = getattr(self.model, 'patch_size', (1,))", keys)


# ---------------------------------------------------------------------------------------------
# launcher backends

LAUNCHER = ROOT / "app" / "launcher.py"


def backend_branches(source: str) -> list[str]:
    """``line: comparison`` for every comparison of a backend with a backend's name
    (``backend == 'slurm'``, ``'local' != run['backend']``, ``backend in ('slurm',)``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        backend = any(re.search(r"backend", ast.unparse(o)) for o in operands)
        named = any(
            _literal(o) is not None
            or (isinstance(o, ast.Tuple | ast.List | ast.Set) and any(map(_literal, o.elts)))
            for o in operands
        )
        if backend and named:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_backend_branch_in_the_launcher():
    offenders = backend_branches(LAUNCHER.read_text())
    assert not offenders, (
        "backend branches in app/launcher.py (move them into the backend classes):\n  "
        + "\n  ".join(offenders)
    )


def test_backend_branch_check_sees_comparisons_either_way_round():
    assert backend_branches("if self.backend == 'slurm':\n    pass")
    assert backend_branches("ok = 'local' != launch['backend']")
    assert backend_branches("if backend in ('slurm', 'local'):\n    pass")
    assert not backend_branches("self.backend.submit(run)")
    assert not backend_branches("ok = backend not in BACKENDS")
