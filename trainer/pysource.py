"""Parsing and compiling Python source from any thread.

CPython 3.11's AST conversion keeps one recursion counter per interpreter, not per thread: a
thread switch in the middle of it (a garbage collection running a finaliser is enough) while a
second thread parses too fails one of them with ``SystemError: AST constructor recursion
depth mismatch``. The dashboard reads configs' literal sections (sweep, Slurm) in callbacks that
run on several threads at once, so every parse of a config goes through one lock here.
"""

from __future__ import annotations

import ast
import threading
from types import CodeType

_PARSING = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(source, filename)``, one thread at a time."""
    with _PARSING:
        return ast.parse(source, filename=filename)


def compile_module(source: str, filename: str) -> CodeType:
    """``compile(source, filename, "exec")``, one thread at a time."""
    with _PARSING:
        return compile(source, filename, "exec")
