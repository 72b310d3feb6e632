"""Architecture checks anyone can run: an AST walk and an import graph of the project's modules.

Each check is one test whose failure lists every offender as ``file:line: what``:

* run-directory file names are spelt only inside ``trainer/runs/`` (string literals and path
  joins, docstrings left out: prose may name files);
* no import circle among the project's modules (imports anywhere in a file count: module level,
  inside functions, under ``TYPE_CHECKING``);
* no private name of Dash (``dash._callback``, ``from dash.x import _y``, Dash's global callback
  list);
* the trainer reads config keys as attributes: defaults are written in ``trainer/config_keys.py`` only;
* no ``backend ==`` branch in ``app/launcher.py`` or a page (backends are classes behind one
  interface);
* no module in ``app/`` or ``trainer/`` over 800 lines (split by concept);
* pages (``app/pages/``) get run-directory names only through view models, and start no process;
* a constant (an upper-case module-level name bound to a literal) is defined in one module only;
* no hidden package-level circle: importing ``a.b.c`` runs ``a/b/__init__.py`` first, so that
  package is an edge of the import graph too.

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
    r"\.vbh$",
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
    the package. Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so
    each enclosing package of a target is an edge too, unless it encloses the importer as well
    (then it is already being imported when the importer runs).
    """
    modules = set(sources)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, (source, is_package) in sources.items():
        own = set(_packages_of(module)) | ({module} if is_package else set())
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
                if t is None:
                    continue
                if t != module:
                    graph[module].setdefault(t, node.lineno)
                for m in _packages_of(t):
                    if m in modules and m not in own:
                        graph[module].setdefault(m, node.lineno)
    return graph


def _packages_of(module: str) -> list[str]:
    """The packages enclosing ``module``: ``a.b.c`` -> ``['a.b', 'a']``."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]


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


def test_import_circle_check_sees_a_circle_through_a_package_init():
    # pkg.a imports a module of pkg.sub, which runs pkg/sub/__init__.py, which imports pkg.a back
    sources = {
        "pkg": ("", True),
        "pkg.a": ("def f():\n    from pkg.sub.x import g\n", False),
        "pkg.sub": ("from pkg.sub.y import h\n", True),
        "pkg.sub.x": ("", False),
        "pkg.sub.y": ("from pkg.a import f\n", False),
    }
    assert import_cycles(import_graph(sources)) == [["pkg.a", "pkg.sub", "pkg.sub.y"]]
    # a package's own modules import its siblings freely: the package is already being imported
    sources["pkg.sub.y"] = ("from pkg.sub import x\n", False)
    assert import_cycles(import_graph(sources)) == []


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
    from trainer.config_keys import DEFAULTS, EXPERIMENT_DEFAULTS

    return {*DEFAULTS, *EXPERIMENT_DEFAULTS}


def test_config_defaults_are_written_only_in_the_config_module():
    keys = _config_keys()
    offenders = [
        f"{_rel(path)}:{hit}"
        for path in _files()
        if path != ROOT / "trainer" / "config_keys.py"
        for hit in restated_defaults(path.read_text(), keys)
    ]
    assert not offenders, (
        "config defaults restated outside trainer/config_keys.py (read cfg.<key>):\n  "
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


def test_no_backend_branch_in_a_page():
    offenders = [
        f"{_rel(path)}:{hit}"
        for path in sorted(PAGES.glob("*.py"))
        for hit in backend_branches(path.read_text())
    ]
    assert not offenders, (
        "backend branches in pages (ask the backend for its form fields):\n  "
        + "\n  ".join(offenders)
    )


# ---------------------------------------------------------------------------------------------
# module size

#: the most lines one module of app/ or trainer/ may have: past it, split by concept
MAX_MODULE_LINES = 800


def long_module(source: str, cap: int = MAX_MODULE_LINES) -> str | None:
    """``'N lines'`` when ``source`` has more than ``cap`` lines, else ``None``."""
    n = len(source.splitlines())
    return f"{n} lines" if n > cap else None


def test_no_module_over_the_line_cap():
    offenders = [
        f"{_rel(path)}: {hit}"
        for path in _files()
        if path.name != "run.py" or path.parent != ROOT
        if (hit := long_module(path.read_text())) is not None
    ]
    assert not offenders, (
        f"modules over {MAX_MODULE_LINES} lines (split each by concept):\n  "
        + "\n  ".join(offenders)
    )


def test_line_cap_check_counts_lines():
    assert long_module("x = 1\n" * (MAX_MODULE_LINES + 1)) == f"{MAX_MODULE_LINES + 1} lines"
    assert long_module("x = 1\n" * MAX_MODULE_LINES) is None


# ---------------------------------------------------------------------------------------------
# pages: layout and callback wiring only

PAGES = ROOT / "app" / "pages"


def _run_directory_names() -> set[str]:
    """Module-level names of ``trainer/runs/`` bound to a run-directory file or folder name."""
    names = set()
    for path in sorted(RUNS_PACKAGE.rglob("*.py")):
        for node in _parse(path).body:
            target = (
                node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            )
            value = _literal(getattr(node, "value", None))
            if isinstance(target, ast.Name) and value is not None:
                if _RUN_FILE.search(value) or value in RUN_FOLDERS:
                    names.add(target.id)
    return names


def run_directory_names_used(source: str, names: set[str]) -> list[str]:
    """``line: name`` for each of ``names`` that ``source`` imports from, or reads off,
    ``trainer.runs`` (``from trainer.runs import STATUS_FILE``, ``runs.HISTORY_DIR``)."""
    found = []
    aliases = set()  # local names of trainer.runs modules
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainer.runs"):
            found += [f"{node.lineno}: {a.name}" for a in node.names if a.name in names]
        if isinstance(node, ast.ImportFrom) and node.module in ("trainer", "trainer.runs"):
            aliases |= {a.asname or a.name for a in node.names}
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name.startswith("trainer.runs")}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            base = ast.unparse(node.value)
            if base in aliases or base.startswith("trainer.runs"):
                found.append(f"{node.lineno}: {base}.{node.attr}")
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def test_pages_get_run_directory_names_only_through_view_models():
    names = _run_directory_names()
    assert {"STATUS_FILE", "HISTORY_DIR"} <= names, "the run-directory names were not found"
    offenders = [
        f"{_rel(path)}:{hit}"
        for path in sorted(PAGES.glob("*.py"))
        for hit in run_directory_names_used(path.read_text(), names)
    ]
    assert not offenders, (
        "run-directory names in pages (ask a view model in app/):\n  " + "\n  ".join(offenders)
    )


@pytest.mark.parametrize(
    "source",
    [
        "from trainer.runs import STATUS_FILE",
        "from trainer.runs.sweeps import SWEEP_FILE as S",
        "from trainer import runs\np = d / runs.HISTORY_DIR",
        "import trainer.runs\np = trainer.runs.STATUS_FILE",
        "from trainer.runs import sweeps as sw\nx = sw.TRIALS_FILE",
    ],
)
def test_run_directory_name_check_sees_each_kind_of_use(source):
    names = {"STATUS_FILE", "HISTORY_DIR", "SWEEP_FILE", "TRIALS_FILE"}
    assert run_directory_names_used(source, names)
    clean = (
        "from trainer.runs import PreviewError\nfrom app import readers\nx = readers.STATUS_FILE"
    )
    assert not run_directory_names_used(clean, names)


#: modules a page must not use: starting and waiting on processes is the launcher's work
PROCESS_MODULES = ("subprocess", "multiprocessing", "multiprocess")


def process_work(source: str) -> list[str]:
    """``line: what`` for each process module ``source`` imports and each ``os.system`` call."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module or ""]
        else:
            mods = []
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.system", "os.popen"):
                found.append(f"{node.lineno}: {ast.unparse(node.func)}")
        found += [f"{node.lineno}: {m}" for m in mods if m.split(".")[0] in PROCESS_MODULES]
    return found


def test_pages_start_no_process():
    offenders = [
        f"{_rel(path)}:{hit}"
        for path in sorted(PAGES.glob("*.py"))
        for hit in process_work(path.read_text())
    ]
    assert not offenders, "process work in pages (go through app.launcher):\n  " + "\n  ".join(
        offenders
    )


def test_process_check_sees_imports_and_shell_calls():
    assert process_work("import subprocess")
    assert process_work("from multiprocessing import Process")
    assert process_work("import os\nos.system('run.py sweep x')")
    assert not process_work("import os\nos.path.join('a', 'b')")


# ---------------------------------------------------------------------------------------------
# one source per default


def literal_constants(source: str) -> dict[str, tuple[int, object]]:
    """``{NAME: (line, value)}`` for each upper-case module-level name bound to a literal (a
    number, string, or a tuple/list/set/dict of them): a default or a limit."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        if not (isinstance(target, ast.Name) and re.fullmatch(r"[A-Z][A-Z0-9_]*", target.id)):
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue  # a name bound to another module's value, or computed: not a restatement
        out[target.id] = (node.lineno, value)
    return out


def restated_constants(sources: dict[str, str]) -> dict[str, list[str]]:
    """``{NAME: ['module:line', ...]}`` for names bound to the same literal in more than one
    module (one page's ``PAGE = '/run'`` beside another's ``PAGE = '/sweep'`` is no copy)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for module, source in sorted(sources.items()):
        for name, (line, value) in literal_constants(source).items():
            seen.setdefault((name, repr(value)), []).append(f"{module}:{line}")
    return {name: where for (name, _), where in seen.items() if len(where) > 1}


def test_each_constant_is_defined_in_one_module():
    sources = {_rel(p): p.read_text() for p in _files()}
    restated = restated_constants(sources)
    assert not restated, (
        "constants defined in more than one module (import them from one):\n  "
        + "\n  ".join(f"{name}: {', '.join(where)}" for name, where in sorted(restated.items()))
    )


def test_restated_constant_check_sees_a_copied_limit():
    sources = {
        "a.py": "MAX_PARALLEL = 4\nDEFAULTS = {'n': 8}\n",
        "b.py": "from a import DEFAULTS\nMAX_PARALLEL: int = 4\nLOCAL = DEFAULTS['n']\n",
    }
    assert restated_constants(sources) == {"MAX_PARALLEL": ["a.py:1", "b.py:2"]}
    sources["b.py"] = "PAGE = '/b'\nMAX_PARALLEL = 2\n"
    sources["a.py"] += "PAGE = '/a'\n"
    assert restated_constants(sources) == {}


#: the one module that names a hyper-parameter both ways (ELEKTRONN2's ``wd``, torch's
#: ``weight_decay``); every other module translates through it
HYPER_NAMES = ROOT / "trainer" / "hyperparams.py"


def alias_tables(source: str) -> list[str]:
    """``line: literal`` for each dict, tuple, list or set literal holding both names of one
    hyper-parameter (``{'wd': 'weight_decay'}``, ``('wd', 'weight_decay')``): an alias table."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            items = [*node.keys, *node.values]
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = node.elts
        else:
            continue
        if {"wd", "weight_decay"} <= {_literal(i) for i in items if i is not None}:
            found.append(f"{node.lineno}: {ast.unparse(node)[:60]}")
    return found


def test_hyper_parameter_names_are_mapped_in_one_module():
    offenders = [
        f"{_rel(path)}:{hit}"
        for path in _files()
        if path != HYPER_NAMES
        for hit in alias_tables(path.read_text())
    ]
    assert alias_tables(HYPER_NAMES.read_text()), "trainer/hyperparams.py lost its table"
    assert not offenders, (
        "hyper-parameter alias tables outside trainer/hyperparams.py (translate through it):\n  "
        + "\n  ".join(offenders)
    )


@pytest.mark.parametrize(
    "source",
    [
        "ALIASES = {'mom': 'momentum', 'wd': 'weight_decay'}",
        "_G = {'weight_decay': 'wd', 'mom': 'momentum'}",
        "if name in ('lr', 'mom', 'momentum', 'wd', 'weight_decay'):\n    pass",
        "def f(p):\n    aliases = {'wd': 'weight_decay'}\n    return aliases",
    ],
)
def test_alias_table_check_sees_each_kind_of_table(source):
    assert alias_tables(source)
    assert not alias_tables("LABELS = {'lr': 'learning rate', 'mom': 'momentum', 'wd': 'decay'}")


# ---------------------------------------------------------------------------------------------
# pages: shared pieces live in app/components.py, once


def duplicated_helpers(sources: dict[str, str]) -> list[str]:
    """``'name: a.py, b.py'`` for each function (nested ones too) whose arguments and body
    are the same in two or more of ``sources`` (module name -> source): a helper copied
    between pages instead of shared through ``app.components``."""
    where: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                shape = ast.dump(ast.Module(body=node.body, type_ignores=[])) + ast.dump(node.args)
                where.setdefault(shape, [])
                if module not in where[shape]:
                    where[shape].append(module)
                names[shape] = node.name
    return [f"{names[s]}: {', '.join(m)}" for s, m in where.items() if len(m) > 1]


def test_no_helper_is_copied_between_pages():
    sources = {path.name: path.read_text() for path in sorted(PAGES.glob("*.py"))}
    offenders = duplicated_helpers(sources)
    assert not offenders, (
        "helpers defined in more than one page (move each to app/components.py):\n  "
        + "\n  ".join(offenders)
    )


def test_copied_helper_check_sees_a_nested_copy_under_another_name():
    helper = "def {}(id_, p):\n    return Input(id=id_, placeholder=p)\n"
    a = "def form():\n    " + helper.format("text").replace("\n    ", "\n        ")
    assert duplicated_helpers({"a.py": a, "b.py": helper.format("box")}) == ["box: a.py, b.py"]
    assert not duplicated_helpers({"a.py": a, "b.py": "def box(id_, p):\n    return id_\n"})
